"""A CONNECT forward proxy (HTTP tunnel) on the server's ``connect`` event.

``curl -p -x http://127.0.0.1:8888 http://127.0.0.1:8000/`` asks this proxy for
``CONNECT 127.0.0.1:8000 HTTP/1.1``; the proxy opens a TCP connection to that
target, answers ``200 Connection Established`` and copies bytes both ways until
both sides are done. What the client sent right after its request (``head``,
say the start of a TLS handshake) is the first thing the target receives.

Which targets are allowed:

* with ``--allow HOST:PORT`` (repeatable), exactly those targets: the host is
  compared after normalisation (case, trailing dot, IPv6 spelling), so
  ``localhost:80`` does not allow ``127.0.0.1:80``;
* without it, loopback only: IP addresses in 127.0.0.0/8 or ``::1``, and the
  name ``localhost``, which is connected to only on the loopback addresses it
  resolves to. No other name is looked up.

Answers other than 200, each with ``Connection: close``: ``400`` for a
request-target that is not ``host:port`` (or an ambiguous numeric host such as
``127.1``), ``403`` for a target that is not allowed, ``502`` when the target
cannot be resolved, refuses the connection or does not answer within
``--connect-timeout`` seconds. Requests with other methods get ``405`` from a
tiny WSGI app.

A side that ends its stream (EOF) is half-closed on the other side, so the
reverse direction keeps flowing; an error on either side closes both. A tunnel
with no bytes in either direction for ``--idle-timeout`` seconds (up to twice
that, as each direction checks on its own) is closed.

Run: python examples/tunnel.py --port 8888 [--host 127.0.0.1] [--allow HOST:PORT ...]
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import socket as _socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import socket as gsocket
from werkzeug.wrappers import Request

from takeover import create_server
from takeover.protocol.handshake import reject_response
from takeover.server import format_address

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"
BUFFER_SIZE = 64 * 1024

# RFC 9110 §9.3.6: CONNECT's request-target is authority-form, host ":" port,
# without userinfo; an IPv6 address is bracketed.
AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})")
LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """A CONNECT target, normalised: an IP address in its canonical form, or a lower-case name."""

    host: str
    port: int
    ip: IPAddress | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{host}:{self.port}"


def parse_target(text: str) -> Target:
    """Parse ``host:port``; raises :class:`ValueError` for anything else."""
    match = AUTHORITY.fullmatch(text)
    if match is None:
        raise ValueError(f"not host:port: {text!r}")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"port out of range: {text!r}")
    if match["ipv6"] is not None:
        ip: IPAddress = ipaddress.IPv6Address(match["ipv6"])  # ValueError if malformed
        return Target(ip.compressed, port, ip)
    host = match["host"].lower()
    try:
        ip = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return Target(str(ip), port, ip)
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a valid host name: {text!r}")
    if labels[-1].isdigit():
        # "127.1" or "0x7f.1" would be resolved as IPv4 by inet_aton: refuse to guess.
        raise ValueError(f"ambiguous numeric host: {text!r}")
    return Target(name, port, None)


def is_loopback(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip.is_loopback


class Refused(Exception):
    """A CONNECT answered with ``status`` and a one-line reason, then closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Proxy:
    """The ``connect`` listener: policy, connection to the target, then a :class:`Tunnel`."""

    def __init__(
        self, allow: list[Target] | None, connect_timeout: float, idle_timeout: float | None
    ) -> None:
        self.allow = frozenset(allow) if allow else None
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout

    # -- policy -----------------------------------------------------------

    def check(self, target: Target) -> None:
        """Raise :class:`Refused` (403) unless ``target`` is allowed (before any lookup)."""
        if self.allow is not None:
            allowed = target in self.allow
        elif target.ip is not None:
            allowed = is_loopback(target.ip)
        else:
            allowed = target.host == "localhost"
        if not allowed:
            raise Refused(403, f"target not allowed: {target}")

    def addresses(self, target: Target) -> list[tuple[int, Any]]:
        """``(family, sockaddr)`` pairs to try, resolved once so the check holds for the connect."""
        if target.ip is not None:
            family = _socket.AF_INET6 if target.ip.version == 6 else _socket.AF_INET
            return [(family, (target.host, target.port))]
        try:
            infos = gsocket.getaddrinfo(target.host, target.port, 0, _socket.SOCK_STREAM)
        except OSError as error:
            raise Refused(502, f"cannot resolve {target.host}: {error}") from None
        found = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
        if self.allow is None:  # "localhost" without --allow: its loopback addresses only
            found = [(f, a) for f, a in found if is_loopback(ipaddress.ip_address(a[0].split("%")[0]))]
            if not found:
                raise Refused(403, f"{target.host} has no loopback address")
        return found

    def open(self, target: Target) -> Any:
        """Connect to ``target`` within the connect timeout, or raise :class:`Refused` (502)."""
        last_error: Exception | None = None
        try:
            with gevent.Timeout(self.connect_timeout):
                for family, sockaddr in self.addresses(target):
                    try:
                        upstream = gsocket.socket(family, _socket.SOCK_STREAM)
                    except OSError as error:  # no IPv6 here, say
                        last_error = error
                        continue
                    try:
                        upstream.connect(sockaddr)
                    except OSError as error:
                        upstream.close()
                        last_error = error
                        continue
                    return upstream
        except gevent.Timeout:
            raise Refused(502, f"{target} did not answer within {self.connect_timeout:g} s") from None
        raise Refused(502, f"cannot connect to {target}: {last_error}")

    # -- the connect event ------------------------------------------------

    def on_connect(self, request: Request, socket: Any, head: bytes) -> None:
        # The listener owns the socket: work in a greenlet of its own, as a
        # Node listener would return after attaching its handlers.
        gevent.spawn(self.serve, request.environ["RAW_URI"], socket, head)

    def serve(self, authority: str, client: Any, head: bytes) -> None:
        try:
            try:
                target = parse_target(authority)
            except ValueError as error:
                raise Refused(400, str(error)) from None
            self.check(target)
            upstream = self.open(target)
        except Refused as refusal:
            refuse(client, refusal.status, str(refusal))
            return
        try:
            client.sendall(ESTABLISHED)
        except OSError:
            upstream.close()
            client.close()
            return
        Tunnel(client, upstream, self.idle_timeout).run(head)


