"""A chat room: a Flask app with one page at ``/`` and a WebSocket at ``/ws``.

Run it with ``make demo``, or::

    takeover serve examples.chat.app:app --bind 127.0.0.1:8000

and open http://127.0.0.1:8000/ in two browser windows. The page
(``index.html``, plain HTML and JavaScript) shows the messages, who is online
and who is typing, and a status badge; when the server restarts, it reconnects
with exponential backoff, joins again under the same name and shows what it
missed.

The room lives in a :class:`takeover.Hub`, so it can span many server
processes. ``TAKEOVER_HUB`` is its URL (``takeover serve --hub URL`` sets it):
``memory://``, the default, keeps everything in this one process; with
``redis://HOST:PORT/DB`` every process that serves the app is in the same
room. ``make demo-cluster`` runs a Redis, the chat on gunicorn with four
workers on port 8000 and on ``takeover serve`` on port 8001
(``examples/chat/cluster.py``): a page on either port talks to a page on the
other.

The view upgrades in-app: ``upgrade_websocket(request)`` returns the WebSocket
and the 101 response, the view attaches listeners and returns the response,
and returning it is what takes the connection over.

The page reconnects with ``takeover.js``, the browser client shipped in the
package (:func:`takeover.client_js`, served at ``/takeover.js``): its
``ResumingSocket`` reconnects with jittered, capped backoff, keeps what the
user sends while it is away (bounded), and adds ``since=<the last offset it
got>`` to the URL of each new connection.

How the room uses the hub
-------------------------

Two hubs on the same URL (their rooms have different names: on one Redis,
hubs share a room by its name):

* ``messages`` keeps the last 100 messages, for a week after the last one.
  Its room ``chat`` carries the ``message`` objects and nothing else. Members
  join it with ``envelope=True``, so each message reaches the page with its
  offset, ``{"room": "chat", "offset": N, "data": MESSAGE}`` (MESSAGE is the
  ``message`` object as JSON text): the page never counts.
* ``signals`` keeps nothing. Its room ``chat/online`` is the presence list
  (each member's meta is ``{"name": NAME}``) and carries the ``presence``
  messages, which the process where someone joined or left sends with the
  list it reads from the hub. ``chat/typing`` carries ``typing``, published
  with ``exclude=`` the connection that typed: it reaches everyone else, on
  every server.

A join sends the history, then joins the connection to the room with
``since`` at the offset of the history's last message: the hub sends what
was published after that offset, none of it twice, whatever was published
between the two calls. A page that reconnects has ``since`` in its URL (the
offset of the last message it got, from an envelope or a history): the hub
replays what it missed, or, when that is not kept any more (over 100 messages
since, Redis lost its data, a ``memory://`` server restarted), the page gets
a fresh history and says it reloaded the room. When the hub reports that this
process missed messages it cannot recover (its ``"gap"`` event: Redis lost
its data, or was away longer than the room keeps), every page of this process
gets a fresh history the same way.

When Redis cannot be reached (``Hub.healthy`` is False), a join waits up to
5 seconds for it to come back, then the connection is closed with 1013 (try
again later) and the page reconnects by itself; a message waits as long,
then is refused with an ``error``. A message that Redis did not take after
all (``Publication.remote`` is False) reached this process's pages only: its
sender is told, and the pages here get a fresh history once Redis is back.

Protocol
--------

Every message is one JSON object in a text frame, with a ``"type"``, but
the room's messages, which come in the hub's envelope.

Client to server:

``{"type": "join", "name": NAME}`` or ``{"type": "join", "name": NAME, "since": OFFSET}``
    Enter the room as NAME: 1 to 32 printable characters once surrounding
    spaces are removed. Answered with ``history`` (the acknowledgement), then
    a ``presence`` goes to every member. With ``since`` (an integer >= 0, the
    offset of the last message the page got), or without it when the
    WebSocket's URL has ``?since=OFFSET`` (what ``takeover.js`` adds on a
    reconnect), the messages after it come first, then ``resumed``; or, if
    they are not all kept any more, a ``history`` with ``"reloaded": true``.
    A connection joins once. Names need not be unique: one person may have
    several tabs open.
``{"type": "message", "text": TEXT}``
    Say TEXT (1 to 2000 characters, surrounding spaces removed) to the room.
    Needs a ``join`` first.
``{"type": "typing"}``
    The sender is typing. The page sends it at most every two seconds while
    the user types. Needs a ``join`` first.
``{"type": "sync"}``
    Send the history again (a ``history``). Needs a ``join`` first.

Server to client:

``{"type": "history", "messages": [MESSAGE, ...], "offset": OFFSET, "reloaded": BOOL}``
    The last 100 ``message`` objects, oldest first, and the offset of the
    last one (null when there is none, or when messages came too fast to
    tell): the messages that follow have higher offsets. Replaces whatever
    the page showed. Sent on join, on ``sync``, and whenever some messages
    could not be recovered (then ``reloaded`` is true).
``{"type": "resumed", "since": OFFSET}``
    The answer to a ``join`` with ``since`` when all that followed it was kept:
    the messages the page missed came just before it.
``{"room": "chat", "offset": OFFSET, "data": MESSAGE}``
    A message of the room, in the hub's envelope. MESSAGE is JSON text:
    ``{"type": "message", "name": NAME, "text": TEXT, "ts": MS}``, NAME said
    TEXT; ``offset`` its place in the room (null when the room has
    no history, as on a hub that lost Redis); ``ts`` is the server's clock,
    in milliseconds since the Unix epoch. Goes to every member, the sender
    included. ``takeover.js`` unwraps it: the page gets ``data`` and
    ``offset``.
``{"room": "chat", "gap": [FIRST, LAST]}``
    The hub's envelope for messages this server lost (Redis lost them); a
    ``history`` with ``"reloaded": true`` follows.
``{"type": "presence", "names": [NAME, ...]}``
    Who is in the room, on every server, sorted, each name once. Goes to every
    member whenever someone joins or leaves.
``{"type": "typing", "name": NAME}``
    NAME is typing. Goes to every member but the connection that typed.
``{"type": "error", "error": TEXT}``
    The client's last message was refused, and why. The connection stays open
    unless a close follows.

Only members (connections that joined) receive ``message``, ``presence`` and
``typing``. Other extra fields in a client's message are ignored.

Bad input
---------

A client's mistakes or malice never break the room for the others:

* invalid JSON, a message that is not an object, a missing or unknown
  ``type``, a missing, non-string, empty or too long ``name`` or ``text``, text
  that is not valid Unicode (lone surrogates), a ``since`` that is not an
  integer >= 0, a message before ``join`` or a second ``join``: an ``error``
  message. Five such messages in a row close the connection with 1008 "too
  many invalid messages"; a valid one resets the count.
* a binary message: close with 1003 (unsupported data).
* a message over 16 KiB: close with 1009 (message too big), by takeover's
  ``max_message_size``.
* more than 20 messages in 5 seconds (a token bucket holding 20, refilled at
  4 a second): the excess is dropped, the first dropped one answered with an
  ``error``. When more than 10 have been dropped before the bucket is full
  again, the connection closes with 1008 "too many messages".

The server logs one line per join and per leave to the ``chat`` logger
(``takeover serve`` sends INFO to stderr), besides takeover's own access log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import gevent.lock
from flask import Flask, request, send_file
from werkzeug.wrappers import Response

from takeover import CloseEvent, Hub, Message, MessageEvent, WebSocket, client_js, upgrade_websocket

PAGE = Path(__file__).resolve().parent / "index.html"

MAX_NAME = 32  # characters
MAX_TEXT = 2000  # characters
MAX_OFFSET = 2**53  # offsets stay below it (exact in JavaScript)
HISTORY_SIZE = 100  # messages kept and sent on join
HISTORY_TTL = 7 * 24 * 3600.0  # seconds a quiet room keeps them (the hub's default is 5 minutes)
MAX_MESSAGE_SIZE = 16 * 1024  # bytes in one WebSocket message; over it takeover closes with 1009
RATE = 20  # messages a client may send ...
RATE_PERIOD = 5.0  # ... in this many seconds (the token bucket's capacity and refill)
FLOOD_CLOSE = 10  # dropped messages, beyond the first, that close the connection
MAX_INVALID = 5  # refused messages in a row that close the connection
REACH_WAIT = 5.0  # seconds a join or a message waits for the hub to reach Redis again
RELOAD_WAIT = 60.0  # seconds a reload of every page here waits for it
REACH_POLL = 0.02  # seconds between looks at Hub.healthy meanwhile (it has no event)
SYNC_ATTEMPTS = 3  # history-then-join rounds before joining without an offset

# The hubs' rooms (see "How the room uses the hub").
ROOM = "chat"
ONLINE = "chat/online"
TYPING = "chat/typing"

# Close codes (RFC 6455 §7.4.1).
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013

logger = logging.getLogger("chat")


class BadMessage(ValueError):
    """A client's message that is refused; ``str(error)`` is what the client is told."""


