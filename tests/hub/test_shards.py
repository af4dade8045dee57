"""The hub on several Redis servers (issue 21): each room on one of them, by rendezvous hashing.

The map first, without servers: the list's order does not matter, rooms spread
over every server, adding or removing one moves only the rooms it wins or had,
and the hash is the documented one. Then three real redis-servers, with
``takeover serve`` and gunicorn gthread (2 workers) running tests/hub/app.py,
each given the servers in another order: every room's keys are on its own
server only, messages reach every member once and in order, ``since`` and
presence hold; one server killed takes only its rooms away, and
``hub.health()`` and the log say which.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from takeover import Hub, publish
from takeover.hub._resp import parse_url
from takeover.hub._shards import ShardMap
from tests.hub.cluster import AppServer, eventually, exchange, serve_and_gunicorn
from tests.redis_server import RedisServer

SETTINGS = {"HUB_HISTORY": "50", "HUB_CHECK": "0.5", "HUB_PRESENCE_TTL": "5"}


def addresses(count: int, first_port: int = 7000) -> list[str]:
    return [f"redis://10.0.0.{n + 1}:{first_port + n}/0" for n in range(count)]


def shard_of(urls: list[str], room: str) -> str:
    return urls[ShardMap([parse_url(url) for url in urls]).index(room)]


ROOMS = [f"room-{n}" for n in range(3000)]


# -- the map ----------------------------------------------------------------------


def test_the_order_of_the_list_does_not_matter() -> None:
    urls = addresses(4)
    expected = {room: shard_of(urls, room) for room in ROOMS[:500]}
    for order in itertools.islice(itertools.permutations(urls), 1, 24, 5):
        assert {room: shard_of(list(order), room) for room in ROOMS[:500]} == expected


def test_rooms_spread_over_every_server() -> None:
    urls = addresses(3)
    counts = {url: 0 for url in urls}
    for room in ROOMS:
        counts[shard_of(urls, room)] += 1
    assert all(800 <= count <= 1200 for count in counts.values()), counts


def test_adding_a_server_moves_only_the_rooms_it_wins() -> None:
    before, after = addresses(3), addresses(4)
    moved = [room for room in ROOMS if shard_of(before, room) != shard_of(after, room)]
    assert all(shard_of(after, room) == after[3] for room in moved)
    assert 0.18 * len(ROOMS) <= len(moved) <= 0.32 * len(ROOMS)  # about a quarter


def test_removing_a_server_moves_only_its_rooms() -> None:
    before = addresses(4)
    after = before[:1] + before[2:]
    for room in ROOMS:
        if shard_of(before, room) != before[1]:
            assert shard_of(after, room) == shard_of(before, room)


def test_the_hash_is_the_documented_one() -> None:
    """blake2b(SHARD + "\\n" + ROOM, digest_size=8), big-endian; SHARD is host:port/db."""
    urls = ["redis://a.example:6379/0", "rediss://b.example:6380/2", "unix:///run/redis.sock?db=1"]
    identities = ["a.example:6379/0", "b.example:6380/2", "/run/redis.sock/1"]
    for room in ("lobby", "chat/online", "é"):
        scores = [
            int.from_bytes(hashlib.blake2b(f"{i}\n{room}".encode(), digest_size=8).digest(), "big")
            for i in identities
        ]
        assert shard_of(urls, room) == urls[scores.index(max(scores))]
    # How a server is reached is not part of its name: a password, or TLS, moves no room.
    reached_otherwise = ["rediss://:secret@a.example:6379/0", *urls[1:]]
    for room in ROOMS[:200]:
        assert urls.index(shard_of(urls, room)) == reached_otherwise.index(shard_of(reached_otherwise, room))


def test_one_string_of_several_urls_is_their_list() -> None:
    urls = addresses(3)
    assert Hub(",".join(urls)).urls == Hub(urls).urls == tuple(urls)
    assert Hub(" , ".join(urls)).shard("lobby") == Hub(list(reversed(urls))).shard("lobby")
    assert Hub(Hub(urls).url).urls == tuple(urls)  # what hub.url shows reads back
    cluster = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert Hub(cluster).urls == (cluster,)  # a cluster's seed nodes are one URL
    with pytest.raises(ValueError, match="memory:// is one process's broker"):
        Hub(f"{urls[0]},memory://")


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        (["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379"], "the same Redis server twice"),
        (["redis://127.0.0.1:6379/0", "memory://"], "memory:// is one process's broker"),
        ([], "the list of Redis URLs is empty"),
        (["redis://127.0.0.1:6379/0", "http://x"], "a hub URL is memory://, redis://"),
    ],
)
def test_a_bad_list_is_refused_with_what_to_do(urls: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hub(urls)
    with pytest.raises(ValueError, match=message):
        publish(urls, "room", "data")


# -- three real servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    servers = [RedisServer(tmp_path_factory.mktemp(f"shard{n}")) for n in range(3)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.kill()


@pytest.fixture(scope="module")
def apps(shards: list[RedisServer]) -> Iterator[tuple[AppServer, AppServer]]:
    urls = [server.url for server in shards]
    # gunicorn gets the servers in another order: the same map.
    with serve_and_gunicorn(",".join(urls), ",".join(reversed(urls)), **SETTINGS) as both:
        yield both


def rooms_on_each(shards: list[RedisServer], per_server: int, prefix: str) -> dict[int, list[str]]:
    """``per_server`` room names that live on each server (the ports are random: found, not fixed)."""
    urls = [server.url for server in shards]
    found: dict[int, list[str]] = {n: [] for n in range(len(urls))}
    for n in range(10_000):
        room = f"{prefix}-{n}"
        index = urls.index(shard_of(urls, room))
        if len(found[index]) < per_server:
            found[index].append(room)
        if all(len(rooms) == per_server for rooms in found.values()):
            return found
    raise AssertionError("no rooms found for every server")


def keys_on(server: RedisServer, room: str) -> bool:
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        return bool(client.exists(f"takeover:meta:{room}", f"takeover:log:{room}"))
    finally:
        client.close()


def test_each_room_lives_on_its_server_and_reaches_every_member_once_in_order(
    shards: list[RedisServer], apps: tuple[AppServer, AppServer]
) -> None:
    serve, workers = apps
    for index, rooms in rooms_on_each(shards, 2, "deliver").items():
        for room in rooms:
            for app in (serve, workers):
                assert app.get(f"/shard?room={room}") == f"redis 127.0.0.1:{shards[index].port}/0"
            members, _ = exchange(serve, workers, room)
            for member in members:
                member.close()
            assert [keys_on(server, room) for server in shards] == [n == index for n in range(3)]


def test_since_presence_and_takeover_publish_on_every_server(
    shards: list[RedisServer], apps: tuple[AppServer, AppServer]
) -> None:
    serve, workers = apps
    urls = [server.url for server in shards]
    for rooms in rooms_on_each(shards, 1, "since").values():
        room = rooms[0]
        present = serve.client(room, "here")
        # The list, or the same URLs in one string separated by commas (as TAKEOVER_HUB gives them).
        targets = [list(reversed(urls)), ", ".join(urls)]
        offsets = [publish(targets[n % 2], room, f"p{n}", history=50).offset for n in range(4)]
        assert present.receive(4) == [f"p{n}" for n in range(4)]
        late = workers.client(room, "late", since=offsets[0])
        assert late.joined and late.replayed == ["p1", "p2", "p3"]
        for app in (serve, workers):
            eventually(lambda app=app, room=room: app.get(f"/presence?room={room}") == ["here", "late"])
        present.close()
        late.close()


def test_a_server_that_goes_away_takes_only_its_rooms(
    shards: list[RedisServer], apps: tuple[AppServer, AppServer]
) -> None:
    serve, workers = apps
    rooms = rooms_on_each(shards, 1, "away")
    away = shards[2]
    name = f"redis 127.0.0.1:{away.port}/0"
    follower = serve.client(rooms[2][0], "follower")  # follows the room that goes away
    before = [workers.publish(rooms[2][0], f"before{n}")["offset"] for n in range(2)]
    assert follower.receive(2) == ["before0", "before1"]
    away.kill()
    try:
        eventually(lambda: serve.get("/health")[name] is False or None, timeout=5)
        health = serve.get("/health")
        assert health == {f"redis 127.0.0.1:{s.port}/0": s is not away for s in shards}
        assert serve.get("/healthy")["healthy"] is False
        assert serve.out.wait_for(f"Redis at {name} cannot be reached", 5) is not None  # the log names it
        for index in (0, 1):  # the other servers' rooms still go from process to process
            room = rooms[index][0]
            member = serve.client(room, "still")
            assert workers.publish(room, "still here")["remote"]
            assert member.receive(1) == ["still here"]
            member.close()
        result = serve.publish(rooms[2][0], "lost")
        assert result["remote"] is False
    finally:
        away.start()  # empty: its rooms start a new epoch
    eventually(lambda: serve.get("/healthy")["healthy"] or None, timeout=10)
    room = rooms[2][0]
    member = serve.client(room, "back")
    eventually(lambda: workers.get("/healthy")["healthy"] or None, timeout=10)
    assert workers.publish(room, "back again")["remote"]
    assert member.receive(1) == ["back again"]
    # The server came back empty: what followed the follower's last offset is unknown, and said so.
    assert follower.receive(2) == ["lost", "back again"]  # "lost" reached this process's members only
    gaps = eventually(lambda: [gap for gap in serve.get("/gaps") if gap[0] == room] or None)
    assert gaps[0][1] == before[-1] + 1
    for other in (member, follower):
        other.close()


def test_hub_health_and_shard_in_process(tmp_path: Path) -> None:
    """The API itself: health() by address, shard(room) one of them, healthy all of them."""
    servers = [RedisServer(tmp_path / f"s{n}") for n in range(2)]
    for server in servers:
        server.directory.mkdir()
        server.start()
    hub = Hub([server.url for server in servers], health_check_interval=0.5)
    try:
        names = [f"redis 127.0.0.1:{server.port}/0" for server in servers]
        eventually(lambda: hub.healthy or None)
        assert hub.health() == {names[0]: True, names[1]: True}
        assert {hub.shard(room) for room in ROOMS[:50]} == set(names)
        urls = [server.url for server in servers]
        assert hub.shard("lobby") == names[urls.index(shard_of(urls, "lobby"))]
        assert "Hub redis://127.0.0.1" in repr(hub)
    finally:
        hub.close()
        for server in servers:
            server.kill()
