"""TCP proxies for the tests: one that goes silent (a half-open connection), one that cuts."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.redis_server import HOST


class FreezingProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; while frozen it forwards nothing and closes nothing.

    That is what a peer behind a dead link or a dropped NAT entry looks like:
    the connection stays open and every read waits. New connections are
    accepted and left silent too. :meth:`thaw` drops the frozen connections
    (as the broken link would in the end) and forwards again.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        frozen_at_start = self._frozen.is_set()
        try:
            while not self._stopped.is_set():
                if self._frozen.is_set() or frozen_at_start:
                    if self._stopped.wait(0.05):  # silent: read nothing, write nothing
                        return
                    continue
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is client else client).sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket thaw() closed
            return
        finally:
            if not self._frozen.is_set() or self._stopped.is_set():
                client.close()
                upstream.close()

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        """Close the connections that went silent, then forward new ones again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            client.close()
            upstream.close()
        self._frozen.clear()

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        self.thaw()


class CuttingProxy:
    """Forwards its port to ``target``; :meth:`cut` drops every connection, and new ones are
    refused while ``refusing`` is set (as a network that is down)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.ends: list[socket.socket] = []
        self.refusing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        for _ in range(100_000):
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.ends += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        with self.lock:
            ends, self.ends = self.ends, []
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.refusing.set()
        self.cut()
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        for _ in range(10_000_000):
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