class Unavailable(Exception):
    """The hub cannot reach Redis (the other servers) now; not the client's fault."""


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``capacity / period`` a second."""

    def __init__(self, capacity: float, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.rate = capacity / period
        self.tokens = capacity
        self._clock = clock
        self._updated = clock()

    def refill(self) -> float:
        """Add the tokens earned since the last call; return how many there are."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        return self.tokens

    def take(self) -> bool:
        """Spend one token if there is one."""
        if self.refill() >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(eq=False)  # identity equality and hash: kept in a set
class Client:
    """One connection: its WebSocket, its name once it joined, and its limits."""

    ws: WebSocket
    peer: str = "-"
    since: int | None = None  # the URL's ?since=: where a reconnecting page left off
    name: str | None = None
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(RATE, RATE_PERIOD))
    invalid: int = 0  # refused messages in a row
    dropped: int = 0  # messages dropped by the rate limit since the bucket was last full
    member: bool = False  # in every room of the hubs: its join is complete
    #: Held while it (re)joins the messages room: its own join or sync, or a reload of every page.
    lock: Any = field(default_factory=gevent.lock.Semaphore)

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(encode(message))

    def error(self, text: str) -> None:
        self.send({"type": "error", "error": text})


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _text_field(message: dict[str, Any], key: str, limit: int) -> str:
    value = message.get(key)
    if value is None:
        raise BadMessage(f'missing "{key}"')
    if not isinstance(value, str):
        raise BadMessage(f'"{key}" must be a string')
    value = value.strip()
    if not value:
        raise BadMessage(f'"{key}" is empty')
    if len(value) > limit:
        raise BadMessage(f'"{key}" is too long: at most {limit} characters')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # "\ud800" in the JSON: a lone surrogate, not sendable as text
        raise BadMessage(f'"{key}" is not valid Unicode') from None
    return value


