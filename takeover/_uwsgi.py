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
* **Where the session runs** was decided at the upgrade
  (:func:`~takeover._io.loop.loop_for_caller`). Under ``--gevent N``, in a
  greenlet of uWSGI's own hub: the request returns, so the WebSocket holds
  none of the N cores (uWSGI's bound on requests in progress) and does not
  count as a running request when uWSGI reloads gracefully. Under threads or
  processes, in takeover's I/O loop thread, whatever its style (listeners, or
  ``receive()`` from any thread): the request's thread returns at once. That
  loop needs Python threads: without ``--enable-threads`` (or ``--threads``)
  the upgrade is refused with :class:`~takeover.errors.UnsupportedServerError`.
* **Shutdown.** uWSGI runs ``uwsgi.atexit`` in each worker that stops or
  reloads (in the gevent loop it does not run Python's ``atexit``): the hook
  installed here (chaining the application's, if it set one first) closes the
  worker's WebSockets with 1001 and waits up to :data:`EXIT_TIMEOUT` seconds
  for their close handshakes. uWSGI's Python plugin skips that hook in a
  threads or processes worker that has a request in progress when it exits
  (SIGINT, or SIGTERM with ``--die-on-term``); a WebSocket no longer is one.
  Its gevent loop calls the hook when its hub is done, busy or not.

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
from typing import Any

from takeover._io.handover import ServerConnection, swap_out
from takeover._io.loop import EXIT_TIMEOUT, stop_io_loop
from takeover._io.registry import Registry
from takeover.errors import UnsupportedServerError
from takeover.protocol.frames import SHUTDOWN_REASON, CloseCode

__all__ = ["EXIT_TIMEOUT", "close_websockets", "connection_for", "is_uwsgi", "read_head", "registry"]

logger = logging.getLogger("takeover")

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


def connection_for(environ: dict[str, Any]) -> ServerConnection:
    """How uWSGI gives up this request's connection: it writes the 101, then the connection is swapped out."""
    import uwsgi

    fd = uwsgi.connection_fd()
    if _is_tls_socket(fd, uwsgi.opt):
        raise UnsupportedServerError(
            "uWSGI terminates TLS on this socket itself (--https-socket, --ssl-socket), so the"
            " connection cannot be taken over: terminate TLS in nginx (uwsgi_pass to --socket)"
            " or serve plain HTTP (--http-socket)"
        )
    gevent_loop = _loop_engine(uwsgi) == "gevent"
    if not gevent_loop and not getattr(uwsgi, "has_threads", True):
        raise UnsupportedServerError(
            "Python threads are disabled in this uWSGI (no --enable-threads), and takeover's I/O loop"
            " runs in a thread of its own: run uWSGI with --enable-threads (or --threads N), or"
            " with --gevent N"
        )
    _install_exit_hook(uwsgi)

    def take() -> tuple[Any, bytes]:
        sock = swap_out(fd)
        # After the swap the descriptor reads as end of stream: what is read
        # below comes from uWSGI's buffer alone, and the kernel's stays queued
        # on the moved connection, in order after it.
        return sock, read_head(fd)

    if not gevent_loop:
        _note_handed_over()
    # Under --gevent the session lives in uWSGI's own hub: this worker's registry,
    # closed by the exit hook. Else in takeover's I/O loop, whose registry that hook closes too.
    return ServerConnection(take, server_writes_101=True, registry=registry if gevent_loop else None)


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
        stop_io_loop(timeout)
