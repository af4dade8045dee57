"""This process's side of the hub: which WebSockets are in which room, and delivering to them.

Runs in the hub's home loop only (see :mod:`takeover._io.loop`), so it has no
locks. A member is *live* once its WebSocket is OPEN and its catch-up (the
retained messages after its ``since``) has gone out; until then what is
delivered to the room is queued for it, so nothing is lost or doubled across
that boundary. Each delivery is framed once for all live members by
:func:`takeover.broadcast`, which holds every WebSocket to its
``max_buffered_amount`` (close 1008), so a slow member never grows the
process's memory; a member's queue is bounded the same way.

A member that joined with ``envelope=True`` gets each message as one JSON
text frame, ``{"room": ROOM, "offset": OFFSET, "data": DATA}`` (``DATA`` in
base64 with ``"binary": true`` for bytes), built once per message for all such
members, and each loss this process detects as ``{"room": ROOM, "gap": [FIRST,
LAST]}`` (:func:`envelope`, :func:`gap_notice`).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from takeover._io.batch import Batch
from takeover.websocket import broadcast

if TYPE_CHECKING:
    from takeover._io.stats import HubStats
    from takeover.websocket import WebSocket

__all__ = ["Delivery", "Gap", "LocalRoom", "Locals", "Member", "envelope", "gap_notice"]


class Gap:
    """A loss this process detected in a room, queued for a member that is not live yet."""

    __slots__ = ("first", "last")

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last


Delivery = tuple[int | None, "str | bytes | Gap"]  # (offset, data)

#: Bytes a member that is not live yet may have queued when its WebSocket has no
#: ``max_buffered_amount``.
DEFAULT_QUEUE_LIMIT = 16 * 1024 * 1024
POLICY_VIOLATION = 1008


class Member:
    """One WebSocket in one room."""

    __slots__ = ("envelope", "floor", "live", "local", "queue", "queued", "ready", "ws")

    def __init__(self, ws: WebSocket, local: LocalRoom, envelope: bool = False) -> None:
        self.ws = ws
        self.local = local
        #: Messages reach it as JSON envelopes with their offsets (see the module's docstring).
        self.envelope = envelope
        self.live = False
        self.ready = False  # its catch-up is done (it goes live when its WebSocket opens)
        self.queue: list[Delivery] = []
        self.queued = 0  # bytes in the queue
        #: Deliveries at or below this offset were replayed to it already.
        self.floor: int | None = None


class LocalRoom:
    """A room's members in this process and the last offset delivered to them."""

    __slots__ = ("_snapshot", "ahead", "last", "members", "name", "subscribed", "waiting")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.members: dict[WebSocket, Member] = {}
        #: The members not live yet (their queue gets each delivery): usually none.
        self.waiting: dict[WebSocket, Member] = {}
        #: Live members whose replay reached further than the room had delivered (their
        #: floor, by WebSocket): the room may still fill that stretch in from the stream,
        #: and they must not get it twice (issue 20). Usually none.
        self.ahead: dict[WebSocket, int] = {}
        self.last: int | None = None
        self.subscribed: object = None  # the broker's: an event set once the subscription is confirmed
        self._snapshot: tuple[tuple[WebSocket, ...], tuple[WebSocket, ...]] | None = None

    def live(self) -> tuple[WebSocket, ...]:
        """The live members' WebSockets that get messages as they were published."""
        return self._live()[0]

    def live_envelope(self) -> tuple[WebSocket, ...]:
        """The live members' WebSockets that get messages in envelopes."""
        return self._live()[1]

    def _live(self) -> tuple[tuple[WebSocket, ...], tuple[WebSocket, ...]]:
        snapshot = self._snapshot  # remade only after a change
        if snapshot is None:
            live = [(ws, m.envelope) for ws, m in self.members.items() if m.live]
            snapshot = self._snapshot = (
                tuple(ws for ws, wrapped in live if not wrapped), tuple(ws for ws, wrapped in live if wrapped)
            )
        return snapshot

    def changed(self) -> None:
        self._snapshot = None


class _Socket:
    """What the hub knows of one WebSocket: its member id, and its rooms with its meta in each."""

    __slots__ = ("closed", "id", "opened", "rooms")

    def __init__(
        self, member_id: str, opened: Callable[[object], object], closed: Callable[[object], object]
    ) -> None:
        self.id = member_id
        self.rooms: dict[str, str] = {}  # room -> meta (JSON text)
        self.opened = opened  # its listeners for "open" and "close"
        self.closed = closed


