"""The hub on Redis: a room's messages reach every process that has members in it.

Publishing runs one script (:mod:`takeover.hub._scripts`) that gives the
message the room's next offset, appends it to the room's capped stream and
publishes it on the room's channel, in one step. Each process subscribes to
the channel of every room it has members in, once, and delivers what arrives
to them; the offsets make that exact:

* a message whose offset is not the next one means some were missed (Redis
  drops a subscriber whose output buffer overflows, a connection broke):
  they are read back from the stream before it is delivered, and what the
  stream no longer has is reported through the hub's ``"gap"`` event;
* a message at or below the last offset delivered is a duplicate, dropped.

One greenlet in the hub's home owns the subscription. It PINGs a quiet
connection every ``health_check_interval`` and replaces one that does not
answer within another interval (a half-open TCP connection sends nothing and
never fails a read), reconnects with capped backoff, subscribes again to every
room, replays from the streams what was published meanwhile, and puts this
process's members back in the presence lists.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from takeover.hub._broker import Settings
from takeover.hub._local import LocalRoom, Locals
from takeover.hub._resp import NOTHING, Address, BrokerError, Commands, Redirect, ReplyError, Subscription
from takeover.hub._scripts import ADVANCE, PUBLISH, READ, SPUBLISH, KeyScheme, parse_message
from takeover.hub._types import Member, Message, Publication

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["RedisBroker"]

logger = logging.getLogger("takeover.hub")
#: Messages with members left out (publish(exclude=)) that may not have come back yet.
MAX_EXCLUDING = 10_000

#: Replies delivered together at most (the loop fell behind): written in one piece per member.
MAX_BATCH = 256

#: Seconds between reconnection attempts: doubling from the first to the last.
BACKOFF = (0.05, 2.0)


def _sha(script: str) -> str:
    import hashlib

    return hashlib.sha1(script.encode()).hexdigest()


def _decode(kind: bytes, data: bytes) -> str | bytes:
    return data.decode("utf-8") if kind == b"t" else data


def _entries(raw: list[Any], tokens: dict[int, bytes] | None = None) -> list[Message]:
    """Stream entries ``[id, [k, kind, d, data(, x, token)]]`` as messages (their tokens into ``tokens``)."""
    messages = []
    for entry_id, fields in raw:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        offset = int(entry_id.split(b"-", 1)[0])
        messages.append(Message(offset, _decode(values[b"k"], values[b"d"])))
        if tokens is not None and b"x" in values:
            tokens[offset] = values[b"x"]
    return messages


class RedisBroker:
    """A hub's link to Redis: commands, the subscription and its health."""

    def __init__(
        self,
        address: Address,
        settings: Settings,
        locals_: Locals,
        gap: Any,
        owns: Callable[[str], bool] | None = None,
        cluster: Callable[[str], object] | None = None,
    ) -> None:
        import gevent.event

        self.address = address
        #: Whether a room is this server's (several servers: :mod:`takeover.hub.sharded`); None: all.
        self.owns = owns
        #: On a Redis Cluster node (:mod:`takeover.hub.cluster`): called with what happened when
        #: the slots seem to have moved (a redirect, a shard channel unsubscribed by the node).
        self.slots_moved = cluster
        self.scheme = KeyScheme(settings.prefix, cluster is not None)
        self.settings = settings
        self.locals = locals_
        self._gap = gap
        self.commands = Commands(address, settings.timeout)
        self._sub: Subscription | None = None
        self._healthy = False
        self._warned = False
        self._closed = False
        self._wake = gevent.event.Event()
        self._tried = gevent.event.Event()  # set once the first connection attempt has ended
        #: Presence entries whose removal did not reach Redis: removed after reconnecting.
        self._stale: set[tuple[str, str]] = set()
        self._unlisted: dict[tuple[str, str], str] = {}  # (room, member id) -> meta, joined while away
        #: Who to leave out of this process's own messages when they come back, by token.
        self._excluding: dict[bytes, tuple[WebSocket, ...]] = {}
        self._tokens = itertools.count(1)
        self._next_beat = 0.0
        self._restarting = False

    @property
    def healthy(self) -> bool:
        return self._healthy

    def health(self) -> dict[str, bool]:
        return {str(self.address): self._healthy}

    def shard(self, room: str) -> str:
        return str(self.address)

    def _rooms(self) -> dict[str, LocalRoom]:
        """This process's rooms that live on this server."""
        rooms, owns = self.locals.rooms, self.owns
        return dict(rooms) if owns is None else {room: local for room, local in rooms.items() if owns(room)}

    def start(self) -> None:
        import gevent

        gevent.spawn(self._run)

    # -- scripts ---------------------------------------------------------------

    def _script(self, script: str, keys_: list[str], args: list[Any]) -> Any:
        try:
            return self.commands.call("EVALSHA", _sha(script), len(keys_), *keys_, *args)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return self.commands.call("EVAL", script, len(keys_), *keys_, *args)

    def _read(
        self, room: str, first: int, last: int | str, tokens: dict[int, bytes] | None = None
    ) -> tuple[int | None, list[Message], int | None]:
        """The room's last offset, its messages ``first`` to ``last``, and its epoch's first offset.

        ``tokens`` gets the publishers' tokens of the messages that have one, by offset.
        """
        meta, log, _, _ = self.scheme.keys(room)
        current, raw, epoch = self._script(READ, [meta, log], [first, last])
        return (int(current) if current else None), _entries(raw, tokens), (int(epoch) if epoch else None)

    def _baseline(self, room: str) -> int:
        """The offset this process follows ``room`` from: its last one, or 0 for a room without messages."""
        return self._read(room, 0, 0)[0] or 0

    # -- publishing ------------------------------------------------------------

    def _starting(self) -> None:
        """Wait (up to ``timeout``) for the first connection attempt, so a first call finds Redis up."""
        if not self._tried.is_set():
            self._tried.wait(self.settings.timeout)

    def publish(self, room: str, data: str | bytes, exclude: tuple[WebSocket, ...] = ()) -> Publication:
        self._starting()
        if self._healthy:
            meta, log, channel, _ = self.scheme.keys(room)
            kind, payload = (b"t", data.encode("utf-8")) if isinstance(data, str) else (b"b", data)
            token = self._exclude(exclude)
            try:
                if not self.settings.history:
                    command = "SPUBLISH" if self.scheme.cluster else "PUBLISH"
                    stamp = b"/%d" % (time.time() * 1e6)
                    if token:
                        message = kind.upper() + stamp + b" " + token + b" " + payload
                        self.commands.call(command, channel, message)
                    else:
                        self.commands.call(command, channel, kind + stamp + b" " + payload)
                    return Publication(None, True)
                args = [channel, self.settings.history, int(self.settings.history_ttl * 1000), kind, payload]
                if token:
                    args.append(token)
                offset = self._script(SPUBLISH if self.scheme.cluster else PUBLISH, [meta, log], args)
                return Publication(int(offset), True)
            except Redirect:  # a cluster's slot moved: the cluster broker tries its new node
                self._excluding.pop(token, None)
                raise
            except (BrokerError, ReplyError) as error:
                self._excluding.pop(token, None)
                self._lost(error)
        self.locals.deliver(room, None, data, exclude)  # this process's members still get it
        return Publication(None, False)

    def _exclude(self, exclude: tuple[WebSocket, ...]) -> bytes:
        """A token for a message whose delivery here leaves ``exclude`` out (b"" for none).

        The message comes back to this process through its subscription (or,
        after a loss, its stream) with the token, which names who to leave out.
        """
        if not exclude:
            return b""
        token = f"{self.locals.process_id}.{next(self._tokens)}".encode()
        excluding = self._excluding
        excluding[token] = exclude
        while len(excluding) > MAX_EXCLUDING:  # messages that never came back (a lost subscription)
            del excluding[next(iter(excluding))]
        return token

    def since(self, room: str, since: int) -> tuple[bool, list[Message]]:
        try:
            current, messages, _ = self._read(room, since + 1, "+")
        except Redirect:
            raise
        except (BrokerError, ReplyError):
            return False, []  # cannot tell what is retained: the client needs fresh state
        if current is None or since > current:
            return False, []
        if since == current:
            return True, []
        if not messages or messages[0].offset != since + 1:
            return False, []  # trimmed, or from another epoch
        return True, messages

    def history(self, room: str, since: int | None) -> list[Message]:
        self._starting()
        try:
            _, messages, _ = self._read(room, since + 1 if since is not None else 0, "+")
        except Redirect:
            raise
        except ReplyError as error:
            raise BrokerError(f"{self.address} refused to read the history of {room!r}: {error}") from None
        return messages[-self.settings.history :] if self.settings.history else []

    # -- subscriptions -----------------------------------------------------------

    def _channel(self, room: str) -> bytes:
        return self.scheme.keys(room)[2].encode("utf-8")

    def subscribe(self, room: str, local: LocalRoom, first: bool) -> None:
        import gevent.event

        if first:
            local.subscribed = gevent.event.Event()
            if self.settings.history and local.last is None:
                try:
                    local.last = self._baseline(room)  # where this process starts following it
                except Redirect:
                    raise  # a cluster node that does not serve the slot (yet): asked again elsewhere
                except (BrokerError, ReplyError):
                    pass
            sub = self._sub
            if sub is not None and sub.connected:
                try:
                    sub.subscribe(self._channel(room))
                except BrokerError:
                    pass  # the subscriber reconnects and subscribes to every room
        self._starting()
        event = local.subscribed
        if isinstance(event, gevent.event.Event) and self._healthy:
            event.wait(self.settings.timeout)

    def unsubscribe(self, room: str) -> None:
        sub = self._sub
        if sub is not None and sub.connected:
            try:
                sub.unsubscribe(self._channel(room))
            except BrokerError:
                pass

    # -- presence ----------------------------------------------------------------

    def add_presence(self, room: str, member_id: str, meta: str) -> None:
        self._stale.discard((room, member_id))
        if not self._healthy:
            # Listed once connected. Not left to _restore() alone: a member that joins
            # while _restore() and the catch-up wait for Redis is not in its snapshot.
            self._unlisted[(room, member_id)] = meta
            return
        try:
            self.commands.pipeline(self._presence_commands(room, [(member_id, meta)]))
        except BrokerError:
            pass

    def _presence_commands(self, room: str, members: list[tuple[str, str]]) -> list[tuple[Any, ...]]:
        presence = self.scheme.keys(room)[3]
        fields: list[str] = []
        for member_id, meta in members:
            fields += (member_id, f"{self.locals.process_id} {meta}")
        ttl = int(self.settings.presence_ttl * 2000)
        # The process key too: a member must never be listed under a process that looks dead
        # (after a FLUSHALL, say, until the next heartbeat).
        beat = self._beat_command(room)
        return [("HSET", presence, *fields), ("PEXPIRE", presence, ttl), *([beat] if beat else [])]

    def _beat_command(self, room: str | None = None) -> tuple[Any, ...] | None:
        """Refresh this process's liveness key (on a cluster: the one for ``room``, None without one)."""
        key = self.scheme.process(self.locals.process_id, room)
        if key is None:
            return None
        return ("SET", key, "1", "PX", int(self.settings.presence_ttl * 1000))

    def remove_presence(self, room: str, member_id: str) -> None:
        self._unlisted.pop((room, member_id), None)
        try:
            if not self._healthy:
                raise BrokerError("not connected")
            self.commands.call("HDEL", self.scheme.keys(room)[3], member_id)
        except BrokerError:
            self._stale.add((room, member_id))

    def presence(self, room: str) -> list[Member]:
        self._starting()
        presence_key = self.scheme.keys(room)[3]
        try:
            raw = self.commands.call("HGETALL", presence_key)
            entries: dict[str, tuple[str, str]] = {}
            for field, value in zip(raw[::2], raw[1::2], strict=True):
                process, _, meta = value.decode("utf-8").partition(" ")
                entries[field.decode("utf-8")] = (process, meta)
            processes = sorted({process for process, _ in entries.values()})
            alive: dict[str, bool] = {}
            if processes:
                names = [self.scheme.process(p, room) or "" for p in processes]
                found = self.commands.call("MGET", *names)
                alive = {p: value is not None for p, value in zip(processes, found, strict=True)}
            dead = [member_id for member_id, (process, _) in entries.items() if not alive.get(process)]
            if dead:  # members of processes that died without leaving: gone after presence_ttl
                self.commands.call("HDEL", presence_key, *dead)
        except Redirect:
            raise
        except BrokerError:
            # Redis cannot be reached: this process's own members are all it knows.
            return [Member(member_id, json.loads(meta)) for member_id, meta in self.locals.members_here(room)]
        return [Member(m, json.loads(meta)) for m, (process, meta) in entries.items() if alive.get(process)]

    # -- the subscriber ------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF[0]
        while not self._closed:
            try:
                self._serve()
            except (BrokerError, ReplyError, TimeoutError, OSError, ValueError) as error:
                if isinstance(error, Redirect) and self.slots_moved is not None:
                    self.slots_moved(f"{self.address}: {error}")
                self._lost(error)
            self._tried.set()
            if self._closed:
                break
            self._wake.wait(delay)
            delay = min(delay * 2, BACKOFF[1]) if not self._healthy else BACKOFF[0]

    def restart(self) -> None:
        """Subscribe again from the start: the rooms this server owns changed (a cluster's slots
        moved). The new ones are subscribed and caught up from their streams, as after a reconnect."""
        self._restarting = True
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()  # the subscriber's read fails, and it connects again at once

    def _lost(self, error: BaseException) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        if self._closed:
            return  # closed on purpose: nothing to warn about
        if self._restarting:  # not a loss: commands go on, the subscriber comes back at once
            self._restarting = False
            logger.info("hub: subscribing again at %s: the cluster's slots moved", self.address)
            return
        if self._healthy or not self._warned:
            logger.warning("hub: Redis at %s cannot be reached (%s); reconnecting", self.address, error)
            self._warned = True
            if self.slots_moved is not None:  # a cluster node: a replica may be taking over its slots
                self.slots_moved(f"{self.address} cannot be reached")
        self._healthy = False

    def _serve(self) -> None:
        sub = Subscription(self.address, self.settings.timeout)
        sub.sharded = self.scheme.cluster
        sub.connect()
        self._sub = sub
        rooms = self._rooms()
        waiting = {self._channel(room) for room in rooms}
        sub.subscribe(*waiting)
        early: list[Any] = []
        while waiting:  # confirmed before the streams are read: nothing falls between the two
            reply = sub.read(self.settings.timeout)
            if isinstance(reply, list) and reply[0] in (b"subscribe", b"ssubscribe"):
                waiting.discard(reply[1])
            self._handle_early(reply, early)
        self._restore()
        for room in rooms:
            self._catch_up(room)
        for room in self._rooms():
            if room not in rooms:  # joined meanwhile: confirmed in the loop above, or not yet (then
                self._catch_up(room)  # caught up again at its confirmation, in _handle)
        for reply in early:
            self._handle(reply)
        if not self._healthy:
            logger.info("hub: connected to Redis at %s", self.address)
        self._healthy = True  # from here add_presence() lists members itself
        self._list_unlisted()
        self._warned = False
        self._tried.set()
        for local in self._rooms().values():  # rooms joined meanwhile too
            event = local.subscribed
            if event is not None:
                event.set()  # type: ignore[attr-defined]
        self._listen(sub)

    def _handle_early(self, reply: Any, early: list[Any]) -> None:
        if isinstance(reply, ReplyError):
            raise reply
        if isinstance(reply, list) and reply[0] in (b"message", b"smessage"):
            early.append(reply)

    def _list_unlisted(self) -> None:
        """List the members that joined while this process was not connected (issue 20).

        Called right after ``_healthy`` is set, with no wait between the two, so
        that every member is listed either here or by ``add_presence`` itself.
        """
        unlisted, self._unlisted = self._unlisted, {}
        by_room: dict[str, list[tuple[str, str]]] = {}
        for (room, member_id), meta in unlisted.items():
            by_room.setdefault(room, []).append((member_id, meta))
        commands: list[tuple[Any, ...]] = []
        for room, members in by_room.items():
            commands += self._presence_commands(room, members)
        if commands:
            self.commands.pipeline(commands)

    def _restore(self) -> None:
        """Put this process's members back in the presence lists (Redis may have lost them)."""
        beat = self._beat_command()
        commands: list[tuple[Any, ...]] = [beat] if beat else []
        for room in self._rooms():
            commands += self._presence_commands(room, self.locals.members_here(room))
        for room, member_id in self._stale:
            commands.append(("HDEL", self.scheme.keys(room)[3], member_id))
        self.commands.pipeline(commands)
        self._stale.clear()
        self._next_beat = time.monotonic() + self.settings.presence_ttl / 3

    def _listen(self, sub: Subscription) -> None:
        interval = self.settings.health_check_interval
        pinged = False
        while not self._closed:
            try:
                reply = sub.read(interval)
            except TimeoutError:
                if pinged:
                    raise BrokerError(f"{self.address} did not answer a PING in {interval} s") from None
                sub.ping()
                pinged = True
                continue
            pinged = False
            self._handle_batch(reply, sub)
            if time.monotonic() >= self._next_beat:
                self._next_beat = time.monotonic() + self.settings.presence_ttl / 3
                import gevent

                gevent.spawn(self._beat)

    def _beat(self) -> None:
        """Refresh this process's key and its rooms' presence hashes (every ``presence_ttl / 3``)."""
        ttl = int(self.settings.presence_ttl * 2000)
        beat = self._beat_command()
        commands: list[tuple[Any, ...]] = [beat] if beat else []
        for room in self._rooms():
            commands.append(("PEXPIRE", self.scheme.keys(room)[3], ttl))
            room_beat = self._beat_command(room) if self.scheme.cluster else None
            if room_beat:
                commands.append(room_beat)
        try:
            self.commands.pipeline(commands)
        except BrokerError:
            pass  # the subscriber notices, and restores presence when back

    def _handle_batch(self, reply: Any, sub: Subscription) -> None:
        """``reply`` and the replies already read with it, delivered in one write per member.

        The loop was behind if more than one is waiting: sending them together costs
        nothing in latency and saves a system call per member per message (issue 21).
        Only what was read together is held; it is written before anything else runs.
        """
        locals_ = self.locals
        locals_.hold()
        try:
            self._handle(reply)
            for _ in range(MAX_BATCH):
                more = sub.read_buffered()
                if more is NOTHING:
                    break
                self._handle(more)
        finally:
            locals_.flush()

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, ReplyError):
            raise reply
        kind = reply[0]
        if kind == b"message" or kind == b"smessage":
            room = self.scheme.room_of(reply[1])
            kind, offset, token, body, published_at = parse_message(reply[2])
            # A publisher's token names the members it left out (publish(exclude=)).
            exclude: tuple[WebSocket, ...] = self._excluding.pop(token, ()) if token else ()
            data = _decode(kind, body)
            if offset is None:
                self.locals.deliver(room, None, data, exclude, published_at)
                return
            local = self.locals.rooms.get(room)
            if local is not None and local.last is not None and offset > local.last + 1:
                self.locals.flush()  # what came before goes first; the gap's fill waits for Redis
                self._fill(room, local.last + 1, offset - 1)
            self.locals.deliver(room, offset, data, exclude, published_at)
        elif kind == b"sunsubscribe" and self.slots_moved is not None:
            # The node let go of the channel: its slot moved (Redis 7 unsubscribes the shard
            # channels of a slot it loses). Still ours to deliver? Then the map is stale.
            if self.scheme.room_of(reply[1]) in self.locals.rooms:
                self.slots_moved(f"{self.address} unsubscribed the shard channel {reply[1]!r}")
        elif kind == b"subscribe" or kind == b"ssubscribe":
            room = self.scheme.room_of(reply[1])
            local = self.locals.rooms.get(room)
            if local is not None and local.subscribed is not None:
                # What was published between the join's read of the room and this
                # confirmation came on no subscription: it is in the stream.
                self.locals.flush()
                self._catch_up(room)
                local.subscribed.set()  # type: ignore[attr-defined]

    def _fill(self, room: str, first: int, last: int | None) -> None:
        """Deliver the retained messages ``first`` to ``last`` (None: the newest); report the rest as lost."""
        tokens: dict[int, bytes] = {}
        current, messages, epoch = self._read(room, first, last if last is not None else "+", tokens)
        if last is None:
            if current is not None and current < first - 1:
                self._rolled_back(room, current, first - 1)
            if current is None or current < first:
                return
            last = current
        expected = first
        if epoch is not None and first < epoch:
            if first == 1:
                expected = epoch  # the room had no messages when this process began to follow it
            else:
                logger.warning(
                    "hub: room %r has a new epoch (Redis lost its data, or its keys expired): whatever "
                    "followed offset %d in the old one is unknown", room, first - 1,
                )
        for message in messages:
            if message.offset > last:
                break
            if message.offset > expected:
                self._gap(room, expected, message.offset - 1)
            token = tokens.get(message.offset)
            exclude = self._excluding.pop(token, ()) if token is not None else ()
            self.locals.deliver(room, message.offset, message.data, exclude)
            expected = message.offset + 1
        if expected <= last:
            self._gap(room, expected, last)

    def _rolled_back(self, room: str, current: int, delivered: int) -> None:
        """Redis is behind what this process delivered: a replica took over before it had the last
        messages (replication is asynchronous), or a snapshot was restored. Move the room's offset
        up to ``delivered``, so that no offset is given twice to different messages; processes that
        never got the lost ones find them missing, and report them through ``"gap"``."""
        logger.warning(
            "hub: room %r at %s is at offset %d, behind the %d delivered here (a failover lost the "
            "last messages): its next offsets start after %d",
            room, self.address, current, delivered, delivered,
        )
        meta = self.scheme.keys(room)[0]
        self._script(ADVANCE, [meta], [delivered])

    def _catch_up(self, room: str) -> None:
        local = self.locals.rooms.get(room)
        if local is None or not self.settings.history:
            return
        if local.last is None:
            local.last = self._baseline(room)
        else:
            self._fill(room, local.last + 1, None)

    def close(self) -> None:
        self._closed = True
        self._healthy = False
        self._wake.set()
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        self.commands.close()
