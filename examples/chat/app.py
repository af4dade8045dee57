"""A chat room: a Flask app with one page at ``/`` and a WebSocket at ``/ws``.

Run it with ``make demo``, or::

    takeover serve examples.chat.app:app --bind 127.0.0.1:8000

and open http://127.0.0.1:8000/ in two browser windows. The page
(``index.html``, plain HTML and JavaScript) shows the messages, who is online
and who is typing, and a status badge; when the server restarts, it reconnects
with exponential backoff and joins again under the same name.

The view upgrades in-app: ``upgrade_websocket(request)`` returns the WebSocket
and the 101 response, the view attaches listeners and returns the response,
and returning it is what takes the connection over.

Protocol
--------

Every message is one JSON object in a text frame, with a ``"type"``.

Client to server:

``{"type": "join", "name": NAME}``
    Enter the room as NAME: 1 to 32 printable characters once surrounding
    spaces are removed. Answered with ``history`` (the acknowledgement), then
    a ``presence`` goes to every member. A connection joins once. Names need
    not be unique: one person may have several tabs open.
``{"type": "message", "text": TEXT}``
    Say TEXT (1 to 2000 characters, surrounding spaces removed) to the room.
    Needs a ``join`` first.
``{"type": "typing"}``
    The sender is typing. The page sends it at most every two seconds while
    the user types. Needs a ``join`` first.

Server to client:

``{"type": "history", "messages": [MESSAGE, ...]}``
    The last 100 ``message`` objects, oldest first; sent once, on join.
``{"type": "message", "name": NAME, "text": TEXT, "ts": MS}``
    NAME said TEXT; ``ts`` is the server's clock, in milliseconds since the
    Unix epoch. Goes to every member, the sender included.
``{"type": "presence", "names": [NAME, ...]}``
    Who is in the room, sorted, each name once. Goes to every member whenever
    someone joins or leaves.
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
  that is not valid Unicode (lone surrogates), a message before ``join`` or a
  second ``join``: an ``error`` message. Five such messages in a row close
  the connection with 1008 "too many invalid messages"; a valid one resets
  the count.
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
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, request, send_file
from werkzeug.wrappers import Response

from takeover import CloseEvent, MessageEvent, WebSocket, broadcast, upgrade_websocket

PAGE = Path(__file__).resolve().parent / "index.html"

MAX_NAME = 32  # characters
MAX_TEXT = 2000  # characters
HISTORY_SIZE = 100  # messages kept and sent on join
MAX_MESSAGE_SIZE = 16 * 1024  # bytes in one WebSocket message; over it takeover closes with 1009
RATE = 20  # messages a client may send ...
RATE_PERIOD = 5.0  # ... in this many seconds (the token bucket's capacity and refill)
FLOOD_CLOSE = 10  # dropped messages, beyond the first, that close the connection
MAX_INVALID = 5  # refused messages in a row that close the connection

# Close codes (RFC 6455 §7.4.1).
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008

logger = logging.getLogger("chat")


class BadMessage(ValueError):
    """A client's message that is refused; ``str(error)`` is what the client is told."""


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
    name: str | None = None
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(RATE, RATE_PERIOD))
    invalid: int = 0  # refused messages in a row
    dropped: int = 0  # messages dropped by the rate limit since the bucket was last full

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


def parse(data: str) -> dict[str, str]:
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
        return {"type": "join", "name": name}
    if kind == "message":
        return {"type": "message", "text": _text_field(message, "text", MAX_TEXT)}
    if kind == "typing":
        return {"type": "typing"}
    if kind is None:
        raise BadMessage('missing "type"')
    if not isinstance(kind, str):
        raise BadMessage('"type" must be a string')
    raise BadMessage(f"unknown type: {kind[:MAX_NAME]}")


class Room:
    """All the server's state: the connections, who joined as whom, the last messages.

    No locks: under ``takeover serve`` (and gunicorn's gevent workers) each
    connection's listeners run in that connection's greenlet, and greenlets
    switch only where one blocks on I/O. Nothing here blocks (``send`` and
    ``broadcast`` queue the frames for each socket's writer), so each method
    runs to its end before another connection's listener starts. Under a
    threaded server (``flask run``) a lock around these methods would be needed.
    """

    def __init__(self, history_size: int = HISTORY_SIZE) -> None:
        self.clients: set[Client] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)

    def connect(self, ws: WebSocket, peer: str = "-") -> Client:
        """Start serving ``ws``: listen for its messages and its close."""
        client = Client(ws, peer)
        self.clients.add(client)

        def on_message(event: MessageEvent) -> None:
            self.receive(client, event.data)

        def on_close(event: CloseEvent) -> None:
            self.leave(client, event)

        ws.add_event_listener("message", on_message)
        ws.add_event_listener("close", on_close)
        return client

    def names(self) -> list[str]:
        return sorted({client.name for client in self.clients if client.name is not None})

    def send_all(self, message: dict[str, Any], *, exclude: Client | None = None) -> None:
        """Send ``message`` to every member (framed once, by ``takeover.broadcast``)."""
        members = (c.ws for c in self.clients if c.name is not None and c is not exclude)
        broadcast(members, encode(message))

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
        try:
            message = parse(data)
            if message["type"] == "join":
                self.join(client, message["name"])
            elif message["type"] == "message":
                self.say(client, message["text"])
            else:
                self.typing(client)
        except BadMessage as error:
            client.invalid += 1
            client.error(str(error))
            if client.invalid >= MAX_INVALID:
                ws.close(POLICY_VIOLATION, "too many invalid messages")
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

    def join(self, client: Client, name: str) -> None:
        if client.name is not None:
            raise BadMessage(f"already joined as {client.name}")
        client.name = name
        client.send({"type": "history", "messages": list(self.history)})
        names = self.names()
        logger.info("join %s from %s (%d online)", json.dumps(name), client.peer, len(names))
        self.send_all({"type": "presence", "names": names})

    def say(self, client: Client, text: str) -> None:
        if client.name is None:
            raise BadMessage("join first")
        message = {"type": "message", "name": client.name, "text": text, "ts": int(time.time() * 1000)}
        self.history.append(message)
        self.send_all(message)

    def typing(self, client: Client) -> None:
        if client.name is None:
            raise BadMessage("join first")
        self.send_all({"type": "typing", "name": client.name}, exclude=client)

    def leave(self, client: Client, event: CloseEvent) -> None:
        self.clients.discard(client)
        if client.name is None:
            return
        names = self.names()
        logger.info(
            "leave %s from %s code=%d (%d online)",
            json.dumps(client.name),
            client.peer,
            event.code,
            len(names),
        )
        self.send_all({"type": "presence", "names": names})


app = Flask(__name__)
room = Room()


@app.get("/")
def index() -> Response:
    """The chat page: HTML, CSS and JavaScript in one file."""
    return send_file(PAGE, mimetype="text/html", max_age=0)


@app.route("/ws", websocket=True)  # Werkzeug routes WebSocket requests only to such rules
def ws() -> Response:
    """Upgrade, hand the WebSocket to the room, and return the 101 response."""
    socket, response = upgrade_websocket(request, max_message_size=MAX_MESSAGE_SIZE)
    room.connect(socket, f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '?')}")
    return response
