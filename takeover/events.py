"""DOM-style events and the ``EventTarget`` behind :class:`takeover.WebSocket`.

Listeners run in the order they were added, the ``on<type>`` attribute taking
the place in that order where it was first assigned (HTML's event handler
attributes). An exception in a listener is logged and does not stop the
others, the connection or the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar, overload

__all__ = ["CloseEvent", "ErrorEvent", "Event", "EventTarget", "MessageEvent"]

logger = logging.getLogger("takeover")


# Events are immutable named tuples: as frozen as a frozen dataclass, and
# several times cheaper to create, which matters once per message.


class Event(NamedTuple):
    """A plain event such as ``open``."""

    type: str


class MessageEvent(NamedTuple):
    """A message: ``data`` is ``str`` for text, ``bytes`` (or ``bytearray``) for binary."""

    data: str | bytes | bytearray
    type: str = "message"


class CloseEvent(NamedTuple):
    """The connection closed. ``was_clean`` is true after a completed close handshake."""

    code: int
    reason: str
    was_clean: bool
    type: str = "close"


class ErrorEvent(NamedTuple):
    """The connection failed; ``error`` is the exception behind it, when there is one."""

    message: str
    error: BaseException | None = None
    type: str = "error"


AnyEvent = Event | MessageEvent | CloseEvent | ErrorEvent
Listener = Callable[[Any], object]
E = TypeVar("E")


class _Entry:
    __slots__ = ("handler", "listener", "once")

    def __init__(self, listener: Listener, once: bool, handler: bool = False) -> None:
        self.listener = listener
        self.once = once
        self.handler = handler  # the on<type> attribute's entry, not an added listener


class EventTarget:
    """``add_event_listener`` / ``remove_event_listener`` / ``dispatch_event``."""

    __slots__ = ("_handlers", "_listeners")

    def __init__(self) -> None:
        self._listeners: dict[str, list[_Entry]] = {}
        self._handlers: dict[str, _Entry] = {}

    def add_event_listener(self, type: str, listener: Listener, *, once: bool = False) -> None:
        """Call ``listener(event)`` for each event of ``type``; only the first if ``once``.

        Adding the same listener twice for a type has no effect, as in the DOM.
        """
        entries = self._listeners.setdefault(type, [])
        if any(entry.listener == listener and not entry.handler for entry in entries):
            return
        entries.append(_Entry(listener, once))

    def remove_event_listener(self, type: str, listener: Listener) -> None:
        """Stop calling ``listener`` for ``type``; unknown listeners are ignored."""
        entries = self._listeners.get(type)
        if entries:
            entries[:] = [e for e in entries if e.handler or e.listener != listener]

    def has_listeners(self, type: str) -> bool:
        """Whether any listener (or ``on<type>`` handler) is registered for ``type``."""
        return bool(self._listeners.get(type))

    def clear_listeners(self) -> None:
        """Drop every listener and handler (after ``close``, no event follows)."""
        self._listeners = {}
        self._handlers = {}

    def dispatch_event(self, event: AnyEvent) -> None:
        """Call the listeners of ``event.type``; log, and go on past, any that raises."""
        entries = self._listeners.get(event.type)
        if not entries:
            return
        if len(entries) == 1 and not entries[0].once:  # the common case, without copies
            try:
                entries[0].listener(event)
            except Exception:
                logger.exception("Exception in a WebSocket %r listener", event.type)
            return
        for entry in tuple(entries):
            if entry.once:
                entries[:] = [e for e in entries if e is not entry]
            try:
                entry.listener(event)
            except Exception:
                logger.exception("Exception in a WebSocket %r listener", event.type)

    def _set_handler(self, type: str, handler: Listener | None) -> None:
        # HTML: the handler keeps the place of its first assignment; None removes it.
        entry = self._handlers.get(type)
        if handler is None:
            if entry is not None:
                del self._handlers[type]
                entries = self._listeners.get(type, [])
                entries[:] = [e for e in entries if e is not entry]
            return
        if entry is None:
            entry = self._handlers[type] = _Entry(handler, False, handler=True)
            self._listeners.setdefault(type, []).append(entry)
        else:
            entry.listener = handler

    def _get_handler(self, type: str) -> Listener | None:
        entry = self._handlers.get(type)
        return None if entry is None else entry.listener


class handler_attribute(Generic[E]):
    """The ``on<type>`` attribute of an :class:`EventTarget` subclass."""

    def __init__(self, type: str) -> None:
        self.type = type

    @overload
    def __get__(self, obj: None, owner: type) -> handler_attribute[E]: ...

    @overload
    def __get__(self, obj: EventTarget, owner: type) -> Callable[[E], object] | None: ...

    def __get__(self, obj: EventTarget | None, owner: type) -> Any:
        if obj is None:
            return self
        return obj._get_handler(self.type)

    def __set__(self, obj: EventTarget, handler: Callable[[E], object] | None) -> None:
        obj._set_handler(self.type, handler)
