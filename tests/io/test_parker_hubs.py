"""One parker per event loop: gevent hubs in several threads each park and resume their own readers."""

from __future__ import annotations

import threading
from typing import Any

import gevent
import gevent.socket
from werkzeug.test import EnvironBuilder

from takeover import upgrade_websocket
from takeover._io.loop import current_loop
from takeover._io.parker import PARK_AFTER
from tests.clients import RawClient
from tests.frames import client_frame

HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def park_and_resume(results: dict[str, Any], name: str) -> None:
    """In this thread's own hub: open a session, let its reader park, then wake it with a message."""
    try:
        loop = current_loop()
        ours, theirs = gevent.socket.socketpair()
        environ = EnvironBuilder(path="/p", headers=HEADERS).get_environ()
        ws, _ = upgrade_websocket(environ, socket=ours, idle_timeout=None)
        ws.onmessage = lambda event: ws.send(event.data)
        client = RawClient(0, connect=lambda *args, **kwargs: theirs)
        assert client.read_response()[0] == 101
        transport: Any = ws.session.transport
        for _ in range(int(PARK_AFTER * 10 / 0.05)):  # bounded: 10 intervals
            if transport._parked:
                break
            gevent.sleep(0.05)
        parked = transport._parked
        client.send(client_frame(0x1, name.encode()))
        echoed = client.read_frame()
        ws.close()
        results[name] = {
            "takeover_loop": loop,
            "session_loop": ws.session.loop,
            "loop": gevent.get_hub().loop,
            "parked": parked,
            "echo": echoed,
            "parker_loop": loop.parker._loop,
        }
    except BaseException as error:  # reported to the test thread
        results[name] = error


def test_each_threads_hub_parks_and_resumes_its_own_readers() -> None:
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=park_and_resume, args=(results, name)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a hub thread did not finish"
    for name in ("a", "b"):
        result = results[name]
        assert not isinstance(result, BaseException), repr(result)
        assert result["parked"], f"thread {name}'s idle reader was not parked"
        assert result["echo"] == (0x1, True, name.encode()), "the parked reader did not resume"
        assert result["parker_loop"] is result["loop"], "the parker runs on another thread's loop"
        assert result["session_loop"] is result["takeover_loop"], "the session left its thread's hub"
    assert results["a"]["loop"] is not results["b"]["loop"]
    assert results["a"]["takeover_loop"].parker is not results["b"]["takeover_loop"].parker


def test_a_hub_keeps_one_loop() -> None:
    assert current_loop() is current_loop()
