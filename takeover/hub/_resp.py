"""A small Redis client (RESP2) on gevent sockets, for the hub's home loop.

redis-py's blocking client cannot run inside a gevent hub of a process that is
not monkey-patched (takeover's I/O loop thread on gunicorn's sync and gthread
workers): its sockets and its hiredis ``poll()`` would stop every WebSocket
of that loop for each round trip. This client speaks the few commands the
hub needs over gevent's cooperative sockets, with what the hub relies on:

* :class:`Commands` pipelines calls from many greenlets on one connection
  (replies come back in order, RESP2 §"Pipelining") and bounds each call by
  a timeout; a connection that times out is dropped, not reused.
* :class:`Subscription` is a connection in pub/sub mode, read by one greenlet.

URLs are redis-py's: ``redis://[[user]:password@]host[:port][/db]``,
``rediss://`` for TLS (``?ssl_cert_reqs=none``, ``?ssl_ca_certs=PATH``) and
``unix:///path?db=N``.
"""

from __future__ import annotations

import collections
import socket as _stdlib_socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "NOTHING", "Address", "BrokerError", "Commands", "Redirect", "ReplyError", "Subscription", "asking",
    "parse_url",
]

Reply = Any  # bytes | int | list[Reply] | ReplyError | None


class BrokerError(ConnectionError):
    """The broker cannot be reached, or stopped answering."""


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``)."""


class Redirect(ReplyError):
    """A Redis Cluster node's answer that a key is served elsewhere or not now (``MOVED``, ``ASK``,
    ``TRYAGAIN``, ``CLUSTERDOWN``): the caller refreshes its map of the slots and tries again."""

    @property
    def moved(self) -> bool:
        return str(self).startswith(("MOVED ", "CLUSTERDOWN"))

    @property
    def ask(self) -> tuple[str, int] | None:
        """For ``ASK <slot> <host>:<port>``, the node to ask (once, after ``ASKING``), else None."""
        parts = str(self).split()
        if len(parts) != 3 or parts[0] != "ASK":
            return None
        host, _, port = parts[2].rpartition(":")
        return host, int(port)


_asking: Any = None  # a gevent.local.local: whether this greenlet's commands go after ASKING


def asking(on: bool) -> None:
    """From now on, each command this greenlet sends is preceded by ``ASKING`` (or no longer):
    what a cluster node answering ``ASK`` wants (Redis Cluster specification, "ASK redirection")."""
    global _asking
    if _asking is None:
        import gevent.local

        _asking = gevent.local.local()
    _asking.on = on


def _asking_now() -> bool:
    return _asking is not None and getattr(_asking, "on", False)


#: The error replies that are a :class:`Redirect` (Redis Cluster specification, "Redirection").
REDIRECTS = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


@dataclass(frozen=True)
class Address:
    """Where Redis is and how to log in."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    verify: bool = True
    ca_certs: str | None = None

    def __str__(self) -> str:
        where = self.path if self.path is not None else f"{self.host}:{self.port}"
        return f"{'rediss' if self.tls else 'redis'} {where}/{self.db}"


def parse_url(url: str) -> Address:
    """The :class:`Address` in ``url``; ``ValueError`` saying what is wrong with it."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid port in Redis URL {url!r}") from None
    db_text = query.get("db") or (parts.path.lstrip("/") if parts.scheme != "unix" else "") or "0"
    if not db_text.isdigit():
        raise ValueError(f"invalid database number {db_text!r} in Redis URL {url!r}")
    login = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
        "db": int(db_text),
    }
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"a unix:// Redis URL needs a socket path: {url!r}")
        return Address(path=parts.path, **login)  # type: ignore[arg-type]
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a hub URL is memory://, redis://, rediss:// or unix://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in Redis URL {url!r}")
    verify = query.get("ssl_cert_reqs", "required").lower() not in ("none", "cert_none")
    return Address(
        host=parts.hostname, port=port or 6379, tls=parts.scheme == "rediss", verify=verify,
        ca_certs=query.get("ssl_ca_certs"), **login,  # type: ignore[arg-type]
    )


def pack(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class _Incomplete(Exception):
    pass


#: What :meth:`_Wire.read_buffered` returns when no whole reply is buffered.
NOTHING = object()


def _parse(buf: bytearray, pos: int) -> tuple[Reply, int]:
    """The reply starting at ``pos`` and where the next one starts; ``_Incomplete`` if cut short."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = buf[pos + 1 : end]
    pos = end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]), pos + size + 2
    if kind == 42:  # * array
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 58:  # : integer
        return int(line), pos
    if kind == 43:  # + simple string
        return bytes(line), pos
    if kind == 45:  # - error
        text = line.decode("utf-8", "replace")
        return (Redirect if text.startswith(REDIRECTS) else ReplyError)(text), pos
    raise BrokerError("Redis sent a reply this client does not understand: "
        f"{bytes(buf[pos - 2 : pos + 20])!r}")


