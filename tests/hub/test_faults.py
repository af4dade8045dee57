"""The hub when Redis goes away: restarted under traffic, a half-open connection, down at start.

Real redis-servers (restarted without persistence, so they come back empty) and
real server processes; the half-open connection is a proxy that stops
forwarding without closing anything (tests/hub/proxy.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from takeover import Hub, publish
from tests.hub.cluster import AppServer, clients_on_every_worker, eventually, gunicorn, takeover_serve
from tests.hub.proxy import FreezingProxy
from tests.processes import free_port
from tests.redis_server import RedisServer

CHECK = 0.5  # the servers' health check interval, seconds
SETTINGS = {"HUB_HISTORY": "50", "HUB_PRESENCE_TTL": "5", "HUB_CHECK": str(CHECK)}


def every_worker_says(server: AppServer, workers: int, healthy: bool) -> bool:
    """Whether each of ``workers`` gunicorn workers answers /healthy with ``healthy`` (20 tries at most)."""
    seen: dict[int, bool] = {}
    for _ in range(20):
        answer = server.get("/healthy")
        seen[answer["pid"]] = answer["healthy"]
        if len(seen) == workers:
            break
    return len(seen) == workers and all(value is healthy for value in seen.values())


def test_redis_restarted_under_traffic(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    serve = takeover_serve(redis_server.url, **SETTINGS)
    workers = gunicorn(redis_server.url, workers=2, **SETTINGS)
    try:
        local = serve.client("t", "s")
        remote = clients_on_every_worker(workers, "t", 2, "g")
        for n in range(10):
            assert serve.publish("t", f"before{n}")["remote"]
        for client in (local, *remote):
            assert client.receive(10) == [f"before{n}" for n in range(10)]

        redis_server.kill()
        eventually(lambda: serve.get("/healthy")["healthy"] is False or None, timeout=2 * CHECK + 1)
        eventually(lambda: every_worker_says(workers, 2, healthy=False), timeout=2 * CHECK + 1)
        started = time.monotonic()
        during = serve.publish("t", "during")
        assert during == {"offset": None, "remote": False, "pid": local.pid}
        assert time.monotonic() - started < 2.0  # bounded: never waits for Redis to come back
        assert local.receive(1) == ["during"]  # this process's members still get it

        redis_server.start()  # empty: a new epoch
        eventually(lambda: serve.get("/healthy")["healthy"] or None, timeout=10)
        eventually(lambda: every_worker_says(workers, 2, healthy=True), timeout=10)
        for n in range(10):
            assert (serve if n % 2 else workers).publish("t", f"after{n}")["remote"]
        for client in (local, *remote):
            assert client.receive(10) == [f"after{n}" for n in range(10)]  # delivery resumed, in order
        # What Redis lost cannot be told apart from what was never sent: each process reports it.
        assert [gap[0] for gap in serve.get("/gaps")] == ["t"]
        assert "\ntakeover_hub_gaps_total 1.0\n" in serve.text("/metrics")  # and the metric counts it
        gaps: dict[int, list[list[object]]] = {}
        for _ in range(20):
            gaps.setdefault(workers.get("/healthy")["pid"], workers.get("/gaps"))
        assert all(any(gap[0] == "t" for gap in seen) for seen in gaps.values())
    finally:
        serve.stop()
        workers.stop()
        redis_server.kill()


def test_the_first_call_of_a_new_hub_finds_redis_up(redis_server: RedisServer) -> None:
    for first in ("publish", "history", "presence"):
        hub = Hub(redis_server.url)
        try:
            if first == "publish":
                assert hub.publish("first", "x").remote  # not lost while the hub was still connecting
            elif first == "history":
                assert hub.history("first") != []
            else:
                assert hub.presence("first") == [] and hub.healthy
        finally:
            hub.close()


@pytest.fixture
def redis_behind_proxy(tmp_path: Path) -> Iterator[tuple[RedisServer, FreezingProxy]]:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    proxy = FreezingProxy(redis_server.port)
    yield redis_server, proxy
    proxy.close()
    redis_server.kill()


def test_a_half_open_subscription_is_detected_replaced_and_caught_up(
    redis_behind_proxy: tuple[RedisServer, FreezingProxy],
) -> None:
    redis_server, proxy = redis_behind_proxy
    serve = takeover_serve(proxy.url, **SETTINGS)
    try:
        client = serve.client("quiet", "q")
        eventually(lambda: serve.get("/healthy")["healthy"] or None)
        proxy.freeze()  # nothing is closed: only a PING that goes unanswered can tell
        frozen_at = time.monotonic()
        eventually(lambda: serve.get("/healthy")["healthy"] is False or None, timeout=2 * CHECK + 0.5)
        assert time.monotonic() - frozen_at <= 2 * CHECK + 0.5
        # Another process publishes while this one is cut off: Redis keeps it in the stream.
        missed = [f"missed{n}" for n in range(5)]
        for data in missed:
            assert publish(redis_server.url, "quiet", data, history=50).remote
        proxy.thaw()
        eventually(lambda: serve.get("/healthy")["healthy"] or None, timeout=10)
        assert client.receive(5) == missed  # replayed from the stream once reconnected, each once
        assert publish(redis_server.url, "quiet", "live", history=50).remote
        assert client.receive(1) == ["live"]
        assert serve.get("/gaps") == []  # nothing was lost
        client.close()
    finally:
        serve.stop()


def test_a_message_published_before_redis_confirms_a_new_subscription_is_delivered(
    redis_server: RedisServer,
) -> None:
    """A join reads where the room is, then subscribes; a message published between the two
    (Redis slow to confirm, past the join's wait) is read from the stream once confirmed,
    not left until a later message shows the gap (one CI run lost such a first message)."""
    serve = takeover_serve(redis_server.url, HUB_SLOW_SUBSCRIBE="2", **SETTINGS)
    try:
        eventually(lambda: serve.get("/healthy")["healthy"] or None)
        client = serve.client("slow-first", "early")  # joined: its subscription is not confirmed yet
        assert serve.publish("slow-first", "the only message")["remote"]
        assert client.receive(1) == ["the only message"]  # within the client's wait, after the confirmation
        assert serve.publish("slow-first", "then live")["remote"]
        assert client.receive(1) == ["then live"]  # each once
        assert serve.get("/gaps") == []
        client.close()
    finally:
        serve.stop()


def test_redis_down_at_start_the_app_starts_and_connects_when_redis_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    serve = takeover_serve(f"redis://127.0.0.1:{port}/0", **SETTINGS)
    hub = Hub(f"redis://127.0.0.1:{port}/0", health_check_interval=CHECK, timeout=0.5)
    caplog.set_level(logging.WARNING, logger="takeover.hub")
    try:
        assert serve.get("/healthy")["healthy"] is False
        assert hub.healthy is False
        started = time.monotonic()
        assert hub.publish("r", "nobody hears this").remote is False
        assert time.monotonic() - started < 1.0
        with pytest.raises(ConnectionError, match="cannot connect"):
            hub.history("r")  # not an empty list: that would be an empty room
        client = serve.client("r", "early")  # joining works without Redis
        redis_server = RedisServer(tmp_path, port)
        redis_server.start()
        try:
            eventually(lambda: serve.get("/healthy")["healthy"] or None, timeout=10)
            eventually(lambda: hub.healthy or None, timeout=10)
            assert hub.publish("r", "now it is heard").remote
            assert client.receive(1) == ["now it is heard"]
            assert serve.get("/presence?room=r") == ["early"]  # put in the presence list once connected
        finally:
            hub.close()
            redis_server.kill()
        warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
        assert len(warnings) == 1  # one WARNING for the whole outage, however many attempts
        client.close()
    finally:
        serve.stop()
