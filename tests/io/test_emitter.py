"""``takeover.emitter.EventEmitter``: node:events' ``on``, ``once``, ``off``, ``emit`` and
``listener_count``, with Node's semantics where Node defines them.

Node's documentation (https://nodejs.org/api/events.html) says: listeners are
called synchronously in the order they were added; the same listener may be
added more than once and is then called once per addition; ``removeListener``
removes at most one instance, the most recently added; a ``once`` listener is
removed before it is called; ``emit`` returns whether the event had listeners;
listeners added or removed during an ``emit`` do not change that ``emit``.
"""

from __future__ import annotations

from typing import Any

import pytest

from takeover.emitter import EventEmitter


class Log:
    """Listeners that append ``(name, args)`` to one shared list."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def listener(self, name: str) -> Any:
        def listen(*args: Any) -> None:
            self.calls.append((name, args))

        return listen


def test_listeners_are_called_in_the_order_they_were_added_with_the_arguments() -> None:
    emitter, log = EventEmitter(), Log()
    emitter.on("data", log.listener("a"))
    emitter.on("data", log.listener("b"))
    emitter.on("data", log.listener("c"))
    assert emitter.emit("data", 1, "two", None) is True
    assert log.calls == [("a", (1, "two", None)), ("b", (1, "two", None)), ("c", (1, "two", None))]
    assert emitter.emit("data") is True
    assert log.calls[3:] == [("a", ()), ("b", ()), ("c", ())]


def test_emit_without_listeners_returns_false() -> None:
    emitter = EventEmitter()
    assert emitter.emit("nothing") is False
    emitter.on("other", lambda: None)
    assert emitter.emit("nothing", 1) is False


def test_events_are_independent() -> None:
    emitter, log = EventEmitter(), Log()
    emitter.on("a", log.listener("a"))
    emitter.on("b", log.listener("b"))
    emitter.emit("a", 1)
    assert log.calls == [("a", (1,))]
    assert [emitter.listener_count(event) for event in ("a", "b", "c")] == [1, 1, 0]


def test_on_once_and_off_return_the_emitter_for_chaining() -> None:
    emitter, log = EventEmitter(), Log()
    a, b = log.listener("a"), log.listener("b")
    assert emitter.on("x", a).once("x", b).off("x", a) is emitter
    assert emitter.emit("x") is True
    assert log.calls == [("b", ())]


def test_the_same_listener_added_twice_is_called_twice() -> None:
    emitter, log = EventEmitter(), Log()
    a = log.listener("a")
    emitter.on("x", a)
    emitter.on("x", a)
    assert emitter.listener_count("x") == 2
    emitter.emit("x")
    assert log.calls == [("a", ()), ("a", ())]


def test_off_removes_only_the_most_recently_added_instance() -> None:
    emitter, log = EventEmitter(), Log()
    a, b = log.listener("a"), log.listener("b")
    emitter.on("x", a)  # a, b, a: off(a) leaves a, b
    emitter.on("x", b)
    emitter.on("x", a)
    emitter.off("x", a)
    assert emitter.listener_count("x") == 2
    emitter.emit("x")
    assert log.calls == [("a", ()), ("b", ())]
    emitter.off("x", a)
    emitter.off("x", a)  # no instance left: nothing happens
    log.calls.clear()
    emitter.emit("x")
    assert log.calls == [("b", ())]


def test_off_of_an_unknown_listener_or_event_is_a_no_op() -> None:
    emitter, log = EventEmitter(), Log()
    a = log.listener("a")
    emitter.on("x", a)
    assert emitter.off("x", log.listener("other")) is emitter
    assert emitter.off("never", a) is emitter
    assert emitter.listener_count("x") == 1 and emitter.listener_count("never") == 0


def test_once_is_called_on_the_next_emit_only() -> None:
    emitter, log = EventEmitter(), Log()
    emitter.once("x", log.listener("once"))
    assert emitter.listener_count("x") == 1
    assert emitter.emit("x", 1) is True
    assert emitter.listener_count("x") == 0
    assert emitter.emit("x", 2) is False
    assert log.calls == [("once", (1,))]


def test_a_once_listener_keeps_its_place_in_the_order() -> None:
    emitter, log = EventEmitter(), Log()
    emitter.on("x", log.listener("a"))
    emitter.once("x", log.listener("once"))
    emitter.on("x", log.listener("c"))
    emitter.emit("x")
    emitter.emit("x")
    assert [name for name, _ in log.calls] == ["a", "once", "c", "a", "c"]


def test_a_once_listener_is_removed_before_it_is_called() -> None:
    """Node removes it first: an emit of the same event from inside it does not call it again."""
    emitter = EventEmitter()
    calls: list[int] = []

    def listener(depth: int) -> None:
        calls.append(depth)
        assert emitter.listener_count("x") == 0
        if depth < 3:
            emitter.emit("x", depth + 1)

    emitter.once("x", listener)
    emitter.emit("x", 1)
    assert calls == [1]


def test_a_once_listener_that_raises_is_removed_all_the_same() -> None:
    emitter = EventEmitter()

    def boom() -> None:
        raise RuntimeError("boom")

    emitter.once("x", boom)
    with pytest.raises(RuntimeError, match="boom"):
        emitter.emit("x")
    assert emitter.listener_count("x") == 0
    assert emitter.emit("x") is False


def test_off_removes_a_once_listener_by_the_function_given_to_once() -> None:
    emitter, log = EventEmitter(), Log()
    a = log.listener("a")
    emitter.once("x", a)
    emitter.off("x", a)
    assert emitter.listener_count("x") == 0
    assert emitter.emit("x") is False
    assert log.calls == []


def test_off_finds_the_most_recent_of_on_and_once_instances() -> None:
    emitter, log = EventEmitter(), Log()
    a = log.listener("a")
    emitter.on("x", a)
    emitter.once("x", a)
    emitter.off("x", a)  # the once, added last
    emitter.emit("x")
    emitter.emit("x")
    assert log.calls == [("a", ()), ("a", ())]


def test_listeners_added_during_an_emit_are_not_called_by_it() -> None:
    emitter, log = EventEmitter(), Log()
    late = log.listener("late")

    def adder() -> None:
        log.calls.append(("adder", ()))
        emitter.on("x", late)

    emitter.on("x", adder)
    emitter.emit("x")
    assert log.calls == [("adder", ())]
    log.calls.clear()
    emitter.emit("x")
    assert log.calls == [("adder", ()), ("late", ())]


def test_listeners_removed_during_an_emit_are_still_called_by_it() -> None:
    emitter, log = EventEmitter(), Log()
    b = log.listener("b")

    def remover() -> None:
        log.calls.append(("remover", ()))
        emitter.off("x", b)

    emitter.on("x", remover)
    emitter.on("x", b)
    emitter.emit("x")
    assert log.calls == [("remover", ()), ("b", ())]
    log.calls.clear()
    emitter.emit("x")
    assert log.calls == [("remover", ())]


def test_an_exception_propagates_to_the_caller_and_stops_the_emit() -> None:
    emitter, log = EventEmitter(), Log()

    def boom(*args: Any) -> None:
        raise ValueError(args)

    emitter.on("x", log.listener("a"))
    emitter.on("x", boom)
    emitter.on("x", log.listener("c"))
    with pytest.raises(ValueError):
        emitter.emit("x", 1)
    assert log.calls == [("a", (1,))]
    assert emitter.listener_count("x") == 3  # nothing was removed


def test_bound_methods_are_removed_by_an_equal_bound_method() -> None:
    """``obj.method`` is a new object at each access: ``off`` compares listeners by equality."""

    class Handler:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def on_data(self, data: Any) -> None:
            self.seen.append(data)

    emitter, handler = EventEmitter(), Handler()
    emitter.on("data", handler.on_data)
    emitter.emit("data", 1)
    emitter.off("data", handler.on_data)
    assert emitter.emit("data", 2) is False
    assert handler.seen == [1]
    emitter.once("data", handler.on_data)
    emitter.off("data", handler.on_data)
    assert emitter.listener_count("data") == 0


def test_add_listener_and_remove_listener_are_on_and_off() -> None:
    emitter, log = EventEmitter(), Log()
    a = log.listener("a")
    assert emitter.add_listener("x", a) is emitter
    emitter.emit("x")
    assert emitter.remove_listener("x", a) is emitter
    assert emitter.emit("x") is False
    assert log.calls == [("a", ())]


def test_listener_count_counts_every_kind() -> None:
    emitter = EventEmitter()
    assert emitter.listener_count("x") == 0
    emitter.on("x", lambda: None)
    emitter.once("x", lambda: None)
    emitter.on("x", print)
    assert emitter.listener_count("x") == 3
    emitter.off("x", print)
    assert emitter.listener_count("x") == 2


def test_subclasses_emit_their_own_events() -> None:
    """The server and the WebSocket are emitters: each instance has its own listeners."""

    class Server(EventEmitter):
        pass

    first, second, log = Server(), Server(), Log()
    first.on("connection", log.listener("first"))
    assert second.emit("connection") is False
    assert first.emit("connection", "sock") is True
    assert log.calls == [("first", ("sock",))]
