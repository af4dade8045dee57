"""Property-based tests of the sans-I/O core: any bytes, any split, never an exception.

The frame parser and the handshake validator take input from clients we do not
trust. Whatever they are given, in whatever pieces, they must end in an RFC
answer (events, a close code, an HTTP status) and never raise at the caller,
never report an internal error (1011 would mean a bug of ours), and never
depend on how the bytes were split.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from takeover.errors import HandshakeError
from takeover.protocol.connection import Close, Connection, Failure, Message, Ping, Pong, State
from takeover.protocol.handshake import validate_request
from tests.frames import client_frame

# CI runs the default profile; TAKEOVER_HYPOTHESIS_EXAMPLES raises it locally.
EXAMPLES = int(os.environ.get("TAKEOVER_HYPOTHESIS_EXAMPLES", "300"))
PROFILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RFC_CLOSE_CODES = {1002, 1007, 1009}


def feed(data: bytes, cuts: list[int], max_message_size: int | None = 4096) -> list[object]:
    """Feed ``data`` to a fresh connection in pieces cut at ``cuts``; return all events."""
    conn = Connection(max_message_size=max_message_size)
    events: list[object] = []
    start = 0
    for cut in [*sorted({min(max(cut, 0), len(data)) for cut in cuts}), len(data)]:
        events.extend(conn.receive_data(data[start:cut]))
        start = cut
    return events


def split_points(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(min_value=0, max_value=max(len(data), 0)), max_size=12)


class TestFrameParserOnArbitraryBytes:
    @PROFILE
    @given(st.data())
    def test_never_raises_and_never_fails_internally(self, data: st.DataObject) -> None:
        raw = data.draw(st.binary(max_size=600))
        events = feed(raw, data.draw(split_points(raw)))
        failures = [event for event in events if isinstance(event, Failure)]
        assert len(failures) <= 1
        if failures:
            assert failures[0].code in RFC_CLOSE_CODES, failures[0]
            assert events[-1] is failures[0], "nothing may follow a failure"

    @PROFILE
    @given(st.data())
    def test_events_do_not_depend_on_the_split(self, data: st.DataObject) -> None:
        raw = data.draw(st.binary(max_size=400))
        whole = feed(raw, [])
        pieces = feed(raw, data.draw(split_points(raw)))
        assert [_comparable(event) for event in pieces] == [_comparable(event) for event in whole]


def _comparable(event: object) -> object:
    # A failure's cause is an exception object; compare what the peer sees.
    if isinstance(event, Failure):
        return ("failure", event.code, event.reason)
    return event


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300))


@st.composite
def client_stream(draw: st.DrawFn) -> tuple[bytes, list[str | bytes]]:
    """Valid masked client frames: messages, some fragmented, with pings between."""
    frames: list[bytes] = []
    sent: list[str | bytes] = []
    for message in draw(st.lists(messages, max_size=8)):
        payload = message.encode() if isinstance(message, str) else message
        opcode = 0x1 if isinstance(message, str) else 0x2
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        mask = draw(st.binary(min_size=4, max_size=4))
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            frames.append(client_frame(opcode if index == 0 else 0x0, piece, fin=last, mask=mask))
            if not last and draw(st.booleans()):
                frames.append(client_frame(0x9, b"p", mask=mask))  # §5.4: control frames between fragments
        sent.append(message)
    return b"".join(frames), sent


class TestValidStreamsRoundTrip:
    @PROFILE
    @given(st.data())
    def test_every_message_arrives_whole_in_any_split(self, data: st.DataObject) -> None:
        raw, sent = data.draw(client_stream())
        events = feed(raw, data.draw(split_points(raw)), max_message_size=None)
        assert [event.data for event in events if isinstance(event, Message)] == sent
        assert all(isinstance(event, (Message, Ping)) for event in events)

    @PROFILE
    @given(st.data(), st.integers(min_value=1000, max_value=4999), st.text(max_size=40))
    def test_a_close_after_messages_ends_the_stream(
        self, data: st.DataObject, code: int, reason: str
    ) -> None:
        raw, sent = data.draw(client_stream())
        valid_code = code if code in (1000, 1001, 1002, 1003) or code >= 3000 else 1000
        reason_bytes = reason.encode()[:120].decode("utf-8", "ignore").encode()
        close = client_frame(0x8, valid_code.to_bytes(2, "big") + reason_bytes)
        conn = Connection(max_message_size=None)
        events = conn.receive_data(raw + close + client_frame(0x1, b"after the close"))
        assert [event.data for event in events if isinstance(event, Message)] == sent
        assert isinstance(events[-1], Close) and events[-1].code == valid_code
        assert conn.state is State.CLOSED


header_names = st.sampled_from(
    [
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Host",
        "upgrade",
        "CONNECTION",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        ["websocket", "Upgrade", "keep-alive, Upgrade", "13", "8", "dGhlIHNhbXBsZSBub25jZQ==", ""]
    ),
    st.text(max_size=40),
)


class TestHandshakeValidatorOnArbitraryInput:
    @PROFILE
    @given(
        st.sampled_from(["GET", "POST", "get", "CONNECT", "", "GET "]),
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1.1", "", "HTTP/x"]),
        st.lists(st.tuples(header_names, header_values), max_size=10),
    )
    def test_accepts_or_answers_with_an_rfc_status(
        self, method: str, version: str, headers: list[tuple[str, str]]
    ) -> None:
        try:
            handshake = validate_request(method, version, headers)
        except HandshakeError as error:
            assert error.status in (400, 405, 426)
            assert str(error)
        else:
            assert len(handshake.key) == 24


def test_pong_and_ping_events_are_reported() -> None:
    # A sanity check that the property tests' event types are the real ones.
    events = Connection().receive_data(client_frame(0x9, b"a") + client_frame(0xA, b"b"))
    assert events == [Ping(b"a"), Pong(b"b")]
