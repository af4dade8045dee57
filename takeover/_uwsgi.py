"""uWSGI: in-app takeover on its workers (threads, processes, its gevent loop), and its shutdown.

uWSGI runs the WSGI app in its own C server and gives Python one handle on the
connection: ``uwsgi.connection_fd()``, the descriptor's number. What happens
to an upgrade (see docs/guides/servers.rst for the command lines):

* **The 101 is uWSGI's own response.** The view's 101 goes to
  ``start_response`` with takeover's headers; the body yields ``b""``, which
  makes uWSGI write and flush the headers (it writes those of an empty body
  only after ``close()``, too late). On ``--http-socket`` they go out as
  given; behind nginx (``--socket`` and ``uwsgi_pass``) nginx rewrites them
  and tunnels the connection after the 101.
* **Then the connection leaves uWSGI** (:func:`~takeover._io.handover.swap_out`):
  uWSGI closes its descriptor when the request ends (or reads the next
  request from it with ``--http11-socket``), so the connection moves to a
  descriptor of ours and uWSGI is left with a dead socket.
* **The head bytes** (a client's first frames, sent in the handshake's
  packet) may already be in uWSGI's request buffer: :func:`read_head` takes
  them from there through uWSGI's C API (see its docstring), and takes
  nothing, with a debug log, wherever that fails.
* **Where the session runs.** Under ``--gevent N``, in a new greenlet of
  uWSGI's own hub, event-style or not: ``receive()`` works from any greenlet
  of that hub, and the request returns, so the WebSocket holds none of the N
  cores (uWSGI's bound on requests in progress) and does not count as a
  running request when uWSGI reloads gracefully. Under threads or processes,
  event-style WebSockets (a ``message`` listener attached) are handed over to
  takeover's I/O loop thread (:func:`~takeover._io.handover.hand_over`) and
  the request's thread returns; blocking style runs in place and holds the
  request's thread (or the whole worker, without ``--threads``) until it closes.
* **Shutdown.** uWSGI runs ``uwsgi.atexit`` in each worker that stops or
  reloads (in the gevent loop it does not run Python's ``atexit``): the hook
  installed here (chaining the application's, if it set one first) closes the
  worker's WebSockets with 1001 and waits up to :data:`EXIT_TIMEOUT` seconds
  for their close handshakes. uWSGI's Python plugin skips that hook in a
  threads or processes worker that has a request in progress when it exits
  (SIGINT, or SIGTERM with ``--die-on-term``), and an in-place WebSocket is
  one: that worker's WebSockets then end without a close frame. Its gevent
  loop calls the hook when its hub is done, busy or not.

uWSGI's TLS sockets (``--https-socket``, ``--ssl-socket``) keep the TLS state
in uWSGI's C code: a takeover there is refused with
:class:`~takeover.errors.UnsupportedServerError` (terminate TLS in nginx).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import socket as _socket
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from takeover._io.handover import hand_over, swap_out
from takeover._io.loop import EXIT_TIMEOUT, io_loop
from takeover._io.registry import DEFAULT_REGISTRY, Registry
from takeover._log import warn_once
from takeover.errors import UnsupportedServerError
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["EXIT_TIMEOUT", "close_websockets", "is_uwsgi", "read_head", "registry", "take_over"]

logger = logging.getLogger("takeover")

SWITCHING = "101 Switching Protocols"
#: uWSGI's options that bind a socket whose TLS uWSGI itself terminates.
TLS_SOCKET_OPTIONS = ("https-socket", "ssl-socket", "suwsgi-socket")
#: The most bytes :func:`read_head` takes from uWSGI's request buffer.
HEAD_LIMIT = 1 << 20
_CHUNK = 65536

#: The WebSockets this worker runs outside the I/O loop (its gevent loop's,
#: and blocking ones in request threads), closed with 1001 when it stops.
registry = Registry()


def is_uwsgi(environ: dict[str, Any]) -> bool:
    """Whether ``environ`` is a request of uWSGI's (its Python plugin sets ``uwsgi.version``)."""
    return "uwsgi.version" in environ


