"""examples/chat's bad-input rules, through takeover.testing: the chat's route in process, real frames.

Moved from tests/servers/test_chat.py (which keeps what needs the real
server: the page, the room's flow, reconnecting, SIGTERM): every case checks
what the offender gets (an ``error`` message or a close code) and that the rest
of the room still works afterwards. The room is the app's own, shared by the
tests, so names are unique.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from examples.chat.app import app
from takeover import ConnectionClosed
from takeover.testing import TestWebSocket, connect
from tests.chat_protocol import (
    WAIT,
    assert_room_alive,
    client,
    closed_with,
    expect,
    expect_type,
    join,
    joined,
    receive,
    said,
    say,
    send,
    unique,
)


class _InProcess:
    """The chat's app in this process: each client is a takeover.testing connection."""

    def client(self) -> contextlib.AbstractContextManager[TestWebSocket]:
        return connect(app, "/ws", timeout=WAIT)


@pytest.fixture
def chat() -> _InProcess:
    return _InProcess()


# -- bad input: refused with an error message, the connection and the room go on ----

NOT_JOINED = [
    ("not json", "invalid JSON"),
    ('{"type": "message", "text": "unterminated', "invalid JSON"),
    ("[" * 6000 + "]" * 6000, "invalid JSON"),  # nested too deep for the parser: not a crash
    ("[1, 2]", "a message must be a JSON object"),
    ('"join"', "a message must be a JSON object"),
    ("{}", 'missing "type"'),
    ('{"type": 7}', '"type" must be a string'),
    ('{"type": "dance"}', "unknown type: dance"),
    ('{"type": "join"}', 'missing "name"'),
    ('{"type": "join", "name": 5}', '"name" must be a string'),
    ('{"type": "join", "name": ["a"]}', '"name" must be a string'),
    ('{"type": "join", "name": "   "}', '"name" is empty'),
    (json.dumps({"type": "join", "name": "x" * 33}), '"name" is too long: at most 32 characters'),
    ('{"type": "join", "name": "a\\nb"}', '"name" must be printable characters'),
    ('{"type": "join", "name": "\\ud800"}', '"name" is not valid Unicode'),
    ('{"type": "message", "text": "hi"}', "join first"),
    ('{"type": "typing"}', "join first"),
    ('{"type": "sync"}', "join first"),
    *[
        (f'{{"type": "join", "name": "a", "since": {since}}}', '"since" must be an offset: an integer >= 0')
        for since in ("-1", "1.5", '"12"', "true", str(2**53))
    ],
]

JOINED = [
    ('{"type": "message"}', 'missing "text"'),
    ('{"type": "message", "text": null}', 'missing "text"'),
    ('{"type": "message", "text": 42}', '"text" must be a string'),
    ('{"type": "message", "text": " \\n "}', '"text" is empty'),
    (json.dumps({"type": "message", "text": "x" * 2001}), '"text" is too long: at most 2000 characters'),
    ('{"type": "message", "text": "a\\ud83d"}', '"text" is not valid Unicode'),
    ('{"type": "join", "name": "again"}', "already joined as "),
]


@pytest.mark.parametrize(("payload", "error"), NOT_JOINED, ids=[e for _, e in NOT_JOINED])
def test_bad_input_before_join_is_an_error_message(chat: _InProcess, payload: str, error: str) -> None:
    with joined(chat, unique("bystander")) as bystander, client(chat) as offender:
        offender.send(payload)
        assert receive(offender) == {"type": "error", "error": error}
        join(offender, unique("reformed"))  # the connection is still usable
        assert_room_alive(chat, bystander)


@pytest.mark.parametrize(("payload", "error"), JOINED, ids=[e for _, e in JOINED])
def test_bad_input_after_join_is_an_error_message(chat: _InProcess, payload: str, error: str) -> None:
    with joined(chat, unique("bystander")) as bystander, joined(chat, unique("offender")) as offender:
        offender.send(payload)
        message = expect(offender, lambda m: m["type"] == "error")
        assert message["error"].startswith(error), message
        text = unique("reformed")
        say(offender, text)  # the connection is still usable
        expect(bystander, said(text))
        assert_room_alive(chat, bystander)


