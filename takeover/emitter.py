"""A small ``EventEmitter`` with node:events' names: on, once, off, emit, listener_count."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

__all__ = ["EventEmitter"]

logger = logging.getLogger("takeover")

Listener = Callable[..., object]


class _Once:
    __slots__ = ("emitter", "event", "listener")

    def __init__(self, emitter: EventEmitter, event: str, listener: Listener) -> None:
        self.emitter = emitter
        self.event = event
        self.listener = listener

    def __call__(self, *args: Any) -> object:
        self.emitter.off(self.event, self)
        return self.listener(*args)


class EventEmitter:
    """Listeners by event name, called synchronously in the order they were added."""

    def __init__(self) -> None:
        self._events: dict[str, list[Listener]] = {}

    def on(self, event: str, listener: Listener) -> EventEmitter:
        """Call ``listener(*args)`` on every ``emit(event, *args)``; returns ``self``."""
        self._events.setdefault(event, []).append(listener)
        return self

    add_listener = on

    def once(self, event: str, listener: Listener) -> EventEmitter:
        """Like :meth:`on`, for the next emit only."""
        return self.on(event, _Once(self, event, listener))

    def off(self, event: str, listener: Listener) -> EventEmitter:
        """Remove the most recently added instance of ``listener`` (as node:events does)."""
        listeners = self._events.get(event, [])
        for index in range(len(listeners) - 1, -1, -1):
            candidate = listeners[index]
            if candidate == listener or (isinstance(candidate, _Once) and candidate.listener == listener):
                del listeners[index]
                break
        return self

    remove_listener = off

    def listener_count(self, event: str) -> int:
        """How many listeners ``event`` has."""
        return len(self._events.get(event, ()))

    def emit(self, event: str, *args: Any) -> bool:
        """Call each listener of ``event`` with ``args``; True if there was any.

        Unlike Node, where a throwing listener crashes the process, an
        exception propagates to the caller, which decides what it means for
        the connection (the server logs it and closes that socket only). An
        ``"error"`` event without listeners returns False too, where Node throws.
        """
        listeners = self._events.get(event)
        if not listeners:
            return False
        for listener in tuple(listeners):
            listener(*args)
        return True
