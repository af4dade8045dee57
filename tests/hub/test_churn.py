"""The hub under churn (issue 20): presence that misses no one when many clients arrive at once.

Real processes on one redis-server: gunicorn with two of takeover's gevent workers
and gunicorn with two gthread workers, started fresh for each test, so that a
burst of clients meets hubs that are still connecting (a hub connects to Redis
on its first use, in each worker).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
from typing import Any

import pytest

from tests.hub.cluster import AppServer, HubClient, eventually, gunicorn
from tests.redis_server import RedisServer

#: presence_ttl 30 s, as by default: a member left out is not put back by a heartbeat within the test.
SETTINGS = {"HUB_HISTORY": "50", "HUB_PRESENCE_TTL": "30", "HUB_CHECK": "0.5"}
_rooms = itertools.count()


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_burst_of_first_joins_is_all_in_presence(redis_server: RedisServer, worker_class: str) -> None:
    """60 clients connect at once, half to each server, while the workers' hubs connect to Redis:
    every one of them is in presence(), seen from either server, within seconds of the burst
    (before the fix, members were missing for good: the heartbeat does not put them back)."""
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
                eventually(lambda server=server: not missing(server) or None, timeout=3.0)  # type: ignore[misc]
            except AssertionError:
                raise AssertionError(f"never in presence: {missing(server)}") from None
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


def test_a_room_emptied_and_joined_again_at_once_gets_no_message_twice(redis_server: RedisServer) -> None:
    """The last member of a room here leaves and a new one joins at once, while messages keep
    coming (a reconnect burst, on one process): the new member gets each offset once.

    In process: the hub in takeover's I/O loop on the test's redis-server, WebSockets on
    socket pairs, a publisher thread on redis-py (``takeover.publish``) all along."""
    from takeover import Hub, publish
    from tests.hub.test_before_open import open_it, pending_websocket

    hub = Hub(redis_server.url, history=100)
    room = f"again{next(_rooms)}"
    stop = threading.Event()
    published = itertools.count()

    def publisher() -> None:
        for _ in range(100_000):  # bounded: the test stops it within seconds
            if stop.is_set():
                return
            publish(redis_server.url, room, f"m{next(published)}")

    thread = threading.Thread(target=publisher, daemon=True)
    try:
        hub.presence(room)  # the first use connects
        eventually(lambda: hub.healthy or None)
        first = pending_websocket()
        hub.join(first, room)
        client = open_it(first)
        thread.start()
        for cycle in range(15):
            client.close()  # gone: the room empties here, its subscription goes...
            assert first.wait_closed(5)
            first = pending_websocket()
            hub.join(first, room)  # ...and comes back at once, with messages in flight
            client = open_it(first)
            seen = [client.read_frame()[2] for _ in range(30)]
            doubled = sorted({m for m in seen if seen.count(m) > 1})
            assert not doubled, f"cycle {cycle}: delivered twice: {doubled}"
    finally:
        stop.set()
        thread.join(10)
        hub.close()


@pytest.mark.parametrize("filled", ["once open", "while connecting"])
def test_a_member_resuming_with_since_gets_no_message_twice_when_the_room_is_new_here(
    redis_server: RedisServer, filled: str
) -> None:
    """Issue 20's duplicates: a member comes back with ``since`` to a process where its room has
    no member left (after a reconnect burst), while messages keep coming. The room starts
    following the stream where Redis was when it was made; messages published before its
    subscription took effect are filled in from the stream at the next live one. The member's
    own replay already reached them: it must not get them a second time.

    In process: the hub in takeover's I/O loop on the test's redis-server, a WebSocket on a
    socket pair. The window between the room's first read of the stream and its subscription
    is a few hundred microseconds; three publishes are made inside it, deterministically, by
    wrapping that first read. The room fills them in once the member is open, or while its
    WebSocket is still connecting (then into its queue)."""
    from takeover import Hub, publish
    from tests.hub.test_before_open import open_it, pending_websocket

    hub = Hub(redis_server.url, history=1000)
    room = f"resume{next(_rooms)}"
    try:
        offsets = [publish(redis_server.url, room, f"m{n}").offset for n in range(3)]
        assert hub.presence(room) == []  # the first use connects; the room has no member here
        eventually(lambda: hub.healthy or None)
        broker: Any = hub._process.broker  # type: ignore[union-attr]
        first_read = broker._baseline

        def read_then_publish(name: str) -> int:
            baseline: int = first_read(name)
            for n in range(3, 6):  # published between the room's first read and its subscription
                publish(redis_server.url, name, f"m{n}")
            return baseline

        broker._baseline = read_then_publish
        ws = pending_websocket()
        assert hub.join(ws, room, since=offsets[0])
        broker._baseline = first_read
        if filled == "while connecting":
            m6 = publish(redis_server.url, room, "m6").offset  # live: the room fills in m3..m5 first
            local = broker.locals.rooms[room]
            eventually(lambda: local.last == m6 or None, timeout=5.0)  # the subscriber has had it
            client = open_it(ws)
        else:
            client = open_it(ws)
            publish(redis_server.url, room, "m6")  # live: the room fills in m3..m5 before it
        publish(redis_server.url, room, "m7")
        seen = [client.read_frame()[2].decode() for _ in range(7)]
        assert seen == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
        client.sock.settimeout(0.5)  # nothing more: a duplicate would be here
        with pytest.raises(TimeoutError):
            client.read_frame()
    finally:
        hub.close()

