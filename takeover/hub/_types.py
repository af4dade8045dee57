"""The hub's values and the checks on what callers pass in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_ROOM", "Member", "Message", "Publication", "check_data", "check_room", "dump_meta"]

#: The longest room name, in characters.
MAX_ROOM = 200


@dataclass(frozen=True, slots=True)
class Publication:
    """What :meth:`Hub.publish` did with a message.

    ``offset`` is the message's place in its room (one more than the one
    before it), or None when the hub keeps no history or the broker did not
    take the message. ``remote`` is whether the broker took it, so that other
    processes get it (always True on ``memory://``, which has no others).
    """

    offset: int | None
    remote: bool


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a room in some process: its ``id`` and the ``meta`` it joined with."""

    id: str
    meta: Any


@dataclass(frozen=True, slots=True)
class Message:
    """A retained message: its ``offset`` in the room and its ``data`` (``str`` is text, ``bytes`` binary)."""

    offset: int
    data: str | bytes


def check_room(room: object) -> str:
    """``room`` if it is a non-empty ``str`` of at most :data:`MAX_ROOM` characters."""
    if not isinstance(room, str):
        raise TypeError(f"room must be a str, not {type(room).__name__}")
    if not room:
        raise ValueError("room must not be empty")
    if len(room) > MAX_ROOM:
        raise ValueError(f"room must be at most {MAX_ROOM} characters, not {len(room)}")
    return room


def check_data(data: object) -> str | bytes:
    """``data`` as ``str`` (a text message) or ``bytes`` (a binary one)."""
    if isinstance(data, (str, bytes)):
        if isinstance(data, str):
            data.encode("utf-8")  # lone surrogates cannot go out as text: UnicodeEncodeError, a ValueError
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be str or bytes, not {type(data).__name__}")


def check_since(since: object) -> int | None:
    """``since`` if it is None or an int offset."""
    if since is None or (isinstance(since, int) and not isinstance(since, bool)):
        return since
    raise TypeError(f"since must be an int offset or None, not {type(since).__name__}")


def dump_meta(meta: object) -> str:
    """``meta`` as JSON text; ``TypeError``/``ValueError`` naming ``meta`` if it does not serialise."""
    try:
        return json.dumps(meta, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise type(error)(f"meta must be JSON-serialisable: {error}") from None
