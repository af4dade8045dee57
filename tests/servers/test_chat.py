"""examples/chat: the JSON protocol over the wire, against ``takeover serve`` run as a process.

Clients are the ``websockets`` sync client. Every bad-input case checks both
what the offender gets (an ``error`` message or a close code) and that the
rest of the room still works afterwards. A few tests import the example's
token bucket and ``Room`` in-process, with a fake clock, for what would take
seconds of waiting over the wire.
"""

from __future__ import annotations

import importlib
import json
import queue
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.chat_protocol import (
    WAIT,
    Message,
    client,
    closed_with,
    expect,
    expect_type,
    join,
    joined,
    receive,
    said,
    say,
    send,
    unique,
)
from tests.chat_server import ChatServer
from tests.paths import ROOT


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.stop()


# -- clients: tests/chat_protocol.py, with the server's ``client()`` ----------------


# -- the page ----------------------------------------------------------------------


def test_the_page_is_served_and_never_uses_inner_html(chat: ChatServer) -> None:
    with urllib.request.urlopen(chat.http_url, timeout=WAIT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    assert 'id="status"' in page and 'import { ResumingSocket } from "/takeover.js"' in page
    # User data goes in through textContent only.
    for sink in (".innerHTML", ".outerHTML", ".insertAdjacentHTML", "document.write"):
        assert sink not in page


def test_the_page_gets_takeovers_browser_client(chat: ChatServer) -> None:
    with urllib.request.urlopen(chat.http_url + "takeover.js", timeout=WAIT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "export class ResumingSocket" in response.read().decode()


@pytest.mark.parametrize("since", ["-1", "x", "1.5", str(2**53), "٣"])
def test_a_bad_since_in_the_url_is_a_400(chat: ChatServer, since: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as info:
        connect(f"{chat.ws_url}?since={urllib.parse.quote(since)}", open_timeout=WAIT)
    assert info.value.response.status_code == 400
    assert b"since must be an offset" in info.value.response.body


def test_plain_get_on_the_websocket_route_is_a_400(chat: ChatServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(chat.ws_url.replace("ws://", "http://"), timeout=WAIT)
    assert info.value.code == 400


# -- the protocol ------------------------------------------------------------------


def test_join_gets_history_then_presence_and_is_logged(chat: ChatServer) -> None:
    name = unique("ann")
    with client(chat) as ws:
        send(ws, {"type": "join", "name": f"  {name} "})  # surrounding spaces are dropped
        history = receive(ws)
        assert history["type"] == "history" and isinstance(history["messages"], list)
        presence = receive(ws)
        assert presence["type"] == "presence"
        assert name in presence["names"] and presence["names"] == sorted(set(presence["names"]))
        chat.wait_for_line(re.compile(rf'chat INFO join "{name}" from 127\.0\.0\.1:\d+ \(\d+ online\)'))
    chat.wait_for_line(re.compile(rf'chat INFO leave "{name}" from 127\.0\.0\.1:\d+ code=1000'))


def test_a_message_goes_to_everyone_the_sender_too(chat: ChatServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    with joined(chat, alice) as a, joined(chat, bob) as b:
        expect(a, lambda m: m["type"] == "presence" and bob in m["names"])
        text = unique("hello <b>&amp; 👋")
        before = int(time.time() * 1000)
        say(a, text)
        for ws in (a, b):
            message = expect(ws, said(text))  # in the hub's envelope, with its offset
            assert set(message) == {"type", "name", "text", "ts", "offset"}
            assert isinstance(message["offset"], int) and 0 < message["offset"] < 2**53
            assert message["name"] == alice
            assert (
                isinstance(message["ts"], int) and before - 1000 <= message["ts"] <= time.time() * 1000 + 1000
            )
        reply = unique("hi alice")
        say(b, reply)
        assert expect(a, said(reply))["name"] == bob


def test_typing_goes_to_the_others_only(chat: ChatServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    with joined(chat, alice) as a, joined(chat, bob) as b:
        send(a, {"type": "typing"})
        assert expect_type(b, "typing") == {"type": "typing", "name": alice}
        text = unique("done typing")
        say(a, text)
        # Alice's next message after her presence updates is her own text, not a typing.
        message = expect(a, lambda m: m["type"] != "presence")
        assert message["type"] == "message" and message["text"] == text


def test_presence_follows_joins_and_leaves(chat: ChatServer) -> None:
    alice, bob = unique("alice"), unique("bob")
    with joined(chat, alice) as a:
        with joined(chat, bob):
            expect(a, lambda m: m["type"] == "presence" and bob in m["names"])
        presence = expect(a, lambda m: m["type"] == "presence" and bob not in m["names"])
        assert alice in presence["names"]


def test_history_is_sent_on_rejoin(chat: ChatServer) -> None:
    name, text = unique("carol"), unique("remember me")
    with joined(chat, name) as ws:
        say(ws, text)
        expect(ws, said(text))
    with client(chat) as ws:
        history = join(ws, unique("dave"))
    assert history[-1]["text"] == text and history[-1]["name"] == name
    assert set(history[-1]) == {"type", "name", "text", "ts"}


def test_history_keeps_the_last_100_messages(chat: ChatServer) -> None:
    # 6 x 18 = 108 messages, each sender under the rate limit (20 per 5 s, the join included).
    texts = []
    for _ in range(6):
        with joined(chat, unique("poster")) as ws:
            for _ in range(18):
                texts.append(unique("history"))
                say(ws, texts[-1])
            expect(ws, said(texts[-1]))
    with client(chat) as ws:
        history = join(ws, unique("reader"))
    assert [message["text"] for message in history] == texts[-100:]


def sync(ws: ClientConnection) -> Message:
    """Ask for the history again; return it."""
    send(ws, {"type": "sync"})
    return expect_type(ws, "history")


def test_the_history_gives_the_offset_of_its_last_message_and_each_message_carries_its_own(
    chat: ChatServer,
) -> None:
    first, second, third = unique("counted"), unique("counted"), unique("counted")
    with joined(chat, unique("counter")) as ws:
        say(ws, first)
        offset = expect(ws, said(first))["offset"]
        history = sync(ws)
        assert history["messages"][-1]["text"] == first and history["reloaded"] is False
        assert history["offset"] == offset and isinstance(offset, int) and 0 < offset < 2**53
        say(ws, second)
        say(ws, third)
        assert expect(ws, said(second))["offset"] == offset + 1
        assert expect(ws, said(third))["offset"] == offset + 2
        again = sync(ws)
        assert again["offset"] == offset + 2
        assert [m["text"] for m in again["messages"][-3:]] == [first, second, third]


@pytest.mark.parametrize("where", ["join", "url"])
def test_join_since_an_offset_replays_what_was_missed_then_resumed(chat: ChatServer, where: str) -> None:
    """``since`` in the join, or in the URL as takeover.js adds it on a reconnect."""
    from websockets.sync.client import connect

    name, other_name, missed = unique("returning"), unique("other"), [unique("missed"), unique("missed")]
    with joined(chat, name) as ws:
        text = unique("before")
        say(ws, text)
        offset = expect(ws, said(text))["offset"]
    with joined(chat, other_name) as other:
        for text in missed:
            say(other, text)
        expect(other, said(missed[-1]))
    url, join_message = chat.ws_url, {"type": "join", "name": name, "since": offset}
    if where == "url":
        url, join_message = f"{url}?since={offset}", {"type": "join", "name": name}
    with connect(url, open_timeout=WAIT, close_timeout=WAIT) as ws:
        send(ws, join_message)
        replayed = [receive(ws), receive(ws)]
        assert [(m["type"], m["name"], m["text"], m["offset"]) for m in replayed] == [
            ("message", other_name, text, offset + 1 + n) for n, text in enumerate(missed)
        ]
        assert receive(ws) == {"type": "resumed", "since": offset}
        expect(ws, lambda m: m["type"] == "presence" and name in m["names"])
        text = unique("back")
        say(ws, text)
        expect(ws, said(text))


@pytest.mark.parametrize("since", [0, 2**53 - 1], ids=["trimmed", "from-another-run"])
def test_join_since_an_offset_not_kept_reloads_the_room(chat: ChatServer, since: int) -> None:
    with joined(chat, unique("poster")) as ws:
        text = unique("kept")
        say(ws, text)
        expect(ws, said(text))
    with client(chat) as ws:
        send(ws, {"type": "join", "name": unique("late"), "since": since})
        history = receive(ws)
        assert history["type"] == "history" and history["reloaded"] is True
        assert history["messages"][-1]["text"] == text and isinstance(history["offset"], int)


def test_a_long_but_allowed_message_and_name(chat: ChatServer) -> None:
    name, text = unique("long").ljust(32, "n"), "x" * 2000
    with joined(chat, name) as ws:
        say(ws, text)
        assert expect(ws, said(text))["name"] == name


def test_names_need_not_be_unique(chat: ChatServer) -> None:
    name = unique("twin")
    with joined(chat, name) as first, joined(chat, name):
        presence = expect(first, lambda m: m["type"] == "presence")
        assert presence["names"].count(name) == 1


def test_sigterm_closes_every_websocket_with_1001() -> None:
    server = ChatServer()
    try:
        with joined(server, unique("last")) as ws:
            start = len(server.lines)
            server.process.send_signal(signal.SIGTERM)
            code, reason, _ = closed_with(ws)
            assert (code, reason) == (1001, "Server shutting down")
            server.wait_for_line(re.compile(r'chat INFO leave "last-\d+" .*code=1001'), start=start)
        assert server.process.wait(15) == 0
    finally:
        server.stop()


# -- in-process: the token bucket and the flood rule with a fake clock ---------------


@pytest.fixture(scope="module")
def chat_module() -> ModuleType:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("examples.chat.app")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeWebSocket:
    """What ``Room.receive`` uses of a WebSocket: ``ready_state``, ``send``, ``close``."""

    def __init__(self, open_state: Any) -> None:
        self.ready_state = open_state
        self.sent: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.closed: tuple[int, str] | None = None

    def send(self, data: str) -> None:
        self.sent.put(json.loads(data))

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.ready_state = "CLOSING"

    def drain(self) -> list[Message]:
        items = []
        while not self.sent.empty():
            items.append(self.sent.get())
        return items


def test_token_bucket_refills_at_its_rate(chat_module: ModuleType) -> None:
    clock = FakeClock()
    bucket = chat_module.TokenBucket(20, 5.0, clock=clock)
    assert all(bucket.take() for _ in range(20))
    assert not bucket.take()
    clock.now += 0.25  # 4 a second: one token
    assert bucket.take() and not bucket.take()
    clock.now += 60
    assert bucket.refill() == 20  # capped


def _flood_client(chat_module: ModuleType) -> tuple[Any, Any, FakeClock, FakeWebSocket]:
    """A room and a client that has joined, without the room's broadcasts (it is no member)."""
    clock = FakeClock()
    fake = FakeWebSocket(chat_module.WebSocket.OPEN)
    bucket = chat_module.TokenBucket(chat_module.RATE, chat_module.RATE_PERIOD, clock=clock)
    client_ = chat_module.Client(fake, name="flooder", bucket=bucket)
    return chat_module.Room(), client_, clock, fake


def test_flood_rule_in_process(chat_module: ModuleType) -> None:
    room, flooder, _, fake = _flood_client(chat_module)
    typing = '{"type": "message", "text": "spam"}'  # the flooder is no member: nothing comes back
    for _ in range(20):
        room.receive(flooder, typing)
    assert fake.drain() == [] and fake.closed is None
    room.receive(flooder, typing)  # dropped 1: the error
    assert [m["error"] for m in fake.drain()] == ["too many messages: at most 20 every 5 seconds"]
    for _ in range(10):  # dropped 2..11: silently, then the close
        room.receive(flooder, typing)
    assert fake.drain() == [] and fake.closed == (1008, "too many messages")


def test_a_quiet_spell_forgives_an_earlier_flood(chat_module: ModuleType) -> None:
    room, flooder, clock, fake = _flood_client(chat_module)
    typing = '{"type": "message", "text": "spam"}'  # the flooder is no member: nothing comes back
    for _ in range(21 + 5):  # 20 pass, 6 dropped (one error)
        room.receive(flooder, typing)
    assert len(fake.drain()) == 1
    clock.now += 5.0  # the bucket is full again: the flood is over
    for _ in range(21 + 5):
        room.receive(flooder, typing)
    assert len(fake.drain()) == 1 and fake.closed is None  # a new error, not a close


def test_history_is_a_deque_of_100(chat_module: ModuleType) -> None:
    room = chat_module.Room()
    assert room.history.maxlen == 100
    fake = FakeWebSocket(chat_module.WebSocket.OPEN)
    poster = chat_module.Client(fake, name="poster")
    for number in range(150):
        room.say(poster, str(number))
    assert [message["text"] for message in room.history] == [str(n) for n in range(50, 150)]


class UnreachableHub:
    """What ``Room`` uses of a hub that cannot reach Redis."""

    healthy = False

    def on(self, event: str, listener: Callable[..., object]) -> None:
        pass


def test_without_redis_a_join_closes_with_1013_and_a_message_is_refused(
    chat_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_module, "REACH_WAIT", 0.0)
    room = chat_module.Room(UnreachableHub(), UnreachableHub())
    joining = FakeWebSocket(chat_module.WebSocket.OPEN)
    newcomer = chat_module.Client(joining)
    room.receive(newcomer, '{"type": "join", "name": "ann"}')
    # The page reconnects with backoff and joins again; nothing was counted against it.
    assert joining.closed == (1013, "the chat cannot reach its other servers: try again later")
    assert newcomer.name is None and newcomer.invalid == 0 and joining.drain() == []
    talking = FakeWebSocket(chat_module.WebSocket.OPEN)
    member = chat_module.Client(talking, name="bob")
    room.receive(member, '{"type": "message", "text": "hello?"}')
    assert talking.drain() == [
        {"type": "error", "error": "not sent: the chat cannot reach its other servers; try again"}
    ]
    assert talking.closed is None and member.invalid == 0
