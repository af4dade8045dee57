"""The hub's subscriber on a real Redis (issue 21): messages that wait for a process leave in one write
per member; a message that comes alone leaves at once, in a write of its own.

In this process: a Hub on a real redis-server and WebSockets over gevent socketpairs
(socket mode), every write of a session counted on its one send path. The publishes
come from ``takeover.publish`` (plain blocking redis-py, this process is not
monkey-patched): while they run, the loop that reads Redis's pushes cannot, so they
wait in its socket together, as they do for a worker that is behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
import redis
from gevent import monkey

import takeover
from takeover import Hub
from takeover._io.session import Session
from takeover.websocket import WebSocket
from tests.io.test_batch import count_writes, member, received
from tests.redis_server import RedisServer

ROOM = "batched"
Members = list[tuple[WebSocket, gevent.socket.socket]]


def frames(*texts: str) -> bytes:
    return b"".join(bytes([0x81, len(text)]) + text.encode() for text in texts)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[Session, list[int]]:
    """Each session's writes through its one send path: how many messages each carried."""
    return count_writes(monkeypatch, lambda data, messages: messages)


@pytest.fixture
def room(redis_server: RedisServer) -> Iterator[Members]:
    """Three live members of ROOM, through a Hub of this process on the real redis-server."""
    assert not monkey.is_module_patched("socket"), "takeover.publish must block this test's loop"
    hub = Hub(redis_server.url)
    members = [member() for _ in range(3)]
    for ws, _ in members:
        hub.join(ws, ROOM)
    with gevent.Timeout(10):
        while not hub.healthy:
            gevent.sleep(0.01)
    hub.publish(ROOM, "probe")  # every member is live once it has this
    for _, peer in members:
        assert received(peer, len(frames("probe"))) == frames("probe")
    yield members
    for ws, _ in members:
        ws.close()
    hub.close()


def test_messages_waiting_together_leave_in_one_write_per_member(
    room: Members, writes: dict[Session, list[int]], redis_server: RedisServer
) -> None:
    members = room
    writes.clear()
    texts = [f"m{n}" for n in range(5)]
    for text in texts:  # blocking: the loop reads none of them meanwhile
        assert takeover.publish(redis_server.url, ROOM, text).remote
    # Redis wrote the last push with the last answer, in the same turn of its loop; a later
    # command's answer means that turn is over, so all five wait in the subscriber's socket.
    assert redis.Redis.from_url(redis_server.url).ping()
    for ws, peer in members:
        assert received(peer, len(frames(*texts))) == frames(*texts)  # all five, in order
        assert writes[ws.session] == [5]  # in one write


def test_a_message_that_comes_alone_leaves_at_once(
    room: Members, writes: dict[Session, list[int]], redis_server: RedisServer
) -> None:
    members = room
    writes.clear()
    for text in ("a1", "a2"):
        assert takeover.publish(redis_server.url, ROOM, text).remote
        for _, peer in members:  # each delivered before the next is published: nothing held back
            assert received(peer, len(frames(text))) == frames(text)
    for ws, _ in members:
        assert writes[ws.session] == [1, 1]

