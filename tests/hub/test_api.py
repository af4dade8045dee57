"""The hub's API in one process, the same tests on ``memory://`` and on Redis.

One ``takeover serve`` process runs tests/hub/app.py with each backend; a
real redis-server for the Redis one, a real Redis Cluster (3 masters) for the
cluster one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients import RawClient, handshake_request
from tests.hub.cluster import AppServer, eventually, takeover_serve
from tests.redis_server import RedisServer

CLOSE = 0x8
SETTINGS = {"HUB_HISTORY": "5", "HUB_CHECK": "0.5", "MAX_BUFFERED": str(1 << 20)}


@pytest.fixture(scope="module", params=["memory", "redis", "cluster"])
def server(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[AppServer]:
    url = "memory://" if request.param == "memory" else redis_server.url
    if request.param == "cluster":  # a Redis Cluster of 3 masters (issue 21)
        url = request.getfixturevalue("redis_cluster").url
    server = takeover_serve(url, **SETTINGS)
    if request.param != "memory":
        eventually(lambda: server.get("/healthy")["healthy"] or None)
    yield server
    server.stop()


def test_text_and_binary_reach_every_member_with_offsets_one_apart(server: AppServer) -> None:
    clients = [server.client("api", f"c{n}") for n in range(3)]
    results = [server.publish("api", data) for data in ("one", b"\x00\x01two", "three")]
    assert all(result["remote"] for result in results)
    first = results[0]["offset"]
    assert [result["offset"] for result in results] == [first, first + 1, first + 2]
    for client in clients:
        assert client.receive(3) == ["one", b"\x00\x01two", "three"]
        client.close()


def test_history_is_the_retained_messages_after_since_oldest_first(server: AppServer) -> None:
    offsets = [server.publish("kept", f"k{n}")["offset"] for n in range(8)]
    assert server.get("/history?room=kept") == [[o, f"k{n}"] for n, o in enumerate(offsets)][-5:]
    assert server.get(f"/history?room=kept&since={offsets[5]}") == [[offsets[6], "k6"], [offsets[7], "k7"]]
    assert server.get("/history?room=never-used") == []


def test_since_replays_exactly_once_then_goes_live(server: AppServer) -> None:
    offsets = [server.publish("catch", f"c{n}")["offset"] for n in range(4)]
    client = server.client("catch", "late", since=offsets[0])
    assert client.joined and client.replayed == ["c1", "c2", "c3"]
    server.publish("catch", "live")
    assert client.receive(1) == ["live"]
    up_to_date = server.client("catch", "now", since=offsets[-1] + 1)
    assert up_to_date.joined and up_to_date.replayed == []
    client.close()
    up_to_date.close()


@pytest.mark.parametrize("case", ["trimmed", "future", "unknown room"])
def test_since_is_false_and_replays_nothing_when_not_retained(server: AppServer, case: str) -> None:
    room = f"gone-{case.replace(' ', '-')}"
    first = server.publish(room, "first")["offset"]
    if case == "trimmed":
        for n in range(400):  # history=5; on Redis, MAXLEN ~ trims whole stream nodes: 400 is past them
            server.publish(room, f"n{n}")
        since = first
    elif case == "future":
        since = first + 10  # not an offset this room gave (another epoch's, or made up)
    else:
        room, since = "no-such-room", first
    client = server.client(room, "x", since=since)
    assert not client.joined and client.replayed == []
    server.publish(room, "live")
    assert client.receive(1) == ["live"]  # live messages all the same
    client.close()


def test_presence_shows_meta_and_a_closed_socket_leaves_within_a_second(server: AppServer) -> None:
    alice, bob = server.client("who", "alice"), server.client("who", "bob")
    assert server.get("/presence?room=who") == ["alice", "bob"]
    alice.close()
    eventually(lambda: server.get("/presence?room=who") == ["bob"] or None, timeout=1.0)
    bob.close()
    eventually(lambda: server.get("/presence?room=who") == [] or None, timeout=1.0)


def test_join_and_leave_from_a_listener_and_rooms(server: AppServer) -> None:
    client = server.client("first", "x")
    assert client.command(join="second") == ["first", "second"]
    assert client.command(leave="first") == ["second"]
    server.publish("first", "not for a member that left")
    server.publish("second", "for it")
    assert client.receive(1) == ["for it"]  # the earlier one never came
    assert client.command(join="second") == ["second"]  # joining twice: still one membership
    server.publish("second", "once")
    assert client.receive(1) == ["once"]
    client.close()


def test_a_member_that_does_not_read_is_closed_1008_and_the_others_get_everything(server: AppServer) -> None:
    reader = server.client("slow", "reader")
    stalled = RawClient(server.port, timeout=10)
    stalled.send(handshake_request("/ws?room=slow&name=stalled"))
    assert stalled.read_response()[0] == 101
    chunk = "x" * 65536
    for _ in range(200):  # 12.5 MiB to a client that reads nothing, over max_buffered_amount (1 MiB)
        server.publish("slow", chunk)
    assert reader.receive(200) == [chunk] * 200  # every message, for the member that reads
    code = None
    for _ in range(400):  # what the stalled one had buffered, then the close
        opcode, _, payload = stalled.read_frame()
        if opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big")
            break
    assert code == 1008
    stalled.close()
    reader.close()
