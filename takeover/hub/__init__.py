"""``takeover.Hub``: rooms, presence and catch-up, in one process or across many on Redis.

::

    hub = Hub("redis://127.0.0.1:6379/0", history=100)

    @app.route("/ws", websocket=True)
    def ws():
        socket, response = upgrade_websocket(request)
        hub.join(socket, "lobby", meta={"name": name}, since=request.args.get("since", type=int))
        return response

    hub.publish("lobby", "hello")          # every member, in every process, once, in order

A publish reaches each process from Redis once (one SUBSCRIBE per room that
has members there) and is framed once for all of that process's members
(:func:`takeover.broadcast`). With ``history``, each message of a room gets an
offset, one more than the one before, and the last ``history`` are kept, so a
client that comes back with the last offset it saw (``since``) gets what it
missed, and what cannot be recovered is reported (the ``"gap"`` event),
never passed over in silence. See docs/guides/scaling.rst.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from takeover._io.loop import Loop, loop_for_caller, loop_of
from takeover._io.stats import STATS
from takeover.hub._broker import Broker, GapListener, Settings, check_urls, make_broker
from takeover.hub._local import Locals
from takeover.hub._types import Member, Message, Publication, check_data, check_room, check_since, dump_meta
from takeover.hub.publisher import publish

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["Hub", "Member", "Message", "Publication", "publish"]

logger = logging.getLogger("takeover.hub")
T = TypeVar("T")


class _Process:
    """A hub's state in one process (a forked worker starts its own)."""

    def __init__(self, hub: Hub, home: Loop) -> None:
        self.pid = os.getpid()
        self.home = home
        self.locals = Locals(hub._opened, hub._closed)
        self.broker: Broker = make_broker(hub.urls, hub.settings, self.locals, hub._gap)
        self.url = hub.url
        #: This hub's figures among the process's (takeover._io.stats; takeover.metrics).
        self.stats = self.locals.stats = STATS.add_hub(self)