def _since_field(message: dict[str, Any]) -> int | None:
    since = message.get("since")
    if since is None:
        return None
    if not isinstance(since, int) or isinstance(since, bool) or not 0 <= since < MAX_OFFSET:
        raise BadMessage('"since" must be an offset: an integer >= 0')
    return since


def since_query(value: str | None) -> int | None:
    """The WebSocket URL's ``since`` (``takeover.js`` adds it on a reconnect); raises :class:`BadMessage`."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) >= MAX_OFFSET:
        raise BadMessage("since must be an offset: an integer >= 0")
    return int(value)


def parse(data: str) -> dict[str, Any]:
    """The message in ``data``, checked and normalized; raises :class:`BadMessage`."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: "[[[[...]]]]" nested too deep
        raise BadMessage("invalid JSON") from None
    if not isinstance(message, dict):
        raise BadMessage("a message must be a JSON object")
    kind = message.get("type")
    if kind == "join":
        name = _text_field(message, "name", MAX_NAME)
        if not name.isprintable():
            raise BadMessage('"name" must be printable characters')
        return {"type": "join", "name": name, "since": _since_field(message)}
    if kind == "message":
        return {"type": "message", "text": _text_field(message, "text", MAX_TEXT)}
    if kind in ("typing", "sync"):
        return {"type": kind}
    if kind is None:
        raise BadMessage('missing "type"')
    if not isinstance(kind, str):
        raise BadMessage('"type" must be a string')
    raise BadMessage(f"unknown type: {kind[:MAX_NAME]}")