def refuse(sock: Any, status: int, reason: str, linger: float = 1.0) -> None:
    """Answer ``status`` with ``Connection: close`` and close without resetting the answer away.

    The client may have sent tunnelled bytes already: read and drop them for
    up to ``linger`` seconds after our FIN, as closing a socket with unread
    data sends a reset that can destroy the response in flight.
    """
    try:
        sock.sendall(reject_response(status, reason + "\n"))
        sock.shutdown(_socket.SHUT_WR)
        deadline = time.monotonic() + linger
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            if not sock.recv(BUFFER_SIZE):
                break
    except OSError:
        pass
    finally:
        sock.close()


class Tunnel:
    """Bytes both ways between two connected sockets, half-close aware."""

    def __init__(self, client: Any, upstream: Any, idle_timeout: float | None) -> None:
        self.client = client
        self.upstream = upstream
        self.idle_timeout = idle_timeout
        self.active = time.monotonic()
        for sock in (client, upstream):
            sock.settimeout(idle_timeout)

    def run(self, head: bytes) -> None:
        up = gevent.spawn(self.pipe, self.client, self.upstream, head)
        down = gevent.spawn(self.pipe, self.upstream, self.client, b"")
        try:
            for finished in gevent.iwait([up, down]):
                if not finished.value:  # a reset, or idle too long: tear both down
                    break
        finally:
            gevent.killall([up, down])
            self.client.close()
            self.upstream.close()

    def pipe(self, source: Any, sink: Any, first: bytes) -> bool:
        """Copy ``first``, then ``source`` to ``sink``; at EOF, half-close ``sink``.

        Returns True at a clean EOF, False on an error or when the whole
        tunnel was idle too long (traffic either way keeps it alive).
        """
        data = first
        try:
            while True:
                if data:
                    self.active = time.monotonic()
                    sink.sendall(data)
                try:
                    data = source.recv(BUFFER_SIZE)
                except TimeoutError:
                    if time.monotonic() - self.active < (self.idle_timeout or 0):
                        data = b""  # the other direction is busy: keep waiting
                        continue
                    return False
                if not data:
                    sink.shutdown(_socket.SHUT_WR)
                    return True
        except OSError:
            return False


def http_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Requests other than CONNECT: this proxy only tunnels."""
    body = b"this is a CONNECT proxy: use it with curl -p -x http://HOST:PORT URL\n"
    start_response("405 Method Not Allowed", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("Allow", "CONNECT"),
    ])
    return [body]


def allow_argument(text: str) -> Target:
    try:
        return parse_target(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument(
        "--allow", action="append", type=allow_argument, metavar="HOST:PORT",
        help="a target to allow (repeatable); default: loopback targets only",
    )
    parser.add_argument("--connect-timeout", type=float, default=5, help="seconds to reach a target")
    parser.add_argument("--idle-timeout", type=float, default=600, help="seconds; 0 disables")
    args = parser.parse_args()
    proxy = Proxy(args.allow, args.connect_timeout, args.idle_timeout or None)

    server = create_server(http_app)
    server.on("connect", proxy.on_connect)
    server.listen(args.port, args.host)
    allowed = ", ".join(map(str, args.allow)) if args.allow else "loopback only"
    address = format_address(*server.address)
    print(f"CONNECT proxy listening on http://{address}/ (targets: {allowed})", flush=True)
    server.serve_forever(close_on=(signal.SIGINT, signal.SIGTERM))


if __name__ == "__main__":
    main()
