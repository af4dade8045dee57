"""The hub on a Redis Cluster: ``Hub("redis+cluster://HOST:PORT[,HOST:PORT...]")``.

A room's keys carry the room as a hash tag (``takeover:meta:{ROOM}``, ...:
:class:`~takeover.hub._scripts.KeyScheme`), so they and its shard channel
share one slot: its publish stays one script on one node, which ends in
``SPUBLISH``, and each process subscribes with ``SSUBSCRIBE`` on the node that
owns the slot (sharded pub/sub, Redis >= 7). Each master node gets one
:class:`~takeover.hub.redis.RedisBroker`, which serves the rooms whose slot
that node owns, with everything a single Redis gives (offsets, exactly once,
``since``, gaps, presence, health).

The map of slots to masters comes from ``CLUSTER SLOTS``, asked of any node
that answers (the seeds first). A node that answers ``ASK`` (its slot is
being migrated and the room's keys have moved) is followed at once: the call
is made on the importing node, each command after ``ASKING``. The map is
asked again when a node answers ``MOVED`` (the call is then made again on the
new owner), ``TRYAGAIN`` or ``CLUSTERDOWN`` (the call is tried again, briefly,
while a slot migrates or a failover completes), when a node unsubscribes a shard
channel of a room that still has members here (Redis 7 does so for the slots
a node loses), and every ``health_check_interval`` while any node is away.
When a node's rooms change, its broker subscribes again from the start and
catches up from the streams, as after a reconnect: a room that moved (a
migrated slot, a failover to a replica) misses nothing the cluster kept, and
what it lost is reported through the hub's ``"gap"`` event.

Why not redis-py's ``RedisCluster``: the hub lives in a gevent loop that, on
threaded servers, is a thread of a process that is not monkey-patched; redis-py's
cluster client does its I/O on blocking sockets under thread locks, which would
stop every WebSocket of that loop for each round trip (see
:mod:`takeover.hub._resp`). What a cluster adds to the hub's own client is
small: a slot map, redirections, one connection per node. The slot of a key
is redis-py's ``key_slot`` (CRC16, Redis Cluster specification), so redis-py
is needed (``pip install 'takeover[redis]'``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, unquote

from takeover.hub._broker import Settings
from takeover.hub._local import LocalRoom, Locals
from takeover.hub._resp import Address, BrokerError, Commands, Redirect, ReplyError, asking
from takeover.hub._scripts import KeyScheme
from takeover.hub._types import Member, Message, Publication
from takeover.hub.redis import RedisBroker

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["ClusterBroker", "is_cluster_url", "parse_cluster_url"]

logger = logging.getLogger("takeover.hub")
T = TypeVar("T")

SCHEMES = ("redis+cluster", "rediss+cluster")
SLOTS = 16384
#: Seconds a call keeps trying while its slot migrates or the cluster fails over (ASK, TRYAGAIN,
#: CLUSTERDOWN, MOVED to a node not known yet), with a fresh map between tries.
REDIRECT_PATIENCE = 5.0


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in SCHEMES


def parse_cluster_url(url: str) -> list[Address]:
    """The seed nodes of ``redis+cluster://[user:password@]HOST:PORT[,HOST:PORT...][?ssl_...]``."""
    scheme, _, rest = url.partition("://")
    if scheme not in SCHEMES:
        raise ValueError(f"a Redis Cluster URL is redis+cluster:// or rediss+cluster://, not {url!r}")
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, not {path!r}: {url!r}")
    query = {key: values[-1] for key, values in parse_qs(query_text).items()}
    login, _, hosts = netloc.rpartition("@")
    username = password = None
    if login:
        user, has_password, secret = login.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if has_password else None)
    seeds = []
    for item in hosts.split(","):
        host, _, port_text = item.strip().rpartition(":")
        if not host or not port_text.isdigit():
            raise ValueError(f"a Redis Cluster URL lists HOST:PORT seed nodes, not {item!r}: {url!r}")
        seeds.append(
            Address(
                host=host.strip("[]"), port=int(port_text), username=username, password=password,
                tls=scheme == "rediss+cluster",
                verify=query.get("ssl_cert_reqs", "required").lower() not in ("none", "cert_none"),
                ca_certs=query.get("ssl_ca_certs"),
            )
        )
    return seeds


def _key_slot(key: str) -> int:
    try:
        from redis.crc import key_slot
    except ImportError:
        raise ImportError("a hub on a Redis Cluster needs redis-py: pip install 'takeover[redis]'") from None
    slot: int = key_slot(key.encode("utf-8"))
    return slot