class _Wire:
    """One connected socket, its read buffer and a write lock."""

    def __init__(self, address: Address, timeout: float) -> None:
        import gevent.lock

        self.address = address
        self.timeout = timeout
        self.sock: Any = None
        self._buf = bytearray()
        self._pos = 0
        self._write_lock = gevent.lock.Semaphore()

    def connect(self) -> None:
        """Connect, log in and select the database (within ``timeout`` seconds in all)."""
        import gevent.socket

        address = self.address
        try:
            if address.path is not None:
                sock = gevent.socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(address.path)
            else:
                sock = gevent.socket.create_connection((address.host, address.port), timeout=self.timeout)
                sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
            if address.tls:
                sock = self._wrap(sock)
        except OSError as error:
            raise BrokerError(f"cannot connect to {address}: {error}") from None
        self.sock = sock
        hello: list[tuple[str | int, ...]] = []
        if address.password is not None:
            login = (address.username, address.password) if address.username else (address.password,)
            hello.append(("AUTH", *login))
        if address.db:
            hello.append(("SELECT", address.db))
        for command in hello:
            self.write(pack(*command))
            reply = self.read(self.timeout)
            if isinstance(reply, ReplyError):
                self.close()
                raise BrokerError(f"{address} refused {command[0]}: {reply}")

    def _wrap(self, sock: Any) -> Any:
        import gevent.ssl

        # gevent's SSLContext: its sockets are cooperative. (gevent.ssl.create_default_context
        # is the standard library's, whose sockets would block the whole loop on each read.)
        context = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
        if self.address.ca_certs is not None:
            context.load_verify_locations(cafile=self.address.ca_certs)
        else:
            context.load_default_certs()
        if not self.address.verify:
            context.check_hostname = False
            context.verify_mode = gevent.ssl.CERT_NONE
        return context.wrap_socket(sock, server_hostname=self.address.host)

    def write(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            raise BrokerError(f"not connected to {self.address}")
        with self._write_lock:
            try:
                sock.sendall(data)
            except OSError as error:
                self.close()
                raise BrokerError(f"lost the connection to {self.address}: {error}") from None

    def read(self, timeout: float | None) -> Reply:
        """The next reply; ``TimeoutError`` after ``timeout`` seconds without one."""
        buf = self._buf
        while True:
            if self._pos < len(buf):
                try:
                    reply, self._pos = _parse(buf, self._pos)
                    return reply
                except _Incomplete:
                    pass
            if self._pos:
                del buf[: self._pos]
                self._pos = 0
            sock = self.sock
            if sock is None:
                raise BrokerError(f"not connected to {self.address}")
            sock.settimeout(timeout)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no reply from {self.address} in {timeout} s") from None
            except OSError as error:
                self.close()
                raise BrokerError(f"lost the connection to {self.address}: {error}") from None
            if not data:
                self.close()
                raise BrokerError(f"{self.address} closed the connection")
            buf += data

    def read_buffered(self) -> Reply:
        """The next reply if it was read already, whole; :data:`NOTHING` otherwise (no system call)."""
        if self._pos < len(self._buf):
            try:
                reply, self._pos = _parse(self._buf, self._pos)
                return reply
            except _Incomplete:
                pass
        return NOTHING

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf.clear()
        self._pos = 0
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self.sock is not None


class Commands:
    """Commands from any greenlet of one hub, pipelined on one connection.

    A call writes its command and waits for its reply, which a reader greenlet
    matches to the oldest waiting call. The connection is made on first use
    and again after it is lost; a call that finds no connection and cannot
    make one raises :class:`BrokerError` within ``timeout`` seconds.
    """

    def __init__(self, address: Address, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._wire: _Wire | None = None
        self._waiting: collections.deque[Any] = collections.deque()

    def call(self, *args: bytes | str | int) -> Reply:
        """Run one command; raises :class:`ReplyError` for an error reply."""
        (reply,) = self.pipeline([args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def pipeline(self, commands: list[tuple[bytes | str | int, ...]]) -> list[Reply]:
        """Run ``commands`` in one write; their replies, error replies included, in order."""
        import gevent.event

        if _asking_now():  # each command after its own ASKING, whose +OK is dropped below
            commands = [part for command in commands for part in ((b"ASKING",), command)]
        wire = self._connected()
        results = [gevent.event.AsyncResult() for _ in commands]
        self._waiting.extend((wire, result) for result in results)
        wire.write(b"".join(pack(*command) for command in commands))
        replies = []
        for result in results:
            try:
                reply = result.get(timeout=self.timeout)
            except gevent.Timeout:
                self._drop(wire, TimeoutError(f"no reply from {self.address} in {self.timeout} s"))
                raise BrokerError(f"no reply from {self.address} in {self.timeout} s") from None
            if isinstance(reply, BrokerError):
                raise reply
            replies.append(reply)
        if _asking_now():
            replies = replies[1::2]
        for reply in replies:
            if isinstance(reply, Redirect):  # a cluster's slots moved: no reply of it is to be trusted
                raise reply
        return replies

    def _connected(self) -> _Wire:
        wire = self._wire
        if wire is not None and wire.connected:
            return wire
        import gevent

        wire = _Wire(self.address, self.timeout)
        wire.connect()
        self._wire = wire
        gevent.spawn(self._read, wire)
        return wire

    def _read(self, wire: _Wire) -> None:
        waiting = self._waiting
        try:
            while wire.connected:
                reply = wire.read(None)
                while waiting and waiting[0][0] is not wire:
                    waiting.popleft()  # calls of an older connection, failed already
                if not waiting:
                    raise BrokerError(f"{self.address} sent a reply nobody asked for")
                waiting.popleft()[1].set(reply)
        except (BrokerError, TimeoutError, ValueError) as error:
            self._drop(wire, error)

    def _drop(self, wire: _Wire, error: Exception) -> None:
        wire.close()
        failure = error if isinstance(error, BrokerError) else BrokerError(str(error))
        for owner, result in tuple(self._waiting):
            if owner is wire and not result.ready():
                result.set(failure)
        if self._wire is wire:
            self._wire = None

    def close(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            self._drop(wire, BrokerError("the hub is closed"))


class Subscription(_Wire):
    """A connection in pub/sub mode: SUBSCRIBE, UNSUBSCRIBE and PING from any greenlet; one reader.

    ``sharded``: Redis Cluster's sharded pub/sub (``SSUBSCRIBE``, Redis >= 7), one command per
    channel, since the channels of one command must share a slot.
    """

    sharded = False

    def subscribe(self, *channels: bytes) -> None:
        if channels and self.sharded:
            self.write(b"".join(pack(b"SSUBSCRIBE", channel) for channel in channels))
        elif channels:
            self.write(pack(b"SUBSCRIBE", *channels))

    def unsubscribe(self, *channels: bytes) -> None:
        if channels and self.sharded:
            self.write(b"".join(pack(b"SUNSUBSCRIBE", channel) for channel in channels))
        elif channels:
            self.write(pack(b"UNSUBSCRIBE", *channels))

    def ping(self) -> None:
        self.write(pack(b"PING"))