def decode_messages(retained: list[Message]) -> list[dict[str, Any]]:
    """The ``message`` objects among a room's retained messages (anything else published there is skipped)."""
    messages = []
    for item in retained:
        try:
            message = json.loads(item.data)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("type") == "message":
            messages.append(message)
    return messages


class Room:
    """The room as this process sees it: its own connections, and the hubs that join them to the others.

    Under ``takeover serve`` (and gunicorn's gevent workers) each
    connection's listeners run in that connection's greenlet, one message
    after another, and greenlets switch only where one waits on I/O: here,
    the hubs' calls to Redis (none on ``memory://``). ``clients`` is only
    added to and taken from, and iterated over as a copy; what a connection
    does to its membership of the messages room (its join, a ``sync``, a
    reload after a gap) is serialised by its ``lock``. Under a threaded
    server (``flask run``) more locks would be needed.
    """

    def __init__(self, messages: Hub | None = None, signals: Hub | None = None) -> None:
        self.messages = messages or Hub("memory://", history=HISTORY_SIZE, history_ttl=HISTORY_TTL)
        self.signals = signals or Hub("memory://", history=0)
        self.clients: set[Client] = set()  # this process's connections
        self.messages.on("gap", self._gap)
        self._reload_pending = False

    @classmethod
    def from_url(cls, url: str) -> Room:
        """A room on the hubs at ``url`` (``memory://`` or a Redis URL)."""
        return cls(Hub(url, history=HISTORY_SIZE, history_ttl=HISTORY_TTL), Hub(url, history=0))

    @property
    def history(self) -> deque[dict[str, Any]]:
        """The last 100 messages, oldest first, as the hub keeps them (in Redis, or in this process)."""
        return deque(decode_messages(self.messages.history(ROOM)), maxlen=HISTORY_SIZE)

    def connect(self, ws: WebSocket, peer: str = "-", since: int | None = None) -> Client:
        """Start serving ``ws``: listen for its messages and its close (``since``: its URL's)."""
        client = Client(ws, peer, since)
        self.clients.add(client)

        def on_message(event: MessageEvent) -> None:
            self.receive(client, event.data)

        def on_close(event: CloseEvent) -> None:
            self.leave(client, event)

        ws.add_event_listener("message", on_message)
        ws.add_event_listener("close", on_close)
        return client

    def names(self) -> list[str]:
        """Who is in the room, on every server: sorted, each name once."""
        members = self.signals.presence(ONLINE)
        return sorted({m.meta["name"] for m in members if isinstance(m.meta, dict) and "name" in m.meta})

    def reachable(self, wait: float | None = None) -> bool:
        """Whether both hubs reach Redis, waiting up to ``wait`` seconds (``REACH_WAIT``) for them."""
        deadline = time.monotonic() + (REACH_WAIT if wait is None else wait)
        while not (self.messages.healthy and self.signals.healthy):
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(REACH_POLL)
        return True

    # -- one client's message ---------------------------------------------

    def receive(self, client: Client, data: str | bytes | bytearray) -> None:
        ws = client.ws
        if ws.ready_state != WebSocket.OPEN:  # closing (we closed it): ignore what still comes
            return
        if not isinstance(data, str):
            ws.close(UNSUPPORTED_DATA, "binary messages are not supported")
            return
        if not self._admit(client):
            return
        kind = None
        try:
            message = parse(data)
            kind = message["type"]
            if kind == "join":
                since = message["since"]
                self.join(client, message["name"], client.since if since is None else since)
            elif kind == "message":
                self.say(client, message["text"])
            elif kind == "typing":
                self.typing(client)
            else:
                self.sync(client)
        except BadMessage as error:
            client.invalid += 1
            client.error(str(error))
            if client.invalid >= MAX_INVALID:
                ws.close(POLICY_VIOLATION, "too many invalid messages")
            return
        except Unavailable as error:
            if kind == "message":
                client.error(str(error))
            else:  # the page reconnects with backoff and joins again
                ws.close(TRY_AGAIN_LATER, str(error))
            return
        client.invalid = 0

    def _admit(self, client: Client) -> bool:
        """The rate limit: whether the token bucket lets this message through."""
        bucket = client.bucket
        if bucket.refill() >= bucket.capacity:  # quiet long enough: any earlier flood is over
            client.dropped = 0
        if bucket.take():
            return True
        client.dropped += 1
        if client.dropped == 1:
            client.error(f"too many messages: at most {RATE} every {RATE_PERIOD:g} seconds")
        elif client.dropped > FLOOD_CLOSE:
            client.ws.close(POLICY_VIOLATION, "too many messages")
        return False

    # -- the room's operations ----------------------------------------------

    def join(self, client: Client, name: str, since: int | None = None) -> None:
        if client.name is not None:
            raise BadMessage(f"already joined as {client.name}")
        if not self.reachable():
            raise Unavailable("the chat cannot reach its other servers: try again later")
        client.name = name
        ws = client.ws
        try:
            with client.lock:
                self._follow(client, since)
        except Unavailable:
            client.name = None  # not joined: its close is no leave
            raise
        self.signals.join(ws, ONLINE, meta={"name": name})
        self.signals.join(ws, TYPING)
        client.member = True
        names = self.announce()
        logger.info("join %s from %s (%d online)", json.dumps(name), client.peer, len(names))

    def say(self, client: Client, text: str) -> None:
        if client.name is None:
            raise BadMessage("join first")
        if not self.reachable():
            raise Unavailable("not sent: the chat cannot reach its other servers; try again")
        message = {"type": "message", "name": client.name, "text": text, "ts": int(time.time() * 1000)}
        if not self.messages.publish(ROOM, encode(message)).remote:
            # Redis went away meanwhile: only this process's members got it, without an offset.
            client.error("the chat lost its other servers: your message may not have reached everyone")
            self.reload_everyone()

    def typing(self, client: Client) -> None:
        if client.name is None:
            raise BadMessage("join first")
        self.signals.publish(TYPING, encode({"type": "typing", "name": client.name}), exclude=client.ws)

    def sync(self, client: Client) -> None:
        if client.name is None:
            raise BadMessage("join first")
        with client.lock:
            self._reload(client, reloaded=False)

    def leave(self, client: Client, event: CloseEvent) -> None:
        self.clients.discard(client)
        client.member = False
        if client.name is None:
            return
        # The hubs take a closed WebSocket out of its rooms too, maybe after this listener: leave first,
        # so that the presence sent below no longer has it.
        self.messages.leave(client.ws, ROOM)
        self.signals.leave(client.ws, ONLINE)
        self.signals.leave(client.ws, TYPING)
        names = self.announce()
        logger.info(
            "leave %s from %s code=%d (%d online)",
            json.dumps(client.name),
            client.peer,
            event.code,
            len(names),
        )

    def announce(self) -> list[str]:
        """Send the presence list to every member, on every server; return its names.

        Two servers' joins at once could each read the list before the other's
        member is in it, and the older list could arrive last: so the list is
        read again after it is sent, and sent again (at most twice more) while
        it changed meanwhile. Without Redis it is not sent (it would hold
        only this process's members).
        """
        if not self.reachable():
            return self.names()
        sent: list[str] | None = None
        names = self.names()
        for _ in range(3):
            if names == sent:
                break
            self.signals.publish(ONLINE, encode({"type": "presence", "names": names}))
            sent, names = names, self.names()
        return names

    # -- the messages room: history, then live from its last offset ----------

    def _follow(self, client: Client, since: int | None) -> None:
        """Join ``client`` to the messages room, from ``since`` if all that followed it is kept."""
        if since is not None:
            if self.messages.join(client.ws, ROOM, since=since, envelope=True):  # the missed ones went out
                client.send({"type": "resumed", "since": since})
                return
            self.messages.leave(client.ws, ROOM)
        self._reload(client, reloaded=since is not None)

    def _reload(self, client: Client, *, reloaded: bool) -> None:
        """Send ``client`` the history, then join it to the messages room from the history's last offset.

        Out of the room while the history is read, then joined with ``since``
        at its last offset: the hub sends what was published meanwhile, and
        nothing the history had. An empty room has no offset to join from:
        the client joins live, and the history is read again; if a message
        came in between, it starts over with that history. A join that finds
        the offset gone (over 100 messages in between) is tried again; the
        last attempt joins without an offset.
        """
        ws = client.ws
        self.messages.leave(ws, ROOM)
        for attempt in range(SYNC_ATTEMPTS):
            if ws.ready_state != WebSocket.OPEN:
                return
            retained = self.messages.history(ROOM)
            if not retained and not self.messages.healthy:
                raise Unavailable("the chat cannot reach its other servers: try again later")
            last = retained[-1].offset if retained and attempt < SYNC_ATTEMPTS - 1 else None
            messages = decode_messages(retained)
            client.send({"type": "history", "messages": messages, "offset": last, "reloaded": reloaded})
            if self.messages.join(ws, ROOM, since=last, envelope=True):
                if retained or self.messages.history(ROOM) == []:
                    return  # from its offset on; or the room was empty before the join and after it
            self.messages.leave(ws, ROOM)

    def _gap(self, room: str, first: int, last: int) -> None:
        """The hub's ``"gap"``: this process missed messages it cannot recover; every page here reloads."""
        if room == ROOM:
            self.reload_everyone()

    def reload_everyone(self) -> None:
        """Send each page of this process a fresh history (``"reloaded": true``), from another greenlet."""
        if not self._reload_pending:
            self._reload_pending = True
            gevent.spawn(self._reload_everyone)

    def _reload_everyone(self) -> None:
        self._reload_pending = False  # a gap from now on reloads again
        if not self.reachable(RELOAD_WAIT):
            logger.warning("cannot reload the pages: the hub does not reach Redis")
            return
        clients = [c for c in tuple(self.clients) if c.member]
        logger.info("reloading %d pages: messages were lost", len(clients))
        for client in clients:
            with client.lock:
                try:
                    self._reload(client, reloaded=True)
                except Unavailable:
                    logger.warning("cannot reload the pages: the hub does not reach Redis")
                    return
                except Exception:  # one page's trouble (a send that timed out) is not the others'
                    logger.exception("cannot reload the page of %s", client.peer)


app = Flask(__name__)
room = Room.from_url(os.environ.get("TAKEOVER_HUB", "memory://"))


@app.get("/")
def index() -> Response:
    """The chat page: HTML, CSS and JavaScript in one file."""
    return send_file(PAGE, mimetype="text/html", max_age=0)


@app.get("/takeover.js")
def client() -> Response:
    """takeover's browser client, which the page imports (``ResumingSocket``)."""
    return Response(client_js(), mimetype="text/javascript", headers={"Cache-Control": "no-cache"})


@app.route("/ws", websocket=True)  # Werkzeug routes WebSocket requests only to such rules
def ws() -> Response:
    """Upgrade, hand the WebSocket to the room, and return the 101 response."""
    try:
        since = since_query(request.args.get("since"))
    except BadMessage as error:
        return Response(f"{error}\n", status=400, mimetype="text/plain")
    socket, response = upgrade_websocket(request, max_message_size=MAX_MESSAGE_SIZE)
    room.connect(socket, f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}", since)
    return response
