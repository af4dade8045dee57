"""Parking idle gevent readers: an idle connection costs no greenlet.

A reader that waits in ``GeventTransport.recv(park=True)`` longer than
``takeover._io.parker.PARK_AFTER`` seconds without data is *parked*: ``recv``
returns None and its greenlet may end. ``resume_when_readable(resume)`` then
calls ``resume()`` in a new greenlet once data (or the end of the stream)
arrives. One process-wide timer sweeps the waiting readers every
``PARK_AFTER`` seconds, so a reader is parked between one and two
``PARK_AFTER`` after it started waiting.

Over gevent socket pairs in this process, through the transport's methods only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.event
import gevent.socket
import pytest

from takeover._io.loop import current_loop
from takeover._io.parker import PARK_AFTER
from takeover._io.transport import GeventTransport
from tests.io.waiting import unread, wait_until

#: The latest a reader that started waiting may be parked: two sweeps, and some slack.
PARKED_BY = 2 * PARK_AFTER + 0.5


@pytest.fixture
def pair() -> Iterator[tuple[GeventTransport, Any]]:
    ours, peer = gevent.socket.socketpair()
    transport = GeventTransport(ours, current_loop())
    yield transport, peer
    transport.abort()
    peer.close()


def timed_recv(transport: GeventTransport, park: bool = True) -> tuple[bytes | None, float]:
    started = time.monotonic()
    data = transport.recv(park=park)
    return data, time.monotonic() - started


class Resumed:
    """A ``resume`` callback: records the greenlet it ran in and what ``recv(park=True)`` then gave.

    ``called`` is set as soon as it is called, before it reads.
    """

    def __init__(self, transport: GeventTransport) -> None:
        self.transport = transport
        self.called = gevent.event.Event()
        self.done = gevent.event.AsyncResult()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        in_hub = gevent.getcurrent() is gevent.get_hub()
        self.done.set((in_hub, self.transport.recv(park=True)))


def test_an_idle_reader_is_parked(pair: tuple[GeventTransport, Any]) -> None:
    transport, _peer = pair
    data, elapsed = timed_recv(transport)
    assert data is None
    assert PARK_AFTER * 0.9 <= elapsed <= PARKED_BY, elapsed


def test_a_parked_reader_is_resumed_in_a_new_greenlet_when_data_arrives(
    pair: tuple[GeventTransport, Any],
) -> None:
    transport, peer = pair
    assert transport.recv(park=True) is None
    resumed = Resumed(transport)
    transport.resume_when_readable(resumed)
    assert not resumed.called.wait(0.2), "resumed without data"  # the wait is expected to time out
    assert resumed.calls == 0, "resumed without data"
    peer.sendall(b"wake up")
    in_hub, data = resumed.done.get(timeout=5)
    assert data == b"wake up"
    assert not in_hub, "resume() must run in a greenlet of its own, never in the hub"
    assert resumed.calls == 1


def test_a_resumed_reader_parks_again_when_idle_again(pair: tuple[GeventTransport, Any]) -> None:
    transport, peer = pair
    assert transport.recv(park=True) is None
    resumed = Resumed(transport)
    transport.resume_when_readable(resumed)
    peer.sendall(b"one")
    assert resumed.done.get(timeout=5) == (False, b"one")
    data, elapsed = timed_recv(transport)
    assert data is None and elapsed <= PARKED_BY
    again = Resumed(transport)
    transport.resume_when_readable(again)
    peer.sendall(b"two")
    assert again.done.get(timeout=5) == (False, b"two")
    assert resumed.calls == 1


def test_data_within_park_after_is_returned_not_parked(pair: tuple[GeventTransport, Any]) -> None:
    transport, peer = pair
    reader = gevent.spawn(timed_recv, transport)
    # The peer is silent for less than PARK_AFTER: the subject of the test, not synchronisation.
    gevent.sleep(PARK_AFTER / 4)
    peer.sendall(b"in time")
    data, elapsed = reader.get(timeout=5)
    assert data == b"in time"
    assert elapsed < PARK_AFTER


def test_data_already_there_is_returned_at_once(pair: tuple[GeventTransport, Any]) -> None:
    transport, peer = pair
    peer.sendall(b"waiting")
    wait_until(lambda: unread(transport.sock) == len(b"waiting"), what="the bytes to be in our receive queue")
    data, elapsed = timed_recv(transport)
    assert data == b"waiting" and elapsed < PARK_AFTER / 2


def test_a_reader_that_waits_without_park_is_never_parked(pair: tuple[GeventTransport, Any]) -> None:
    transport, peer = pair
    later = gevent.spawn_later(PARKED_BY, peer.sendall, b"late")
    data, elapsed = timed_recv(transport, park=False)
    assert data == b"late"
    assert elapsed >= PARKED_BY * 0.9
    later.join(5)


def test_the_peer_closing_resumes_a_parked_reader_with_the_end(pair: tuple[GeventTransport, Any]) -> None:
    transport, peer = pair
    assert transport.recv(park=True) is None
    resumed = Resumed(transport)
    transport.resume_when_readable(resumed)
    peer.close()
    assert resumed.done.get(timeout=5) == (False, b"")


@pytest.mark.parametrize("owns_socket", [True, False], ids=["owned", "not-owned"])
def test_an_aborted_parked_reader_is_never_resumed(
    pair: tuple[GeventTransport, Any], owns_socket: bool
) -> None:
    """Also when the socket stays open for the server that owns it (shut down, so readable at EOF)."""
    transport, peer = pair
    transport.owns_socket = owns_socket
    assert transport.recv(park=True) is None
    resumed = Resumed(transport)
    transport.resume_when_readable(resumed)
    transport.abort()
    assert peer.recv(10) == b""  # the peer sees the end; our side resumes nothing
    assert not resumed.called.wait(0.2), "an aborted reader was resumed"  # expected to time out
    assert resumed.calls == 0
    if not owns_socket:
        transport.sock.close()


def test_resume_when_readable_after_abort_does_nothing(pair: tuple[GeventTransport, Any]) -> None:
    transport, _peer = pair
    transport.abort()
    resumed = Resumed(transport)
    transport.resume_when_readable(resumed)
    assert not resumed.called.wait(0.2), "resumed after abort"  # expected to time out
    assert resumed.calls == 0


def test_many_idle_readers_are_each_parked_and_resumed_on_their_own() -> None:
    pairs = [gevent.socket.socketpair() for _ in range(50)]
    transports = [GeventTransport(ours, current_loop()) for ours, _ in pairs]
    try:
        readers = [gevent.spawn(timed_recv, transport) for transport in transports]
        # One peer is silent for less than PARK_AFTER, then sends: the subject, not synchronisation.
        gevent.sleep(PARK_AFTER / 4)
        pairs[0][1].sendall(b"busy")  # one connection is not idle
        results = [reader.get(timeout=PARKED_BY + 5) for reader in readers]
        assert results[0][0] == b"busy"
        assert all(data is None and elapsed <= PARKED_BY for data, elapsed in results[1:]), results
        resumed = [Resumed(transport) for transport in transports[1:]]
        for transport, callback in zip(transports[1:], resumed, strict=True):
            transport.resume_when_readable(callback)
        for index in range(1, 50, 2):
            pairs[index][1].sendall(b"%d" % index)
        for index, callback in enumerate(resumed, start=1):
            if index % 2:
                assert callback.done.get(timeout=5) == (False, b"%d" % index)
        # The readers without data must not be resumed: this wait for any of them is expected to time out.
        idle = [callback.called for index, callback in enumerate(resumed, start=1) if not index % 2]
        assert gevent.wait(idle, timeout=0.1, count=1) == [], "an idle reader was resumed without data"
        assert [callback.calls for callback in resumed] == [index % 2 for index in range(1, 50)]
    finally:
        for transport, (_, peer) in zip(transports, pairs, strict=True):
            transport.abort()
            peer.close()


def test_tls_readers_are_never_parked() -> None:
    """A TLS socket's buffered records are not visible to the kernel: its reader waits as it is."""
    import ssl

    import gevent.ssl
    import trustme

    ca = trustme.CA()
    server_context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_context)
    ours, theirs = gevent.socket.socketpair()
    accepting = gevent.spawn(server_context.wrap_socket, ours, server_side=True)
    peer = client_context.wrap_socket(theirs, server_hostname="localhost")
    tls = accepting.get(timeout=10)
    transport = GeventTransport(tls, current_loop())
    try:
        later = gevent.spawn_later(PARKED_BY, peer.sendall, b"late")
        data, elapsed = timed_recv(transport, park=True)
        assert data == b"late"
        assert elapsed >= PARKED_BY * 0.9
        later.join(5)
    finally:
        transport.abort()
        peer.close()
