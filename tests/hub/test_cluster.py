"""The hub across processes: a real redis-server, ``takeover serve`` and gunicorn with two gthread workers.

(And once, two of gunicorn's gevent workers, ``takeover.gunicorn.Worker``, beside them.)

Three server processes run tests/hub/app.py on one Redis: one under gevent
(``takeover serve``: the hub in its gevent hub) and two gunicorn gthread workers
(the hub in takeover's I/O loop thread, the WebSockets handed over to it).
The destructive checks (a killed worker) come last.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from takeover import publish
from tests.hub.cluster import (
    AppServer,
    HubClient,
    clients_on_every_worker,
    eventually,
    gunicorn,
    takeover_serve,
)
from tests.redis_server import RedisServer

SETTINGS = {"HUB_HISTORY": "50", "HUB_PRESENCE_TTL": "2", "HUB_CHECK": "0.5"}


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer) -> Iterator[tuple[AppServer, AppServer]]:
    serve = takeover_serve(redis_server.url, **SETTINGS)
    workers = gunicorn(redis_server.url, workers=2, **SETTINGS)
    yield serve, workers
    serve.stop()
    workers.stop()


def three_processes(servers: tuple[AppServer, AppServer], room: str) -> list[HubClient]:
    serve, workers = servers
    clients = [serve.client(room, "s0"), *clients_on_every_worker(workers, room, 2, "g")]
    assert len({c.pid for c in clients}) == 3
    return clients


def test_every_member_in_every_process_gets_each_message_once_in_order(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer
) -> None:
    serve, workers = servers
    clients = three_processes(servers, "order")
    sent: list[str | bytes] = []
    for n in range(60):
        data: str | bytes = f"m{n}" if n % 3 else bytes([n, 0xFF])
        if n % 4 == 3:  # from a plain process: redis-py, no gevent
            assert publish(redis_server.url, "order", data, history=50).remote
        else:
            assert (serve if n % 2 else workers).publish("order", data)["remote"]
        sent.append(data)
    for client in clients:
        assert client.receive(60) == sent  # none lost, none doubled, in publish order
    for client in clients:
        client.close()


def test_offsets_increase_by_one_and_history_is_shared(servers: tuple[AppServer, AppServer]) -> None:
    serve, workers = servers
    offsets = [(serve if n % 2 else workers).publish("offsets", f"o{n}")["offset"] for n in range(10)]
    assert offsets == list(range(offsets[0], offsets[0] + 10))
    assert workers.get("/history?room=offsets") == [[o, f"o{n}"] for n, o in enumerate(offsets)]
    retained = [[o, f"o{n}"] for n, o in enumerate(offsets)]
    assert serve.get(f"/history?room=offsets&since={offsets[6]}") == retained[7:]


def test_presence_is_every_process_members_and_a_leave_is_seen_everywhere_within_a_second(
    servers: tuple[AppServer, AppServer]
) -> None:
    serve, workers = servers
    clients = three_processes(servers, "presence")
    names = sorted(["s0"] + [f"g{n}" for n in range(len(clients) - 1)])
    assert serve.get("/presence?room=presence") == names
    assert workers.get("/presence?room=presence") == names
    leaving = clients.pop(0)  # the takeover serve member
    leaving.close()
    rest = [name for name in names if name != "s0"]
    eventually(lambda: serve.get("/presence?room=presence") == rest or None, timeout=1.0)
    eventually(lambda: workers.get("/presence?room=presence") == rest or None, timeout=1.0)
    for client in clients:
        client.close()
    eventually(lambda: workers.get("/presence?room=presence") == [] or None, timeout=1.0)


def test_since_replays_exactly_what_was_missed_then_live(servers: tuple[AppServer, AppServer]) -> None:
    serve, workers = servers
    first = serve.client("since", "a")
    seen = [serve.publish("since", f"before{n}")["offset"] for n in range(5)]
    assert first.receive(5) == [f"before{n}" for n in range(5)]
    first.close()
    for n in range(7):
        workers.publish("since", f"missed{n}")
    back = workers.client("since", "a", since=seen[-1])  # another process than the one it left
    assert back.joined
    assert back.replayed == [f"missed{n}" for n in range(7)]
    serve.publish("since", "live")
    assert back.receive(1) == ["live"]
    up_to_date = serve.client("since", "b", since=seen[-1] + 8)  # nothing missed: nothing replayed
    assert up_to_date.joined and up_to_date.replayed == []
    back.close()
    up_to_date.close()


def test_since_is_false_once_trimmed_and_replays_nothing(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer
) -> None:
    serve, _ = servers
    first = publish(redis_server.url, "trimmed", "first", history=50).offset
    assert first is not None
    for n in range(400):  # MAXLEN ~50 trims whole stream nodes: 400 is well past them
        publish(redis_server.url, "trimmed", f"n{n}", history=50)
    client = serve.client("trimmed", "late", since=first)
    assert not client.joined
    assert client.replayed == []
    client.close()


def test_since_is_false_after_redis_loses_its_data(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer
) -> None:
    import redis

    serve, workers = servers
    old = serve.publish("epoch", "old")["offset"]
    redis.Redis.from_url(redis_server.url).flushall()  # as a restart without persistence does
    new = workers.publish("epoch", "new")["offset"]
    assert new > old + 1  # a new epoch: its offsets start above every earlier one
    client = workers.client("epoch", "c", since=old)
    assert not client.joined and client.replayed == []
    client.close()


def test_join_leave_and_rooms_from_a_listener(servers: tuple[AppServer, AppServer]) -> None:
    _, workers = servers
    for server in servers:
        client = server.client("lobby", "x")
        assert client.command(rooms=None) == ["lobby"]
        assert client.command(join="side") == ["lobby", "side"]
        workers.publish("side", "to the side")
        assert client.receive(1) == ["to the side"]
        assert client.command(leave="lobby") == ["side"]
        client.close()


def test_gunicorn_gevent_workers_share_rooms_with_the_others(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer
) -> None:
    serve, workers = servers
    gevent_workers = gunicorn(redis_server.url, workers=2, worker_class="gevent", **SETTINGS)
    try:
        clients = three_processes(servers, "mixed") + clients_on_every_worker(gevent_workers, "mixed", 2, "e")
        assert len({c.pid for c in clients}) == 5
        sent = [f"x{n}" for n in range(20)]
        for n, data in enumerate(sent):
            assert (gevent_workers, serve, workers)[n % 3].publish("mixed", data)["remote"]
        for client in clients:
            assert client.receive(20) == sent
        assert len(gevent_workers.get("/presence?room=mixed")) == len(clients)
        for client in clients:
            client.close()
    finally:
        gevent_workers.stop()


def test_a_killed_worker_loses_its_members_after_presence_ttl(servers: tuple[AppServer, AppServer]) -> None:
    serve, workers = servers
    clients = clients_on_every_worker(workers, "killed", 2, "k")
    victim = clients[0].pid
    names_left = sorted(f"k{n}" for n, c in enumerate(clients) if c.pid != victim)
    os.kill(victim, signal.SIGKILL)  # no cleanup at all: only presence_ttl (2 s here) removes them
    assert len(serve.get("/presence?room=killed")) == len(clients)  # still there, within the TTL
    eventually(lambda: serve.get("/presence?room=killed") == names_left or None, timeout=2 * 2 + 2)
    for client in clients:
        if client.pid != victim:
            client.close()