def take_over(
    environ: dict[str, Any], start_response: Callable[..., Any], ws: WebSocket, *, event_style: bool
) -> Iterable[bytes]:
    """The body of the 101 response that gives the request's connection to ``ws``.

    ``event_style``: ``ws`` may leave the request's thread (a ``message``
    listener is attached; see ``_can_hand_over`` in :mod:`takeover.adapters`).
    """
    import uwsgi

    fd = uwsgi.connection_fd()
    if _is_tls_socket(fd, uwsgi.opt):
        raise UnsupportedServerError(
            "uWSGI terminates TLS on this socket itself (--https-socket, --ssl-socket), so the"
            " connection cannot be taken over: terminate TLS in nginx (uwsgi_pass to --socket)"
            " or serve plain HTTP (--http-socket)"
        )
    _install_exit_hook(uwsgi)
    start_response(SWITCHING, ws.session.response_headers)
    ws.session.handshake_response = b""  # uWSGI's response is the 101
    if ws.session.registry is DEFAULT_REGISTRY:  # no server chose one: this worker's, closed at exit
        ws.session.registry = registry
    threads = bool(getattr(uwsgi, "has_threads", True))  # Python threads run beside uWSGI's loop
    if _loop_engine(uwsgi) == "gevent":
        mode = "greenlet"
    elif event_style and threads:
        mode = "hand over"
    else:
        mode = "inline"
        if not environ.get("wsgi.multithread"):
            _warn_blocking_on_single_thread(threads)
    return _Body(ws, fd, mode)


class _Body:
    """Yields ``b""`` (uWSGI writes the 101), then takes the connection and runs the session."""

    def __init__(self, ws: WebSocket, fd: int, mode: str) -> None:
        self.ws = ws
        self.fd = fd
        self.mode = mode

    def __iter__(self) -> Iterator[bytes]:
        yield b""  # uWSGI writes and flushes the 101 here
        sock = swap_out(self.fd)
        # After the swap the descriptor reads as end of stream: what is read
        # below comes from uWSGI's buffer alone, and the kernel's stays queued
        # on the moved connection, in order after it.
        head = read_head(self.fd)
        session = self.ws.session
        if self.mode == "hand over":
            _note_handed_over()
            hand_over(self.ws, sock, head)
            return
        if self.mode == "greenlet":  # a gevent socket of uWSGI's hub (this thread's)
            import gevent.socket

            session.attach(gevent.socket.socket(fileno=sock.detach()), head)
            return
        sock.setblocking(True)  # uWSGI's sockets are non-blocking; this thread blocks on it
        session.attach(sock, head, inline=True)


# -- the bytes uWSGI read past the request headers ---------------------------------


def read_head(fd: int) -> bytes:
    """What uWSGI's parser read past the request's headers on ``fd`` (``proto_parser_remains``).

    uWSGI reads a request in chunks, so a client's first frame sent in the
    handshake's packet may be in its buffer rather than in the socket. Python
    has no API for those bytes; uWSGI's C functions do, and its binary exports
    them: ``*_current_wsgi_req()`` (the calling core's ``struct
    wsgi_request``, which starts with its ``int fd``) and
    ``uwsgi_proto_base_read_body(wsgi_req, buf, len)``, which hands out the
    buffered remainder first and then ``read()``\\ s the descriptor. Called
    after :func:`~takeover._io.handover.swap_out`, that read meets the dead
    socket's end of stream, so the loop ends when the buffer is empty.

    They are called through ``ctypes.PyDLL`` (the GIL stays held: the gevent
    variant calls back into Python). Each step is checked — the symbols
    exist, the request's descriptor is ``fd`` — and any failure gives
    ``b""`` and a debug log, never an error: then the bytes that were
    buffered are lost and the client's first frame goes unanswered.
    """
    try:
        request = _current_request()
        if request is None:
            return b""
        found = ctypes.c_int.from_address(request).value
        if found != fd:
            logger.debug("uWSGI head bytes not read: the current request's fd is %d, not %d", found, fd)
            return b""
        read_body = _lib().uwsgi_proto_base_read_body
        read_body.restype = ctypes.c_ssize_t
        read_body.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        buffer = ctypes.create_string_buffer(_CHUNK)
        chunks: list[bytes] = []
        taken = 0
        while taken < HEAD_LIMIT:
            count = read_body(request, buffer, _CHUNK)
            if count <= 0:
                break
            chunks.append(buffer.raw[:count])
            taken += count
        return b"".join(chunks)
    except Exception:
        logger.debug("uWSGI head bytes not read", exc_info=True)
        return b""


_current_request_function: Any = None


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.PyDLL:
    return ctypes.PyDLL(None)  # the running uWSGI binary and what it loaded


