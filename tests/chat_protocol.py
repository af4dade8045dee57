"""examples/chat's JSON protocol, for tests: join, say, expect a message, read up to the close.

The helpers take a connection of either kind the chat's tests use: the
``websockets`` sync client (``recv``), against a server process, or
:class:`takeover.testing.TestWebSocket` (``receive``), in process; and a
*room*, anything whose ``client()`` opens one more connection to the chat.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from websockets.exceptions import ConnectionClosed as ClientClosed

from takeover import ConnectionClosed as TestClosed

Message = dict[str, Any]
WAIT = 10.0

_counter = itertools.count(1)


class Room(Protocol):
    def client(self) -> contextlib.AbstractContextManager[Any]: ...


def unique(prefix: str) -> str:
    """A name or text no other test uses (the room is shared)."""
    return f"{prefix}-{next(_counter)}"


def client(room: Room) -> contextlib.AbstractContextManager[Any]:
    return room.client()


def send(ws: Any, message: Message) -> None:
    ws.send(json.dumps(message))


def receive(ws: Any, timeout: float = WAIT) -> Message:
    """The next message. A room message comes in the hub's envelope: it is returned unwrapped,
    with the envelope's offset under ``"offset"``; a gap envelope as ``{"type": "gap", ...}``."""
    data = ws.recv(timeout=timeout) if hasattr(ws, "recv") else ws.receive(timeout=timeout)
    assert isinstance(data, str), f"the server sent a binary message: {data!r}"
    message: Message = json.loads(data)
    if "room" in message:
        assert message["room"] == "chat", message
        if "gap" in message:
            return {"type": "gap", **message}
        assert set(message) == {"room", "offset", "data"}, message
        inner: Message = json.loads(message["data"])
        assert inner["type"] == "message" and "offset" not in inner, inner
        return {**inner, "offset": message["offset"]}
    assert "type" in message, message
    return message


def expect(ws: Any, match: Callable[[Message], bool], timeout: float = WAIT) -> Message:
    """The next message ``match`` accepts, skipping others (presence, typing, ...)."""
    deadline = time.monotonic() + timeout
    skipped: list[Message] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = receive(ws, max(remaining, 0.001))
        except TimeoutError:
            raise AssertionError(f"no matching message within {timeout:g} s; got {skipped}") from None
        if match(message):
            return message
        skipped.append(message)


def expect_type(ws: Any, kind: str, timeout: float = WAIT) -> Message:
    return expect(ws, lambda message: message["type"] == kind, timeout)


def join(ws: Any, name: str) -> list[Message]:
    """Join as ``name``; return the history, which must be the first answer."""
    send(ws, {"type": "join", "name": name})
    history = receive(ws)
    assert history["type"] == "history", history
    messages: list[Message] = history["messages"]
    return messages


@contextlib.contextmanager
def joined(room: Room, name: str) -> Iterator[Any]:
    """A connection that has joined as ``name`` and seen itself in the presence."""
    with client(room) as ws:
        join(ws, name)
        expect(ws, lambda m: m["type"] == "presence" and name in m["names"])
        yield ws


def say(ws: Any, text: str) -> None:
    send(ws, {"type": "message", "text": text})


def said(text: str) -> Callable[[Message], bool]:
    return lambda message: message["type"] == "message" and message["text"] == text


def closed_with(ws: Any, timeout: float = WAIT) -> tuple[int, str, list[Message]]:
    """Read until the server closes; its close code and reason, and what came before."""
    before: list[Message] = []
    deadline = time.monotonic() + timeout
    with pytest.raises((ClientClosed, TestClosed)) as info:
        while True:
            before.append(receive(ws, max(deadline - time.monotonic(), 0.001)))
    closed = info.value
    if isinstance(closed, TestClosed):
        return closed.code, closed.reason, before
    received = closed.rcvd
    assert received is not None, f"no close frame from the server ({closed})"
    return received.code, received.reason, before


def assert_room_alive(room: Room, bystander: Any) -> None:
    """A newcomer can join and talk, and ``bystander`` (joined earlier) hears it."""
    with joined(room, unique("newcomer")) as newcomer:
        text = unique("still here")
        say(newcomer, text)
        expect(newcomer, said(text))
        expect(bystander, said(text))
