"""Offsets on the wire (issue 20): ``hub.join(ws, room, envelope=True)``.

In process, on ``memory://`` and on a real redis-server: the hub in takeover's I/O
loop, WebSockets on socket pairs (tests/hub/test_before_open.py's helpers), the
client end reading the frames as a page would.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from takeover import Hub
from takeover.hub._scripts import keys
from tests.clients import RawClient
from tests.hub.cluster import eventually
from tests.hub.test_before_open import open_it, pending_websocket
from tests.redis_server import RedisServer

TEXT = 0x1
_rooms = itertools.count()


@pytest.fixture(params=["memory", "redis"])
def hub(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Hub]:
    made = Hub("memory://" if request.param == "memory" else redis_server.url, history=10)
    made.presence("warm-up")  # the first use connects; publishes before that are local only
    eventually(lambda: made.healthy or None)
    yield made
    made.close()


def room_name() -> str:
    return f"env{next(_rooms)}"


def read_json(client: RawClient) -> Any:
    opcode, fin, payload = client.read_frame()
    assert (opcode, fin) == (TEXT, True), "an envelope is one text frame"
    return json.loads(payload)


def test_each_message_comes_with_its_room_and_offset(hub: Hub) -> None:
    room = room_name()
    wrapped, plain = pending_websocket(), pending_websocket()
    assert hub.join(wrapped, room, envelope=True) and hub.join(plain, room)
    wrapped_client, plain_client = open_it(wrapped), open_it(plain)
    text = hub.publish(room, "héllo")
    binary = hub.publish(room, b"\x00\xffbytes")
    assert text.offset is not None and binary.offset == text.offset + 1
    assert read_json(wrapped_client) == {"room": room, "offset": text.offset, "data": "héllo"}
    encoded = base64.b64encode(b"\x00\xffbytes").decode()
    expected = {"room": room, "offset": binary.offset, "data": encoded, "binary": True}
    assert read_json(wrapped_client) == expected
    # The members that did not ask for envelopes get the messages as they were published.
    assert plain_client.read_frame() == (TEXT, True, "héllo".encode())
    assert plain_client.read_frame() == (0x2, True, b"\x00\xffbytes")
    wrapped_client.close()
    plain_client.close()


def test_a_replay_with_since_carries_offsets_and_the_page_resumes_from_the_last(hub: Hub) -> None:
    room = room_name()
    offsets = [hub.publish(room, f"m{n}").offset for n in range(4)]
    ws = pending_websocket()
    assert hub.join(ws, room, since=offsets[1], envelope=True)
    client = open_it(ws)
    replayed = [read_json(client) for _ in range(2)]
    assert [(m["offset"], m["data"]) for m in replayed] == [(offsets[2], "m2"), (offsets[3], "m3")]
    live = hub.publish(room, "live").offset
    assert read_json(client) == {"room": room, "offset": live, "data": "live"}
    client.close()
    again = pending_websocket()  # the page reconnects with the last offset it saw: nothing twice
    assert hub.join(again, room, since=live, envelope=True)
    client = open_it(again)
    after = hub.publish(room, "after").offset
    assert read_json(client) == {"room": room, "offset": after, "data": "after"}
    client.close()


def test_a_room_without_history_has_null_offsets() -> None:
    hub = Hub("memory://", history=0)
    try:
        ws = pending_websocket()
        assert hub.join(ws, "nohistory", envelope=True)
        client = open_it(ws)
        hub.publish("nohistory", "x")
        assert read_json(client) == {"room": "nohistory", "offset": None, "data": "x"}
        client.close()
    finally:
        hub.close()


def test_a_loss_the_process_detects_reaches_envelope_members_as_a_gap(redis_server: RedisServer) -> None:
    """Offsets that never reach this process and are not in the stream: a gap, then what follows."""
    hub = Hub(redis_server.url, history=10)
    room = room_name()
    try:
        hub.presence("warm-up")
        eventually(lambda: hub.healthy or None)
        last = hub.publish(room, "before").offset
        assert last is not None
        wrapped, plain = pending_websocket(), pending_websocket()
        assert hub.join(wrapped, room, envelope=True) and hub.join(plain, room)
        wrapped_client, plain_client = open_it(wrapped), open_it(plain)
        # Offset last + 4 straight on the room's channel: last + 1 .. last + 3 exist nowhere.
        redis.Redis.from_url(redis_server.url).publish(keys("takeover", room)[2], f"t{last + 4} late")
        assert read_json(wrapped_client) == {"room": room, "gap": [last + 1, last + 3]}
        assert read_json(wrapped_client) == {"room": room, "offset": last + 4, "data": "late"}
        assert plain_client.read_frame() == (TEXT, True, b"late")  # no gap notice without envelopes
        wrapped_client.close()
        plain_client.close()
    finally:
        hub.close()


def test_publish_exclude_leaves_out_this_processs_sockets_only(hub: Hub) -> None:
    """``publish(room, data, exclude=ws)``: the sender does not get its own line back; the
    other members do, in the same order as everything else."""
    room = room_name()
    sender, other = pending_websocket(), pending_websocket()
    assert hub.join(sender, room) and hub.join(other, room)
    sender_client, other_client = open_it(sender), open_it(other)
    hub.publish(room, "from the sender", exclude=sender)
    hub.publish(room, "to both")
    hub.publish(room, b"neither", exclude=[sender, other])
    hub.publish(room, "last")
    assert [other_client.read_frame()[2] for _ in range(2)] == [b"from the sender", b"to both"]
    assert other_client.read_frame()[2] == b"last"
    assert [sender_client.read_frame()[2] for _ in range(2)] == [b"to both", b"last"]
    with pytest.raises(TypeError):
        hub.publish(room, "x", exclude=["not a websocket"])  # type: ignore[list-item]
    sender_client.close()
    other_client.close()


def test_an_excluded_message_read_back_from_the_stream_still_leaves_the_sender_out(
    redis_server: RedisServer,
) -> None:
    """After a loss the process reads its own message back from the stream, not the
    channel: the publisher's token is in the stream too."""
    hub = Hub(redis_server.url, history=10)
    room = room_name()
    try:
        hub.presence("warm-up")
        eventually(lambda: hub.healthy or None)
        sender, other = pending_websocket(), pending_websocket()
        assert hub.join(sender, room) and hub.join(other, room)
        sender_client, other_client = open_it(sender), open_it(other)
        broker: Any = hub._process.broker  # type: ignore[union-attr]
        channel = keys("takeover", room)[2].encode()
        handle = broker._handle

        def lose_own_lines(reply: Any) -> None:  # this process misses its own message on the channel
            if isinstance(reply, list) and reply[0] == b"message" and reply[1] == channel:
                if reply[2][:1].isupper():
                    return
            handle(reply)

        broker._handle = lose_own_lines
        hub.publish(room, "mine", exclude=sender)
        broker._handle = handle
        hub.publish(room, "next")  # the offset jump: "mine" is read back from the stream
        assert [other_client.read_frame()[2] for _ in range(2)] == [b"mine", b"next"]
        assert sender_client.read_frame()[2] == b"next"
        sender_client.close()
        other_client.close()
    finally:
        hub.close()
