"""The hub on a real Redis Cluster (issue 21): sharded pub/sub, a migrated slot, a failover under traffic.

Debian's redis-server 7.0, joined with ``redis-cli --cluster create``
(tests/redis_cluster.py). ``takeover serve`` and gunicorn gthread (2 workers)
run tests/hub/app.py with ``redis+cluster://`` and two seed nodes. The hub's
API tests also run on a cluster (tests/hub/test_api.py's ``cluster`` case).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from tests.hub.cluster import (
    AppServer,
    HubClient,
    clients_on_every_worker,
    eventually,
    exchange,
    serve_and_gunicorn,
)
from tests.redis_cluster import HOST, RedisCluster, redis_cli

SETTINGS = {"HUB_HISTORY": "500", "HUB_CHECK": "0.5", "HUB_PRESENCE_TTL": "5"}
COUNT = 120  # messages published under traffic


def slot_of(room: str) -> int:
    return int(key_slot(f"takeover:meta:{{{room}}}".encode()))


def room_in(prefix: str, ranges: list[tuple[int, int]], exact: int | None = None) -> str:
    """A room name whose slot is in ``ranges`` (or is ``exact``)."""
    for n in range(500_000):
        room = f"{prefix}-{n}"
        slot = slot_of(room)
        if exact is not None and slot == exact:
            return room
        if exact is None and any(start <= slot <= end for start, end in ranges):
            return room
    raise AssertionError("no such room name")


def apps(url: str) -> contextlib.AbstractContextManager[tuple[AppServer, AppServer]]:
    return serve_and_gunicorn(url, url, **SETTINGS)


class Publisher:
    """Publishes m0, m1, ... through ``app`` from a thread; remembers what Redis took (``remote``)."""

    def __init__(self, app: AppServer, room: str) -> None:
        self.app, self.room = app, room
        self.remote: list[str] = []
        self.local: list[str] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for n in range(COUNT):
                data = f"m{n}"
                (self.remote if self.app.publish(self.room, data)["remote"] else self.local).append(data)
                self.done.wait(0.02)  # the pace of the traffic, not a synchronisation
        finally:
            self.done.set()

    def wait(self) -> None:
        assert self.done.wait(60), "the publisher did not finish"
        self.thread.join(10)


def until(member: HubClient, last: str, limit: int = 10 * COUNT) -> list[str | bytes]:
    """What ``member`` receives up to and including ``last``."""
    got: list[str | bytes] = []
    for _ in range(limit):
        (message,) = member.receive(1)
        got.append(message)
        if message == last:
            return got
    raise AssertionError(f"no {last!r} in {limit} messages")


@pytest.fixture(scope="module")
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    return redis_cluster  # 3 masters (tests/hub/conftest.py)


@pytest.fixture(scope="module")
def servers(cluster: RedisCluster) -> Iterator[tuple[AppServer, AppServer]]:
    with apps(cluster.url) as both:
        yield both


def test_each_room_lives_on_the_master_of_its_slot_and_reaches_every_member(
    cluster: RedisCluster, servers: tuple[AppServer, AppServer]
) -> None:
    import redis

    serve, workers = servers
    masters = cluster.masters()
    assert len(masters) == 3
    for node, ranges in masters.values():
        room = room_in(f"on-{node.port}", ranges)
        for app in (serve, workers):
            assert app.get(f"/shard?room={room}") == f"redis {HOST}:{node.port}/0"
        members, results = exchange(serve, workers, room)
        late = workers.client(room, "late", since=results[2]["offset"])
        assert late.joined and late.replayed == ["m3", "m4", "m5"]
        names = sorted(["s", "late", *(f"g{n}" for n in range(len(members) - 1))])
        for app in (serve, workers):
            eventually(lambda app=app, room=room, names=names: app.get(f"/presence?room={room}") == names)
        for member in (*members, late):
            member.close()
        client = redis.Redis(host=HOST, port=node.port)
        try:  # the room's keys are on that master (a key of another node's slot would be MOVED)
            assert client.exists(f"takeover:meta:{{{room}}}", f"takeover:log:{{{room}}}") == 2
        finally:
            client.close()


def test_a_slot_migrated_under_traffic(cluster: RedisCluster, servers: tuple[AppServer, AppServer]) -> None:
    """``redis-cli --cluster reshard`` moves the room's slot while messages flow: none lost or doubled."""
    serve, workers = servers
    masters = cluster.masters()
    (source_id, (source, ranges)), (target_id, (target, _)) = list(masters.items())[:2]
    first_slot = min(start for start, _ in ranges)  # reshard moves the source's lowest slots first
    room = room_in("moving", [], exact=first_slot)
    members = [serve.client(room, "s"), *clients_on_every_worker(workers, room, 2, "g")]
    publisher = Publisher(workers, room)
    eventually(lambda: len(publisher.remote) >= COUNT // 3 or None)
    redis_cli(
        "--cluster", "reshard", f"{HOST}:{source.port}", "--cluster-from", source_id,
        "--cluster-to", target_id, "--cluster-slots", "1", "--cluster-yes",
    )
    publisher.wait()
    assert cluster.master_of(first_slot)[0] == target_id
    assert publisher.local == [], workers.out.output[-3000:]  # the cluster took every message
    for member in members:
        assert member.receive(COUNT) == [f"m{n}" for n in range(COUNT)]
        member.close()
    for app in (serve, workers):
        eventually(lambda app=app: app.get(f"/shard?room={room}") == f"redis {HOST}:{target.port}/0")
    assert serve.get("/gaps") == [] and workers.get("/gaps") == []


def test_a_master_fails_over_under_traffic(tmp_path: Path) -> None:
    """3 masters with a replica each; the room's master is killed while messages flow. Each member
    gets every message the cluster took, once and in order, or the hub reports what it lost."""
    cluster = RedisCluster(tmp_path, masters=3, replicas=1)
    cluster.start()
    try:
        with apps(cluster.url) as (serve, workers):
            master, ranges = next(iter(cluster.masters().values()))
            room = room_in("failover", ranges)
            members = [serve.client(room, "s"), serve.client(room, "t")]
            publisher = Publisher(workers, room)  # another process than the members'
            eventually(lambda: len(publisher.remote) >= COUNT // 4 or None)
            master.kill()
            publisher.wait()
            cluster.wait_ok()
            for app in (serve, workers):
                try:
                    eventually(lambda app=app: app.get("/healthy")["healthy"] or None, timeout=20)
                except AssertionError:
                    raise AssertionError(f"{app.get('/health')}\n{app.out.output[-3000:]}") from None
            assert workers.publish(room, "after")["remote"], "the room's slot has a master again"
            expected = [*publisher.remote, "after"]
            lost = {n for gap in serve.get("/gaps") for n in range(gap[1], gap[2] + 1)}
            for member in members:
                got = until(member, "after")
                # Once and in order: what came is what the cluster took, less what it lost and said so.
                assert len(got) == len(set(got)) and got == [m for m in expected if m in got]
                assert len(expected) - len(got) <= len(lost), (expected, got, lost)
                member.close()
    finally:
        cluster.kill()


def test_make_demo_cluster_runs_the_chat_on_a_redis_cluster(tmp_path: Path) -> None:
    """``make demo-cluster REDIS_CLUSTER=1``: the chat on gunicorn and takeover serve, one Redis Cluster."""
    from websockets.sync.client import connect

    from examples.chat import cluster as demo
    from tests.chat_protocol import expect, join, said, say, unique
    from tests.processes import free_port
    from tests.redis_cluster import node_port

    first = node_port(3)  # three ports in a row, each with its cluster bus port free
    with demo.Cluster(tmp_path) as started:
        started.start(first, free_port(), free_port(), workers=2, redis_cluster=True)
        assert started.hub.startswith("redis+cluster://")
        urls = [f"ws://{HOST}:{started.servers[name].port}/ws" for name in ("gunicorn", "serve")]
        with connect(urls[0], open_timeout=10) as alice, connect(urls[1], open_timeout=10) as bob:
            join(alice, unique("alice"))
            join(bob, unique("bob"))
            text = unique("across the cluster")
            say(alice, text)

            def arrived(message: dict[str, Any]) -> bool:
                # Live, with its offset; or in a history the server sent again because the
                # message came between a page's first history and its join (an empty room).
                if message["type"] == "history":
                    return any(item["text"] == text for item in message["messages"])
                return bool(said(text)(message)) and isinstance(message["offset"], int)

            for name, ws in (("alice (gunicorn)", alice), ("bob (takeover serve)", bob)):
                try:
                    expect(ws, arrived)
                except AssertionError as error:
                    servers = started.servers.values()
                    outputs = "\n".join(f"--- {c.label}\n{c.output[-2500:]}" for c in servers)
                    raise AssertionError(f"{name}: {error}\n{outputs}") from None



def test_takeover_publish_to_a_redis_cluster(
    cluster: RedisCluster, servers: tuple[AppServer, AppServer]
) -> None:
    """From any process, with redis-py's own cluster client: the room's master, the hubs' offsets."""
    from takeover import publish

    serve, _ = servers
    for node, ranges in cluster.masters().values():
        room = room_in(f"pub-{node.port}", ranges)
        member = serve.client(room, "m")
        offsets = [publish(cluster.url, room, f"p{n}", history=500).offset for n in range(3)]
        assert offsets[0] is not None and offsets == [offsets[0], offsets[0] + 1, offsets[0] + 2]
        assert member.receive(3) == ["p0", "p1", "p2"]
        assert serve.get(f"/history?room={room}") == [[o, f"p{n}"] for n, o in enumerate(offsets)]
        member.close()


def test_a_tls_cluster_with_a_password(tmp_path: Path) -> None:
    """``rediss+cluster://:PASSWORD@HOST:PORT?ssl_ca_certs=F``: TLS only (tls-cluster), a password."""
    import ssl

    from takeover import Hub
    from tests.certs import make_certs

    ca_file, cert_file, key_file = make_certs(tmp_path)
    tls_args = (
        "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no",
        "--requirepass", "s3cret", "--masterauth", "s3cret",
    )
    secure = RedisCluster(
        tmp_path, masters=3, tls=ssl.create_default_context(cafile=str(ca_file)), tls_args=tls_args,
        cli_args=("--tls", "--cacert", str(ca_file), "-a", "s3cret", "--no-auth-warning"),
    )
    secure.start()
    seeds = ",".join(f"{HOST}:{node.port}" for node in secure.nodes[:2])
    url = f"rediss+cluster://:s3cret@{seeds}?ssl_ca_certs={ca_file}"
    hub = Hub(url, history=10, health_check_interval=0.5)
    try:
        eventually(lambda: hub.healthy or None)
        assert len(hub.health()) == 3 and all(hub.health().values())
        for node, ranges in secure.masters().values():
            room = room_in(f"tls-{node.port}", ranges)
            assert hub.shard(room) == f"rediss {HOST}:{node.port}/0"
            first = hub.publish(room, "one")
            assert first.remote and hub.publish(room, "two").offset == first.offset + 1  # type: ignore[operator]
            assert [m.data for m in hub.history(room)] == ["one", "two"]
    finally:
        hub.close()
        secure.kill()


def test_a_slot_half_migrated_is_followed_with_asking(cluster: RedisCluster) -> None:
    """The room's keys moved to the importing node while its slot is still migrating: the old owner
    answers ASK, and the hub makes the call there, after ASKING (then, once done, MOVED)."""
    from takeover import Hub

    masters = list(cluster.masters().items())
    (source_id, (source, ranges)), (target_id, (target, _)) = masters[0], masters[1]
    room = room_in("asking", ranges)
    slot = str(slot_of(room))
    hub = Hub(cluster.url, history=50, health_check_interval=0.5)
    try:
        eventually(lambda: hub.healthy or None)
        first = hub.publish(room, "before")
        assert first.remote
        cluster.info(target, "cluster", "setslot", slot, "importing", source_id)
        cluster.info(source, "cluster", "setslot", slot, "migrating", target_id)
        moving = cluster.info(source, "cluster", "getkeysinslot", slot, "100").split()
        assert len(moving) >= 2  # the room's meta hash and stream
        cluster.info(source, "migrate", HOST, str(target.port), "", "0", "5000", "keys", *moving)
        during = hub.publish(room, "during")  # the source answers ASK: made on the target
        assert during.remote and during.offset == first.offset + 1  # type: ignore[operator]
        assert [m.data for m in hub.history(room)] == ["before", "during"]
        for node in (source, target, *(server for _, (server, _) in masters[2:])):
            cluster.info(node, "cluster", "setslot", slot, "node", target_id)
        after = hub.publish(room, "after")  # MOVED from the source: the map is read again
        assert after.offset == first.offset + 2  # type: ignore[operator]
        assert hub.shard(room) == f"redis {HOST}:{target.port}/0"
    finally:
        hub.close()