def _current_request() -> int | None:
    """The address of the calling core's ``struct wsgi_request``, or None (logged) if unknown."""
    global _current_request_function
    if _current_request_function is None:
        import uwsgi

        name = _current_request_symbol(_loop_engine(uwsgi), _option_int(uwsgi.opt, "threads"))
        if name is None:
            logger.debug("uWSGI head bytes not read: loop engine %r", _loop_engine(uwsgi))
            return None
        function = getattr(_lib(), name)
        function.restype = ctypes.c_void_p
        function.argtypes = []
        _current_request_function = function
    address: int | None = _current_request_function()
    if not address:
        logger.debug("uWSGI head bytes not read: no current request")
        return None
    return address


def _current_request_symbol(engine: str | None, threads: int) -> str | None:
    """The C function that gives the current request for uWSGI's loop engine and thread count."""
    if engine == "gevent":
        return "uwsgi_gevent_current_wsgi_req"
    if engine is None:  # the default loop: one request per thread
        return "threaded_current_wsgi_req" if threads > 1 else "simple_current_wsgi_req"
    return None  # async, ugreen, asyncio...: not tried


def _loop_engine(uwsgi: Any) -> str | None:
    loop = getattr(uwsgi, "loop", None)
    if isinstance(loop, bytes):
        loop = loop.decode("latin-1")
    return loop or None


def _option(options: Any, name: str) -> list[str]:
    """The values of uWSGI option ``name`` (given once, several times, or not at all)."""
    value = options.get(name, options.get(name.encode(), None)) if hasattr(options, "get") else None
    values = value if isinstance(value, list) else [] if value is None else [value]
    return [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values]


def _option_int(options: Any, name: str, default: int = 1) -> int:
    for value in reversed(_option(options, name)):
        try:
            return int(value)
        except ValueError:
            continue
    return default


def _is_tls_socket(fd: int, options: Any) -> bool:
    """Whether the connection on ``fd`` came in on one of uWSGI's TLS sockets (by its local address)."""
    tls = [value.split(",", 1)[0] for name in TLS_SOCKET_OPTIONS for value in _option(options, name)]
    if not tls:
        return False
    probe = _socket.socket(fileno=os.dup(fd))
    try:
        local = probe.getsockname()
    except OSError:
        return False
    finally:
        probe.close()
    if isinstance(local, tuple):
        port = str(local[1])
        return any(address.rpartition(":")[2] == port for address in tls)
    return local in tls


# -- shutdown ---------------------------------------------------------------------

_lock = threading.Lock()
_hooked_pid = 0
_closed_pid = 0
_handed_over_pid = 0  # the process whose I/O loop thread has WebSockets


def _install_exit_hook(uwsgi: Any) -> None:
    """Set ``uwsgi.atexit`` in this worker (once), keeping the application's hook after ours."""
    global _hooked_pid
    with _lock:
        if _hooked_pid == os.getpid():
            return
        _hooked_pid = os.getpid()
        previous = getattr(uwsgi, "atexit", None)

    def at_exit() -> None:
        try:
            close_websockets()
        finally:
            if callable(previous):
                previous()

    uwsgi.atexit = at_exit


def _note_handed_over() -> None:
    global _handed_over_pid
    _handed_over_pid = os.getpid()


def close_websockets(timeout: float = EXIT_TIMEOUT) -> None:
    """Close this worker's open WebSockets with 1001, waiting up to ``timeout`` for each group.

    Called by uWSGI's ``atexit`` hook; once per process (later calls return at once).
    """
    global _closed_pid
    with _lock:
        if _closed_pid == os.getpid():
            return
        _closed_pid = os.getpid()
    try:
        registry.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON, timeout)
    except Exception:
        logger.exception("Closing uWSGI's WebSockets at exit")
    if _handed_over_pid == os.getpid():
        io_loop().stop(timeout)


def _warn_blocking_on_single_thread(has_threads: bool) -> None:
    why = (
        "A WebSocket without a message listener (receive() or 'for message in ws')"
        if has_threads
        else "Python threads are disabled in this uWSGI (no --enable-threads), so every WebSocket"
    )
    warn_once(
        "blocking on a single-threaded uWSGI worker",
        "%s holds this single-threaded uWSGI worker for as long as it is open. Attach listeners"
        " (ws.onmessage = ...), or run uWSGI with --threads N or --gevent N. This is logged once"
        " per process.",
        why,
    )