def test_no_bad_text_reaches_the_history(chat: _InProcess) -> None:
    with joined(chat, unique("offender")) as offender:
        offender.send('{"type": "message", "text": "\\udfff"}')
        assert expect_type(offender, "error")["error"] == '"text" is not valid Unicode'
    with client(chat) as ws:
        history = join(ws, unique("reader"))  # would fail if a lone surrogate were in the history
    assert all("\udfff" not in message["text"] for message in history)


def test_five_invalid_messages_in_a_row_close_with_1008(chat: _InProcess) -> None:
    with joined(chat, unique("bystander")) as bystander, client(chat) as offender:
        for _ in range(5):
            offender.send("{nope")
        code, reason, before = closed_with(offender)
        assert (code, reason) == (1008, "too many invalid messages")
        assert before == [{"type": "error", "error": "invalid JSON"}] * 5
        assert_room_alive(chat, bystander)


def test_a_valid_message_resets_the_invalid_count(chat: _InProcess) -> None:
    with client(chat) as ws:
        for _ in range(4):
            ws.send("{nope")
        assert [receive(ws)["type"] for _ in range(4)] == ["error"] * 4
        join(ws, unique("mixed"))  # the 5th message is valid: the count starts over
        for _ in range(4):
            ws.send("{nope")
        text = unique("still open")
        say(ws, text)
        received = [receive(ws)]
        while not said(text)(received[-1]):
            received.append(receive(ws))
        assert [message["type"] for message in received if message["type"] != "presence"] == [
            *["error"] * 4,
            "message",
        ]


def test_a_binary_message_closes_with_1003(chat: _InProcess) -> None:
    with joined(chat, unique("bystander")) as bystander, joined(chat, unique("offender")) as offender:
        offender.send(b'{"type": "message", "text": "binary"}')
        code, reason, _ = closed_with(offender)
        assert (code, reason) == (1003, "binary messages are not supported")
        assert_room_alive(chat, bystander)


def test_a_message_over_16_kib_closes_with_1009(chat: _InProcess) -> None:
    with joined(chat, unique("bystander")) as bystander, joined(chat, unique("offender")) as offender:
        say(offender, "x" * 16 * 1024)  # with the JSON around it: over 16384 bytes
        code, _, before = closed_with(offender)
        assert code == 1009
        assert all(message["type"] == "presence" for message in before)
        assert_room_alive(chat, bystander)


def test_a_flood_gets_one_error_then_a_1008_close(chat: _InProcess) -> None:
    with joined(chat, unique("bystander")) as bystander, joined(chat, unique("flooder")) as flooder:
        # The join took one token of 20: 19 are let through, the 20th message is
        # the first dropped, the 30th the 11th dropped: the close. Sent as fast as
        # possible, so few tokens come back meanwhile; 60 leaves a wide margin.
        for _ in range(60):
            try:
                send(flooder, {"type": "typing"})
            except ConnectionClosed:
                break
        code, reason, before = closed_with(flooder, timeout=10)
        assert (code, reason) == (1008, "too many messages")
        errors = [message for message in before if message["type"] == "error"]
        assert errors == [{"type": "error", "error": "too many messages: at most 20 every 5 seconds"}]
        assert_room_alive(chat, bystander)




def test_the_testing_guides_example() -> None:
    """docs/guides/testing.rst's "Testing the chat demo", as it is written there."""
    with connect(app, "/ws") as ada, connect(app, "/ws") as bob:
        for ws, name in ((ada, unique("ada")), (bob, unique("bob"))):
            ws.send(json.dumps({"type": "join", "name": name}))
            assert json.loads(ws.receive())["type"] == "history"
        ada.send(json.dumps({"type": "message", "text": "hi"}))
        said = next(m for m in (json.loads(bob.receive()) for _ in range(5)) if m.get("room") == "chat")
        assert json.loads(said["data"])["text"] == "hi"  # in the hub's envelope, after the presence lists
        bob.send(b"binary")
        with pytest.raises(ConnectionClosed):
            for _ in range(10):  # what was on its way, then the close
                bob.receive()
        assert bob.close_code == 1003