class Hub:
    """Rooms of WebSockets, with presence and history, on ``memory://`` or Redis.

    ``url`` is ``memory://`` (one process; the default), a Redis URL
    (``redis://``, ``rediss://``, ``unix://``), or a list of Redis URLs, one per
    server: each room then lives on one of them, chosen by a hash of its name
    that every process given the same servers agrees on, whatever the list's
    order (:meth:`shard`; docs/guides/scaling.rst, "Several Redis servers").
    ``history`` messages of each
    room are kept, for ``history_ttl`` seconds after its last message, for
    :meth:`history` and ``join(since=...)``; 0 keeps none (and publishes get
    no offset). A process that dies without leaving loses its members from
    every :meth:`presence` after ``presence_ttl`` seconds. The connection to
    Redis is checked every ``health_check_interval`` seconds, and a call to
    Redis gives up after ``timeout`` seconds.

    Nothing connects until the hub is first used, in the process that uses
    it: a hub made at import in gunicorn's master serves each worker apart.
    It may be used from any thread; its state lives in one loop (its home,
    the loop its WebSockets live in: see :mod:`takeover._io.loop`).
    """

    def __init__(
        self,
        url: str | Sequence[str] = "memory://",
        *,
        history: int = 100,
        history_ttl: float = 300.0,
        presence_ttl: float = 30.0,
        health_check_interval: float = 1.0,
        timeout: float = 1.0,
        prefix: str = "takeover",
    ) -> None:
        #: The broker's URLs: one, or one per Redis server.
        self.urls: tuple[str, ...] = check_urls(url)
        #: The URL, or the servers' URLs joined with ", ".
        self.url = ", ".join(self.urls)
        if not isinstance(history, int) or isinstance(history, bool) or history < 0:
            raise ValueError(f"history must be an int >= 0, not {history!r}")
        for name, value in (
            ("history_ttl", history_ttl), ("presence_ttl", presence_ttl),
            ("health_check_interval", health_check_interval), ("timeout", timeout),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty str")
        self.settings = Settings(
            history, float(history_ttl), float(presence_ttl), float(health_check_interval), float(timeout),
            prefix,
        )
        self._process: _Process | None = None
        self._process_lock = threading.Lock()
        self._gap_listeners: list[GapListener] = []
        self._closed_for_good = False

    # -- where it runs -------------------------------------------------------

    def _here(self, ws: WebSocket | None = None) -> _Process:
        if self._closed_for_good:
            raise RuntimeError("this Hub is closed")
        process = self._process
        if process is None or process.pid != os.getpid():
            with self._process_lock:  # two threads' first calls make one
                process = self._process
                if process is None or process.pid != os.getpid():
                    process = _Process(self, loop_of(ws) if ws is not None else loop_for_caller())
                    self._call(process, process.broker.start)
                    self._process = process
        return process

    def _call(self, process: _Process, fn: Callable[..., T], *args: Any) -> T:
        home = process.home
        if home.in_loop:
            return fn(*args)
        return home.run_sync(fn, *args, timeout=self.settings.timeout * 6 + 5.0)

    # -- rooms ---------------------------------------------------------------

    def join(
        self, ws: WebSocket, room: str, meta: Any = None, since: int | None = None, *, envelope: bool = False
    ) -> bool:
        """Make ``ws`` a member of ``room``; with ``since``, first replay what followed that offset.

        May be called as soon as :func:`takeover.upgrade_websocket` returns,
        before the WebSocket opens: what the room receives meanwhile waits
        for it. With ``since`` (the last offset the client saw), the socket
        gets every retained message after it, then the live ones, none lost
        or doubled, and True is returned; if they are not all retained any
        more (trimmed, expired, or Redis lost its data) nothing is replayed
        and False is returned: send the client fresh state. ``meta`` (any
        JSON-serialisable value) is what :meth:`presence` shows of the
        member. Joining a room twice only updates ``meta`` (and ``envelope``).

        With ``envelope=True`` each message of the room reaches ``ws`` as one
        JSON text frame with its offset, ``{"room": ROOM, "offset": OFFSET,
        "data": DATA}`` (``offset`` null in a room without history; bytes as
        base64 in ``DATA``, with ``"binary": true``), and a loss this process
        detects as ``{"room": ROOM, "gap": [FIRST, LAST]}``: a page can keep the
        last offset it saw and resume with ``since`` after a reconnect. The
        envelope is made once per message for all such members of the process.
        """
        from takeover.websocket import WebSocket

        if not isinstance(ws, WebSocket):
            raise TypeError(f"ws must be a takeover WebSocket, not {type(ws).__name__}")
        room = check_room(room)
        meta_text = dump_meta(meta)
        since = check_since(since)
        if ws.ready_state >= ws.CLOSING:
            return False
        process = self._here(ws)
        return self._call(process, self._join, process, ws, room, meta_text, since, bool(envelope))

    def _join(
        self, process: _Process, ws: WebSocket, room: str, meta: str, since: int | None, envelope: bool
    ) -> bool:
        locals_, broker = process.locals, process.broker
        member, first = locals_.add(ws, room, meta, envelope)
        if ws.ready_state is ws.CLOSED:  # closed on the way here: its close listener may have run already
            self._leave(process, ws, room)
            return False
        member_id = locals_.member_id(ws)
        assert member_id is not None
        broker.add_presence(room, member_id, meta)
        if member is None:
            return True  # a member already: meta updated
        broker.subscribe(room, member.local, first)
        ok, replay = (True, []) if since is None else broker.since(room, since)
        floor = replay[-1].offset if replay else (since if ok else None)
        if member.local.members.get(ws) is member:  # not closed meanwhile
            locals_.caught_up(member, [(m.offset, m.data) for m in replay], floor)
        return ok

    def leave(self, ws: WebSocket, room: str) -> None:
        """Take ``ws`` out of ``room`` (it is also taken out of every room when it closes)."""
        room = check_room(room)
        process = self._process
        if process is not None and process.pid == os.getpid():
            self._call(process, self._leave, process, ws, room)

    def _leave(self, process: _Process, ws: WebSocket, room: str) -> None:
        member_id, empty = process.locals.remove(ws, room)
        if member_id is None:
            return
        process.broker.remove_presence(room, member_id)
        if empty:
            process.broker.unsubscribe(room)

    def _opened(self, ws: WebSocket) -> None:  # ws's "open" listener, in whatever thread runs its listeners
        process = self._process
        if process is not None:
            self._soon(process, process.locals.open_members, ws)

    def _closed(self, ws: WebSocket) -> None:  # ws's "close" listener
        process = self._process
        if process is not None:
            self._soon(process, self._leave_all, process, ws)

    def _leave_all(self, process: _Process, ws: WebSocket) -> None:
        for room in process.locals.rooms_of(ws):
            self._leave(process, ws, room)

    def _soon(self, process: _Process, fn: Callable[..., object], *args: Any) -> None:
        """``fn(*args)`` in the home, for a WebSocket's ``open`` and ``close`` listeners.

        From a listener thread (the I/O loop's pool) it is waited for: the
        listeners after the hub's may send from that thread straight to the
        socket, and what the hub writes at ``open`` (the replay) must go first.
        """
        self._call(process, fn, *args)

    def rooms(self, ws: WebSocket) -> frozenset[str]:
        """The rooms ``ws`` is a member of."""
        process = self._process
        if process is None or process.pid != os.getpid():
            return frozenset()
        return self._call(process, process.locals.rooms_of, ws)

    # -- messages ------------------------------------------------------------

    def publish(
        self, room: str, data: str | bytes, exclude: WebSocket | Iterable[WebSocket] | None = None
    ) -> Publication:
        """Send ``data`` (``str``: a text message, ``bytes``: binary) to every member of ``room``.

        ``exclude`` is a WebSocket, or several, of this process that must not get
        this message (the sender of a chat line, a typing indicator); every other
        member, in every process, gets it as usual. A member that reconnects later
        with ``since`` is a new WebSocket: its replay has the message.

        Members in this process get it even while the broker cannot be
        reached; then ``remote`` is False (returned within ``timeout``
        seconds, never queued) and other processes do not get it.
        """
        from takeover.websocket import WebSocket

        room = check_room(room)
        data = check_data(data)
        if exclude is None:
            left_out: tuple[WebSocket, ...] = ()
        elif isinstance(exclude, WebSocket):
            left_out = (exclude,)
        else:
            left_out = tuple(exclude)
            for ws in left_out:
                if not isinstance(ws, WebSocket):
                    raise TypeError(f"exclude takes WebSockets, not {type(ws).__name__}")
        process = self._here()
        return self._call(process, process.broker.publish, room, data, left_out)

    def history(self, room: str, since: int | None = None) -> list[Message]:
        """The retained messages of ``room`` after offset ``since``, oldest first.

        Raises :class:`ConnectionError` when Redis cannot be reached (an empty
        list is an empty room).
        """
        room = check_room(room)
        since = check_since(since)
        process = self._here()
        return self._call(process, process.broker.history, room, since)

    def presence(self, room: str) -> list[Member]:
        """The members of ``room`` in every process, with their ``meta``.

        While Redis cannot be reached (``healthy`` is False), this process's
        own members only.
        """
        room = check_room(room)
        process = self._here()
        return self._call(process, process.broker.presence, room)

    # -- health --------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether the broker can be reached (always True on ``memory://``); with several
        Redis servers, whether every one can (:meth:`health` says which cannot)."""
        return self._here().broker.healthy

    def health(self) -> dict[str, bool]:
        """Whether each Redis server can be reached, by its address (``"redis 10.0.0.5:6379/0"``).

        A server that is away affects its own rooms only: the others keep
        delivering. On ``memory://``: ``{"memory://": True}``.
        """
        process = self._here()
        return self._call(process, process.broker.health)

    def shard(self, room: str) -> str:
        """The address of the Redis server ``room`` lives on (as :meth:`health` names it)."""
        room = check_room(room)
        process = self._here()
        return self._call(process, process.broker.shard, room)

    def on(self, event: str, listener: GapListener) -> None:
        """Call ``listener(room, first_lost, last_lost)`` for messages of a room that cannot be recovered.

        ``"gap"`` is the one event: it fires when this process missed
        messages (offsets ``first_lost`` to ``last_lost``, both included)
        that its members should have had and that are not retained any more,
        as after a long outage or when Redis lost its data. Its members then
        need fresh state. Listeners run in the hub's loop: they must not block.
        """
        if event != "gap":
            raise ValueError(f'a Hub has one event, "gap", not {event!r}')
        if not callable(listener):
            raise TypeError("listener must be callable")
        self._gap_listeners.append(listener)

    def _gap(self, room: str, first: int, last: int) -> None:  # in the home, called by the broker
        logger.warning("hub: room %r: offsets %d to %d were missed here, not retained", room, first, last)
        process = self._process
        if process is not None:
            process.stats.gaps += 1
            process.locals.gap(room, first, last)  # members that take envelopes are told too
        for listener in tuple(self._gap_listeners):
            try:
                listener(room, first, last)
            except Exception:
                logger.exception("Exception in a hub 'gap' listener")

    def close(self) -> None:
        """Leave every room and disconnect from the broker; the hub cannot be used again."""
        if self._closed_for_good:
            return
        self._closed_for_good = True
        process, self._process = self._process, None
        if process is None or process.pid != os.getpid():
            return
        STATS.remove_hub(process.stats)

        def close() -> None:
            for ws in tuple(process.locals.sockets):
                self._leave_all(process, ws)
            process.broker.close()

        self._call(process, close)

    def __repr__(self) -> str:
        return f"<Hub {self.url} history={self.settings.history}>"
