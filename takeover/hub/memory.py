"""``memory://``: the hub in one process, with nothing to run.

Offsets, history and presence work as on Redis (see :mod:`takeover.hub.redis`),
kept in this process: a room's first message starts an *epoch* whose first
offset is the time in microseconds, so an offset from before a restart of the
process is never taken for one of this run.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING

from takeover.hub._broker import Settings
from takeover.hub._local import LocalRoom, Locals
from takeover.hub._types import Member, Message, Publication

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["MemoryBroker", "epoch_start"]


def epoch_start() -> int:
    """The first offset of a new epoch: now, in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


class _Log:
    __slots__ = ("last", "messages", "touched")

    def __init__(self, history: int) -> None:
        self.last = epoch_start() - 1
        self.messages: collections.deque[Message] = collections.deque(maxlen=history)
        self.touched = time.monotonic()


class MemoryBroker:
    """Every room's offsets and retained messages, in this process."""

    healthy = True

    def __init__(self, settings: Settings, locals_: Locals) -> None:
        self.settings = settings
        self.locals = locals_
        self._logs: dict[str, _Log] = {}

    def start(self) -> None:
        pass

    def health(self) -> dict[str, bool]:
        return {"memory://": True}

    def shard(self, room: str) -> str:
        return "memory://"

    def subscribe(self, room: str, local: LocalRoom, first: bool) -> None:
        pass

    def unsubscribe(self, room: str) -> None:
        pass

    def _log(self, room: str, create: bool) -> _Log | None:
        log = self._logs.get(room)
        if log is not None and time.monotonic() - log.touched > self.settings.history_ttl:
            del self._logs[room]  # expired, as the stream and the offset on Redis do
            log = None
        if log is None and create:
            log = self._logs[room] = _Log(self.settings.history)
        return log

    def publish(self, room: str, data: str | bytes, exclude: tuple[WebSocket, ...] = ()) -> Publication:
        if not self.settings.history:
            self.locals.deliver(room, None, data, exclude, time.time())
            return Publication(None, True)
        log = self._log(room, create=True)
        assert log is not None
        log.last += 1
        log.touched = time.monotonic()
        log.messages.append(Message(log.last, data))
        self.locals.deliver(room, log.last, data, exclude, time.time())
        return Publication(log.last, True)

    def since(self, room: str, since: int) -> tuple[bool, list[Message]]:
        log = self._log(room, create=False)
        if log is None or since > log.last:
            return False, []
        if since == log.last:
            return True, []
        after = [message for message in log.messages if message.offset > since]
        if not after or after[0].offset != since + 1:
            return False, []  # trimmed, or from another epoch
        return True, after

    def history(self, room: str, since: int | None) -> list[Message]:
        log = self._log(room, create=False)
        if log is None:
            return []
        return [m for m in log.messages if since is None or m.offset > since]

    def add_presence(self, room: str, member_id: str, meta: str) -> None:
        pass  # the members are the process's own: Locals has them

    def remove_presence(self, room: str, member_id: str) -> None:
        pass

    def presence(self, room: str) -> list[Member]:
        import json

        return [Member(member_id, json.loads(meta)) for member_id, meta in self.locals.members_here(room)]

    def close(self) -> None:
        self._logs.clear()