class Locals:
    """Rooms and members of this process."""

    def __init__(
        self, on_open: Callable[[WebSocket], object], on_close: Callable[[WebSocket], object]
    ) -> None:
        self.rooms: dict[str, LocalRoom] = {}
        self.sockets: dict[WebSocket, _Socket] = {}
        #: Identifies this process's members in every process's presence lists.
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._ids = itertools.count(1)
        self._on_open = on_open  # the WebSocket's listeners: the hub routes them to its home
        self._on_close = on_close
        #: While set, live deliveries are held and written per socket at :meth:`flush` (issue 21).
        self.batch: Batch | None = None
        #: This hub's figures in the process's (takeover._io.stats), set by the hub.
        self.stats: HubStats | None = None

    # -- batching ---------------------------------------------------------

    def hold(self) -> None:
        """From now to :meth:`flush`, what :meth:`deliver` sends goes out in one write per socket."""
        if self.batch is None:
            self.batch = Batch()

    def flush(self) -> None:
        """Write what was held (one write per socket) and stop holding."""
        batch, self.batch = self.batch, None
        if batch:
            batch.flush()

    def _send(self, websockets: tuple[WebSocket, ...], data: str | bytes) -> None:
        batch = self.batch
        if batch is None:
            broadcast(websockets, data)
        else:
            batch.add(websockets, data)

    # -- membership -------------------------------------------------------

    def add(self, ws: WebSocket, room: str, meta: str, envelope: bool = False) -> tuple[Member | None, bool]:
        """Make ``ws`` a member of ``room`` (not live yet); (member, first in the room here).

        The member is None when ``ws`` is a member already (its meta and envelope are updated).
        """
        state = self.sockets.get(ws)
        if state is None:
            on_open, on_close = self._on_open, self._on_close
            state = self.sockets[ws] = _Socket(
                f"{self.process_id}.{next(self._ids)}", lambda event: on_open(ws), lambda event: on_close(ws)
            )
            ws.add_event_listener("open", state.opened)
            ws.add_event_listener("close", state.closed)
        known = room in state.rooms
        state.rooms[room] = meta
        if known:
            existing = self.rooms[room].members[ws]
            if existing.envelope != envelope:
                existing.envelope = envelope
                existing.local.changed()
            return None, False
        local = self.rooms.get(room)
        first = local is None
        if local is None:
            local = self.rooms[room] = LocalRoom(room)
        member = local.members[ws] = local.waiting[ws] = Member(ws, local, envelope)
        return member, first

    def remove(self, ws: WebSocket, room: str) -> tuple[str | None, bool]:
        """Take ``ws`` out of ``room``; (its member id if it was in, whether the room is empty here now)."""
        state = self.sockets.get(ws)
        if state is None or state.rooms.pop(room, None) is None:
            return None, False
        if not state.rooms:
            del self.sockets[ws]
            ws.remove_event_listener("open", state.opened)
            ws.remove_event_listener("close", state.closed)
        local = self.rooms[room]
        del local.members[ws]
        local.waiting.pop(ws, None)
        local.ahead.pop(ws, None)
        local.changed()
        if local.members:
            return state.id, False
        del self.rooms[room]
        return state.id, True

    def member_id(self, ws: WebSocket) -> str | None:
        state = self.sockets.get(ws)
        return state.id if state is not None else None

    def rooms_of(self, ws: WebSocket) -> frozenset[str]:
        state = self.sockets.get(ws)
        return frozenset(state.rooms) if state is not None else frozenset()

    def members_here(self, room: str) -> list[tuple[str, str]]:
        """(member id, meta) of this process's members of ``room``."""
        local = self.rooms.get(room)
        if local is None:
            return []
        return [(self.sockets[ws].id, self.sockets[ws].rooms[room]) for ws in local.members]

    # -- delivering -------------------------------------------------------

    def deliver(
        self, room: str, offset: int | None, data: str | bytes, exclude: tuple[WebSocket, ...] = (),
        published_at: float | None = None,
    ) -> None:
        """Give one message of ``room`` to its members here but ``exclude``: live ones now, others queued.

        ``published_at`` (``time.time()``), when the broker knows it, starts the delivery lag counted
        in :attr:`stats` (``takeover_hub_delivery_lag_seconds``).
        """
        local = self.rooms.get(room)
        if local is None:
            return
        if offset is not None:
            if local.last is not None and offset <= local.last:
                return  # delivered already (a replay overlapping the live stream)
            local.last = offset
        for member in local.waiting.values():
            if (member.ready and _replayed(member.floor, offset)) or member.ws in exclude:
                continue  # its catch-up is done and had this one, or its sender left it out
            self._enqueue(member, offset, data)
        plain, wrapped = local._live()
        if exclude:
            plain = tuple(ws for ws in plain if ws not in exclude)
            wrapped = tuple(ws for ws in wrapped if ws not in exclude)
        ahead = local.ahead
        if ahead and offset is not None:
            # Members whose own replay went past what the room had delivered: not the
            # part of the stream they had already (the room filling in after a gap).
            plain = tuple(ws for ws in plain if ahead.get(ws, -1) < offset)
            wrapped = tuple(ws for ws in wrapped if ahead.get(ws, -1) < offset)
            for ws, floor in tuple(ahead.items()):
                if floor <= offset:
                    del ahead[ws]  # caught up with the room: everything after is new to it
        stats = self.stats
        if stats is not None and (plain or wrapped):  # before the writes: a member that has it is counted
            stats.delivered(len(plain) + len(wrapped), published_at)
        if plain:
            self._send(plain, data)
        if wrapped:
            self._send(wrapped, envelope(room, offset, data))  # built once for them all

    def gap(self, room: str, first: int, last: int) -> None:
        """Tell the members of ``room`` here that take envelopes of a loss: ``{"room", "gap"}``."""
        local = self.rooms.get(room)
        if local is None:
            return
        for member in local.waiting.values():
            if member.envelope:
                self._enqueue(member, None, Gap(first, last))
        wrapped = local.live_envelope()
        if wrapped:
            broadcast(wrapped, gap_notice(room, first, last))

    def caught_up(self, member: Member, replay: list[Delivery], floor: int | None) -> None:
        """``member``'s catch-up is ``replay`` (deliveries up to ``floor``); it goes live when OPEN."""
        queued = [(o, d) for o, d in member.queue if o is None or floor is None or o > floor]
        member.queue = []
        member.queued = 0
        for offset, data in (*replay, *queued):
            self._enqueue(member, offset, data)
        member.floor = floor
        member.ready = True
        self._go_live(member)

    def _enqueue(self, member: Member, offset: int | None, data: str | bytes | Gap) -> None:
        if member.queued < 0:
            return  # overflowed: it will be closed
        limit = member.ws.max_buffered_amount
        member.queued += 40 if isinstance(data, Gap) else len(data)
        if member.queued > (limit if limit is not None else DEFAULT_QUEUE_LIMIT):
            member.queue = []
            member.queued = -1
            return
        member.queue.append((offset, data))

    def _go_live(self, member: Member) -> None:
        ws = member.ws
        if not member.ready or ws.ready_state is not ws.OPEN:
            return
        if member.queued < 0:
            ws.close(POLICY_VIOLATION, "too many messages queued before the WebSocket opened")
            return
        room = member.local.name
        delivered = 0
        for offset, data in member.queue:
            if isinstance(data, Gap):
                broadcast((ws,), gap_notice(room, data.first, data.last))
                continue
            delivered += 1
            broadcast((ws,), envelope(room, offset, data) if member.envelope else data)
        if delivered and self.stats is not None:  # replays, and what came before it opened
            self.stats.delivered(delivered, None)
        member.queue = []
        member.queued = 0
        member.live = True
        local = member.local
        del local.waiting[ws]
        floor = member.floor
        if floor is not None and (local.last is None or floor > local.last):
            local.ahead[ws] = floor
        local.changed()

    def open_members(self, ws: WebSocket) -> None:
        """``ws`` is OPEN: its members that are caught up go live."""
        state = self.sockets.get(ws)
        if state is None:
            return
        for room in state.rooms:
            member = self.rooms[room].members.get(ws)
            if member is not None and not member.live:
                self._go_live(member)


def _replayed(floor: int | None, offset: int | None) -> bool:
    """Whether a member caught up to ``floor`` had the delivery at ``offset`` in its replay."""
    return floor is not None and offset is not None and offset <= floor


def envelope(room: str, offset: int | None, data: str | bytes) -> str:
    """One message as a member that joined with ``envelope=True`` gets it (a JSON text frame)."""
    if isinstance(data, str):
        return json.dumps({"room": room, "offset": offset, "data": data}, ensure_ascii=False)
    encoded = base64.b64encode(data).decode("ascii")
    return json.dumps({"room": room, "offset": offset, "data": encoded, "binary": True}, ensure_ascii=False)


def gap_notice(room: str, first: int, last: int) -> str:
    """A loss of ``room``'s offsets ``first`` to ``last``, as envelope members are told of it."""
    return json.dumps({"room": room, "gap": [first, last]}, ensure_ascii=False)
