"""The hub on several Redis servers: each room on one of them (:mod:`takeover.hub._shards`).

One :class:`~takeover.hub.redis.RedisBroker` per server, each with its own
connections, subscriber and health, and each told which rooms are its own:
it subscribes, catches up and lists presence for those only. Every call about
a room goes to that room's broker, so everything the hub promises for a room
(order, exactly once, ``since``, gaps, presence) is that one server's, as on a
single Redis. A server that goes away takes its rooms with it and nothing
else: the other brokers keep delivering, :meth:`ShardedBroker.health` says
which one is away, and its own warning in the log names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from takeover.hub._broker import Settings
from takeover.hub._local import LocalRoom, Locals
from takeover.hub._resp import Address
from takeover.hub._shards import ShardMap
from takeover.hub._types import Member, Message, Publication
from takeover.hub.redis import RedisBroker

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["ShardedBroker"]


class ShardedBroker:
    """A broker per Redis server; each room's calls go to the broker of its server."""

    def __init__(
        self,
        addresses: Sequence[Address],
        settings: Settings,
        locals_: Locals,
        gap: Callable[[str, int, int], None],
    ) -> None:
        self.map = ShardMap(addresses)
        self.brokers = [
            RedisBroker(address, settings, locals_, gap, owns=self._owner(index))
            for index, address in enumerate(addresses)
        ]

    def _owner(self, index: int) -> Callable[[str], bool]:
        index_of = self.map.index
        return lambda room: index_of(room) == index

    def _for(self, room: str) -> RedisBroker:
        return self.brokers[self.map.index(room)]

    @property
    def healthy(self) -> bool:
        """Whether every server can be reached (:meth:`health` says which cannot)."""
        return all(broker.healthy for broker in self.brokers)

    def health(self) -> dict[str, bool]:
        """For each server, in the order given: whether it can be reached."""
        found: dict[str, bool] = {}
        for broker in self.brokers:
            found.update(broker.health())
        return found

    def shard(self, room: str) -> str:
        """The server ``room`` lives on (its address, as :meth:`health` names it)."""
        return str(self._for(room).address)

    def start(self) -> None:
        for broker in self.brokers:
            broker.start()

    def subscribe(self, room: str, local: LocalRoom, first: bool) -> None:
        self._for(room).subscribe(room, local, first)

    def unsubscribe(self, room: str) -> None:
        self._for(room).unsubscribe(room)

    def publish(self, room: str, data: str | bytes, exclude: tuple[WebSocket, ...] = ()) -> Publication:
        return self._for(room).publish(room, data, exclude)

    def since(self, room: str, since: int) -> tuple[bool, list[Message]]:
        return self._for(room).since(room, since)

    def history(self, room: str, since: int | None) -> list[Message]:
        return self._for(room).history(room, since)

    def add_presence(self, room: str, member_id: str, meta: str) -> None:
        self._for(room).add_presence(room, member_id, meta)

    def remove_presence(self, room: str, member_id: str) -> None:
        self._for(room).remove_presence(room, member_id)

    def presence(self, room: str) -> list[Member]:
        return self._for(room).presence(room)

    def close(self) -> None:
        for broker in self.brokers:
            broker.close()
