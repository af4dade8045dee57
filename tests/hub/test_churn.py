"""The hub under churn (issue 20): presence that misses no one when many clients arrive at once.

Real processes on one redis-server: gunicorn with two of takeover's gevent workers
and gunicorn with two gthread workers, started fresh for each test, so that a
burst of clients meets hubs that are still connecting (a hub connects to Redis
on its first use, in each worker).
"""

from __future__ import annotations

import concurrent.futures
import itertools

import pytest

from tests.hub.cluster import AppServer, HubClient, eventually, gunicorn
from tests.redis_server import RedisServer

#: presence_ttl 30 s, as by default: a member left out is not put back by a heartbeat within the test.
SETTINGS = {"HUB_HISTORY": "50", "HUB_PRESENCE_TTL": "30", "HUB_CHECK": "0.5"}
_rooms = itertools.count()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_burst_of_first_joins_is_all_in_presence(redis_server: RedisServer, worker_class: str) -> None:
    """60 clients connect at once, half to each server, while the workers' hubs connect to Redis:
    every one of them is in presence(), seen from either server, within a second of the burst."""
    servers = [gunicorn(redis_server.url, workers=2, worker_class=worker_class, **SETTINGS) for _ in range(2)]
    room = f"burst{next(_rooms)}"
    clients: list[HubClient] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            jobs = [pool.submit(servers[n % 2].client, room, f"c{n:02}") for n in range(60)]
            clients = [job.result() for job in jobs]
        names = sorted(f"c{n:02}" for n in range(60))

        def missing(server: AppServer) -> list[str]:
            return sorted(set(names) - set(server.get(f"/presence?room={room}")))

        for server in servers:
            try:
                eventually(lambda server=server: not missing(server) or None, timeout=1.0)  # type: ignore[misc]
            except AssertionError:
                raise AssertionError(f"never in presence: {missing(server)}") from None
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()