class ClusterBroker:
    """A :class:`RedisBroker` per master node; each room's calls go to the node of its slot."""

    def __init__(
        self, seeds: list[Address], settings: Settings, locals_: Locals, gap: Callable[[str, int, int], None]
    ) -> None:
        import gevent.event
        import gevent.lock

        self._refreshing = gevent.lock.Semaphore()
        self.seeds = seeds
        self.settings = settings
        self.locals = locals_
        self._gap = gap
        self.scheme = KeyScheme(settings.prefix, cluster=True)
        self._slots: list[tuple[str, int] | None] = [None] * SLOTS
        self.brokers: dict[tuple[str, int], RedisBroker] = {}
        self._room_slots: dict[str, int] = {}
        self._stale = gevent.event.Event()  # set: ask for the map again now
        self._mapped = gevent.event.Event()  # set once a first map is known
        self._closed = False

    # -- the map --------------------------------------------------------------------

    def slot(self, room: str) -> int:
        found = self._room_slots.get(room)
        if found is None:
            found = _key_slot(self.scheme.keys(room)[0])
            if len(self._room_slots) >= 65_536:
                self._room_slots.clear()
            self._room_slots[room] = found
        return found

    def _node(self, room: str) -> tuple[str, int] | None:
        return self._slots[self.slot(room)]

    def _owner(self, node: tuple[str, int]) -> Callable[[str], bool]:
        return lambda room: self._node(room) == node

    def _address(self, node: tuple[str, int]) -> Address:
        seed = self.seeds[0]
        return Address(
            host=node[0], port=node[1], username=seed.username, password=seed.password, tls=seed.tls,
            verify=seed.verify, ca_certs=seed.ca_certs,
        )

    def _ask_slots(self) -> list[Any]:
        """``CLUSTER SLOTS`` from the first node that answers: the known masters, then the seeds."""
        candidates = [self._address(node) for node in self.brokers] + list(self.seeds)
        errors = []
        for address in candidates:
            commands = Commands(address, self.settings.timeout)
            try:
                reply = commands.call("CLUSTER", "SLOTS")
                if isinstance(reply, list) and reply:
                    return reply
                errors.append(f"{address}: no slots")
            except (BrokerError, ReplyError, OSError) as error:
                errors.append(str(error))
            finally:
                commands.close()
        raise BrokerError("no node of the Redis Cluster answered CLUSTER SLOTS: " + "; ".join(errors))

    def refresh(self) -> bool:
        """Ask for the map; adopt it. Returns whether the owners of any slot changed."""
        with self._refreshing:  # one at a time: the maintainer and calls that were redirected
            return self._refresh()

    def _refresh(self) -> bool:
        slots: list[tuple[str, int] | None] = [None] * SLOTS
        for entry in self._ask_slots():
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            node = (host or self.seeds[0].host, int(master[1]))
            for slot in range(start, end + 1):
                slots[slot] = node
        changed = slots != self._slots
        before = {node: self._rooms_of(node) for node in self.brokers}
        self._slots = slots
        masters = {node for node in slots if node is not None}
        for node in masters - set(self.brokers):
            broker = RedisBroker(
                self._address(node), self.settings, self.locals, self._gap, owns=self._owner(node),
                cluster=self.moved,
            )
            self.brokers[node] = broker
            broker.start()
            logger.info("hub: Redis Cluster master %s:%d serves slots of this hub", *node)
        for node in set(self.brokers) - masters:
            logger.info("hub: %s:%d is no longer a master of the Redis Cluster", *node)
            self.brokers.pop(node).close()
        for node, rooms in before.items():
            kept = self.brokers.get(node)
            if kept is not None and rooms != self._rooms_of(node):
                kept.restart()  # rooms came or went: subscribe again and catch up
        self._mapped.set()
        return changed

    def _rooms_of(self, node: tuple[str, int]) -> frozenset[str]:
        return frozenset(room for room in self.locals.rooms if self._node(room) == node)

    def moved(self, what: str) -> None:
        """A node said the slots moved (a broker's callback): ask for the map soon."""
        logger.info("hub: %s; asking the Redis Cluster for its slots again", what)
        self._stale.set()

    def _maintain(self) -> None:
        """Keep the map: now, on a redirect, every health check interval while a node is away,
        and every 30 of them otherwise."""
        interval = self.settings.health_check_interval
        delay = 0.05
        while not self._closed:
            self._stale.clear()  # before reading: a redirect meanwhile asks again
            try:
                self.refresh()
                delay = 0.05
                wait = interval if not self.healthy else 30 * interval
            except (BrokerError, ReplyError, OSError, ValueError, IndexError) as error:
                logger.warning("hub: the Redis Cluster's slots cannot be read: %s", error)
                delay = wait = min(delay * 2, interval)
            if self._closed:
                break
            self._stale.wait(wait)

    # -- the Broker interface ---------------------------------------------------------

    @property
    def healthy(self) -> bool:
        brokers = self.brokers
        return self._mapped.is_set() and bool(brokers) and all(b.healthy for b in brokers.values()) and (
            None not in self._slots
        )

    def health(self) -> dict[str, bool]:
        found: dict[str, bool] = {}
        for broker in tuple(self.brokers.values()):
            found.update(broker.health())
        return found or {str(seed): False for seed in self.seeds}

    def shard(self, room: str) -> str:
        self._mapped.wait(self.settings.timeout)  # a hub's first call: the map is being read
        node = self._node(room)
        return str(self._address(node)) if node is not None else "?"

    def start(self) -> None:
        import gevent

        gevent.spawn(self._maintain)

    def _call(self, room: str, method: str, *args: Any) -> Any:
        """``broker.method(room, *args)`` on the broker of ``room``'s node, following redirections."""
        self._mapped.wait(self.settings.timeout)
        deadline = time.monotonic() + REDIRECT_PATIENCE
        for attempt in range(100):
            node = self._node(room)
            broker = self.brokers.get(node) if node is not None else None
            if broker is None:
                if attempt and time.monotonic() > deadline:
                    raise BrokerError(f"no node of the Redis Cluster serves the slot of room {room!r}")
                self._refresh_now(attempt)
                continue
            try:
                return getattr(broker, method)(room, *args)
            except Redirect as redirect:
                if time.monotonic() > deadline:
                    raise BrokerError(f"the Redis Cluster kept redirecting {room!r}: {redirect}") from None
                target = self.brokers.get(redirect.ask) if redirect.ask is not None else None
                if target is not None:  # the slot is migrating: its keys that moved are on target
                    try:
                        return self._asking(target, method, room, *args)
                    except Redirect:  # TRYAGAIN (keys half moved), or done meanwhile: a moment, again
                        pass
                self._refresh_now(attempt)
        raise BrokerError(f"the Redis Cluster kept redirecting room {room!r}")

    def _asking(self, broker: RedisBroker, method: str, room: str, *args: Any) -> Any:
        """``broker.method(room, *args)``, each command after ``ASKING`` (an ``ASK`` redirection)."""
        asking(True)
        try:
            return getattr(broker, method)(room, *args)
        finally:
            asking(False)

    def _refresh_now(self, attempt: int) -> None:
        import gevent

        if attempt:
            gevent.sleep(min(0.01 * 2**attempt, 0.5))  # a migrating slot or a failover: give it a moment
        try:
            self.refresh()
        except (BrokerError, ReplyError, OSError, ValueError, IndexError):
            pass

    def subscribe(self, room: str, local: LocalRoom, first: bool) -> None:
        self._call(room, "subscribe", local, first)

    def unsubscribe(self, room: str) -> None:
        node = self._node(room)
        broker = self.brokers.get(node) if node is not None else None
        if broker is not None:
            broker.unsubscribe(room)

    def publish(self, room: str, data: str | bytes, exclude: tuple[WebSocket, ...] = ()) -> Publication:
        try:
            publication: Publication = self._call(room, "publish", data, exclude)
        except BrokerError:
            self.locals.deliver(room, None, data, exclude)  # this process's members still get it
            return Publication(None, False)
        return publication

    def since(self, room: str, since: int) -> tuple[bool, list[Message]]:
        try:
            found: tuple[bool, list[Message]] = self._call(room, "since", since)
        except BrokerError:
            return False, []
        return found

    def history(self, room: str, since: int | None) -> list[Message]:
        messages: list[Message] = self._call(room, "history", since)
        return messages

    def add_presence(self, room: str, member_id: str, meta: str) -> None:
        try:
            self._call(room, "add_presence", member_id, meta)
        except BrokerError:
            pass  # listed when its node's broker connects (it restores its rooms' presence)

    def remove_presence(self, room: str, member_id: str) -> None:
        try:
            self._call(room, "remove_presence", member_id)
        except BrokerError:
            pass

    def presence(self, room: str) -> list[Member]:
        try:
            members: list[Member] = self._call(room, "presence")
        except BrokerError:
            import json

            return [Member(m, json.loads(meta)) for m, meta in self.locals.members_here(room)]
        return members

    def close(self) -> None:
        self._closed = True
        self._stale.set()
        for broker in tuple(self.brokers.values()):
            broker.close()
        self.brokers.clear()
