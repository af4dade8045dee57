"""``WebSocketOptions``: every per-connection option, its default and its validation, in one place.

A server builds one from its settings (``create_server(idle_timeout=...)``,
``takeover serve --idle-timeout``, the legacy handler's class attributes) and
puts it in each request's environ under :data:`OPTIONS_KEY`;
:func:`takeover.upgrade_websocket` starts from that object (or from
:data:`DEFAULT_OPTIONS` when no server set one) and applies the arguments its
caller passed. Defaults are written here and nowhere else.

The object is frozen: :meth:`WebSocketOptions.replace` makes a changed copy,
checking the new values as the constructor does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from takeover.protocol.connection import DEFAULT_MAX_MESSAGE_SIZE
from takeover.protocol.deflate import DeflateOptions
from takeover.protocol.origin import OriginPolicy, origin_policy

__all__ = [
    "DEFAULT_HANDLER_THREADS",
    "DEFAULT_HIGH_WATER_MARK",
    "DEFAULT_LISTENER_THREADS",
    "DEFAULT_MAX_BUFFERED_AMOUNT",
    "DEFAULT_OPTIONS",
    "OPTIONS_KEY",
    "UNSET",
    "Compression",
    "WebSocketOptions",
    "compression_options",
]

#: The environ key under which a server leaves its :class:`WebSocketOptions`.
OPTIONS_KEY = "takeover.options"
#: ``send()`` waits while more than this many bytes are queued for the peer.
DEFAULT_HIGH_WATER_MARK = 1024 * 1024
#: A connection with more than this many bytes queued behind the frame in flight is closed with 1008.
DEFAULT_MAX_BUFFERED_AMOUNT = 16 * 1024 * 1024
#: Threads that run the listeners of handed-over WebSockets.
DEFAULT_LISTENER_THREADS = 16
#: Blocking handlers (``handler=``, Flask-Sock routes) that may run at once in threads of a process.
DEFAULT_HANDLER_THREADS = 1000

#: What ``compression`` accepts: None (off), ``"deflate"`` or :class:`DeflateOptions`.
Compression = str | DeflateOptions | None


class _Unset:
    """The one "not given" marker: the option keeps the server's (or the default) value."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: The default of every option argument: "use the server's setting, else the default".
UNSET: Final[Any] = _Unset()


def compression_options(compression: Compression) -> DeflateOptions | None:
    """``compression`` as :class:`DeflateOptions`: None (off), ``"deflate"`` or options.

    Raises :class:`ValueError` for anything else.
    """
    if compression is None or isinstance(compression, DeflateOptions):
        return compression
    if compression == "deflate":
        return DeflateOptions()
    raise ValueError(
        f"Invalid compression {compression!r}: use None, \"deflate\" or a takeover.DeflateOptions"
    )


def _size(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be 0 or more bytes, or None, not {value!r}")


def _seconds(name: str, value: object, *, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive number of seconds{none}, not {value!r}")


@dataclasses.dataclass(frozen=True)
class WebSocketOptions:
    """The options of one WebSocket connection (see :func:`takeover.upgrade_websocket`).

    ``compression`` may be given as ``"deflate"`` and ``allowed_origins`` as a
    list or a function: both are stored checked and normalised
    (:class:`DeflateOptions` and :class:`~takeover.protocol.origin.OriginPolicy`).
    ``idle_timeout`` of 0 means None (no idle timeout), as in Deno.
    """

    #: Ping after half of this many seconds of silence, close with 1001 after all of it (None: never).
    idle_timeout: float | None = 30.0
    #: Messages over this many bytes close the connection with 1009 (None: no limit).
    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds to wait for the peer's answer to our close frame before closing TCP.
    close_timeout: float = 10.0
    #: Messages queued for ``receive()`` before reading pauses.
    max_queue: int = 64
    #: permessage-deflate settings (RFC 7692), or None for no compression.
    compression: DeflateOptions | None = None
    #: The origins whose pages may connect (others get 403), or None: no check.
    allowed_origins: OriginPolicy | None = None
    #: ``send()`` waits while more than this many bytes are queued (None: never waits).
    high_water_mark: int | None = DEFAULT_HIGH_WATER_MARK
    #: Seconds ``send()`` waits for the queue to drain before raising TimeoutError.
    send_timeout: float | None = 30.0
    #: Bytes that may be queued behind the frame being written; more closes with 1008.
    max_buffered_amount: int | None = DEFAULT_MAX_BUFFERED_AMOUNT
    #: Threads that run the listeners of WebSockets handed over to takeover's I/O loop
    #: (threaded servers: gunicorn sync/gthread, uWSGI, Werkzeug). The process has one
    #: pool, sized by the first such WebSocket.
    listener_threads: int = DEFAULT_LISTENER_THREADS
    #: Blocking handlers (``upgrade_websocket(handler=)``, ``takeover.flask_sock`` routes) that
    #: may run at once, each in a thread of its own, on threaded servers; an upgrade beyond
    #: it is answered 503. The process has one cap, set by the first such WebSocket.
    handler_threads: int = DEFAULT_HANDLER_THREADS

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise in place, once
        if self.idle_timeout is not None and not self.idle_timeout:
            set_(self, "idle_timeout", None)
        _seconds("idle_timeout", self.idle_timeout)
        _size("max_message_size", self.max_message_size)
        if not self.max_message_size:
            set_(self, "max_message_size", None)
        _seconds("close_timeout", self.close_timeout, allow_none=False)
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ValueError(f"max_queue must be a number of messages >= 1, not {self.max_queue!r}")
        set_(self, "compression", compression_options(self.compression))
        set_(self, "allowed_origins", origin_policy(self.allowed_origins))
        _size("high_water_mark", self.high_water_mark)
        _seconds("send_timeout", self.send_timeout)
        _size("max_buffered_amount", self.max_buffered_amount)
        for name in ("listener_threads", "handler_threads"):
            threads = getattr(self, name)
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"{name} must be a number of threads >= 1, not {threads!r}")

    def replace(self, **changes: Any) -> WebSocketOptions:
        """A copy with ``changes`` applied; arguments that are :data:`UNSET`, or equal to ours, are left out.

        So an upgrade that passes the values it already has (an app that names
        its defaults) shares this object rather than building and checking a
        new one on every handshake.
        """
        given = {
            name: value for name, value in changes.items()
            if value is not UNSET and value != getattr(self, name)
        }
        return dataclasses.replace(self, **given) if given else self

    @property
    def send_wait_threshold(self) -> int | None:
        """Queued bytes above which ``send()`` waits: ``high_water_mark``, capped at the hard limit.

        With both set, ``send()`` waits at the lower one rather than overflow
        ``max_buffered_amount``; ``high_water_mark=None`` never waits.
        """
        high, hard = self.high_water_mark, self.max_buffered_amount
        if high is None:
            return None
        return high if hard is None else min(high, hard)


#: The options of a WebSocket no server configured.
DEFAULT_OPTIONS: Final = WebSocketOptions()

