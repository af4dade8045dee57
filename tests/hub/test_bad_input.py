"""Bad input to the hub: a TypeError or ValueError that names the argument, and nothing else happens."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from takeover import Hub, WebSocket, publish
from takeover.hub import Publication


@pytest.fixture
def hub() -> Iterator[Hub]:
    made = Hub("memory://")
    yield made
    made.close()


@pytest.mark.parametrize(
    "url, error, words",
    [
        (5, TypeError, "url must be a str"),
        ("ftp://127.0.0.1/", ValueError, "memory://, redis://, rediss:// or unix://"),
        ("memory://somewhere", ValueError, "memory://"),
        ("redis://127.0.0.1:port/0", ValueError, "invalid port"),
        ("redis://127.0.0.1:99999/0", ValueError, "invalid port"),
        ("redis://127.0.0.1:6379/zero", ValueError, "invalid database number"),
        ("redis:///0", ValueError, "no host"),
        ("unix://", ValueError, "socket path"),
    ],
)
def test_a_malformed_url_is_refused_by_hub(url: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        Hub(url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options, words",
    [
        ({"history": -1}, "history"),
        ({"history": "100"}, "history"),
        ({"history": True}, "history"),
        ({"history_ttl": 0}, "history_ttl"),
        ({"presence_ttl": -5}, "presence_ttl"),
        ({"presence_ttl": math.inf}, "presence_ttl"),
        ({"health_check_interval": math.nan}, "health_check_interval"),
        ({"timeout": "1"}, "timeout"),
        ({"prefix": ""}, "prefix"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Hub("memory://", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "room, error, words",
    [
        (5, TypeError, "room must be a str, not int"),
        (None, TypeError, "room must be a str, not NoneType"),
        (b"bytes", TypeError, "room must be a str, not bytes"),
        ("", ValueError, "room must not be empty"),
        ("r" * 201, ValueError, "room must be at most 200 characters"),
    ],
)
def test_a_bad_room_is_refused_everywhere(hub: Hub, room: object, error: type[Exception], words: str) -> None:
    ws = WebSocket(handshake_response=b"")
    for call in (
        lambda: hub.publish(room, "x"),  # type: ignore[arg-type]
        lambda: hub.join(ws, room),  # type: ignore[arg-type]
        lambda: hub.leave(ws, room),  # type: ignore[arg-type]
        lambda: hub.presence(room),  # type: ignore[arg-type]
        lambda: hub.history(room),  # type: ignore[arg-type]
        lambda: publish("redis://127.0.0.1:1/0", room, "x"),  # type: ignore[arg-type]
    ):
        with pytest.raises(error, match=words):
            call()
    assert hub.rooms(ws) == frozenset()


def test_a_room_of_200_characters_is_fine(hub: Hub) -> None:
    assert hub.publish("r" * 200, "x") == Publication(hub.history("r" * 200)[0].offset, True)


@pytest.mark.parametrize(
    "data, error, words",
    [
        (5, TypeError, "data must be str or bytes, not int"),
        (None, TypeError, "data must be str or bytes, not NoneType"),
        ({"a": 1}, TypeError, "data must be str or bytes, not dict"),
        ("\ud800", ValueError, "surrogate"),
    ],
)
def test_bad_data_is_refused(hub: Hub, data: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        hub.publish("room", data)  # type: ignore[arg-type]
    with pytest.raises(error, match=words):
        publish("redis://127.0.0.1:1/0", "room", data)  # type: ignore[arg-type]
    assert hub.history("room") == []  # nothing was published


def test_bytes_like_data_is_sent_as_bytes(hub: Hub) -> None:
    hub.publish("room", bytearray(b"ab"))
    hub.publish("room", memoryview(b"cd"))
    assert [m.data for m in hub.history("room")] == [b"ab", b"cd"]


@pytest.mark.parametrize(
    "meta, error",
    [(object(), TypeError), ({1, 2}, TypeError), (math.nan, ValueError), ({"n": math.inf}, ValueError)],
)
def test_meta_that_does_not_serialise_is_refused(hub: Hub, meta: object, error: type[Exception]) -> None:
    ws = WebSocket(handshake_response=b"")
    with pytest.raises(error, match="meta must be JSON-serialisable"):
        hub.join(ws, "room", meta=meta)
    assert hub.rooms(ws) == frozenset()


def test_a_bad_websocket_or_since_is_refused(hub: Hub) -> None:
    with pytest.raises(TypeError, match="ws must be a takeover WebSocket, not object"):
        hub.join(object(), "room")  # type: ignore[arg-type]
    ws = WebSocket(handshake_response=b"")
    for since in ("3", 1.5, True):
        with pytest.raises(TypeError, match="since must be an int offset or None"):
            hub.join(ws, "room", since=since)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="since must be an int offset or None"):
            hub.history("room", since=since)  # type: ignore[arg-type]


def test_bad_listeners_are_refused(hub: Hub) -> None:
    with pytest.raises(ValueError, match='one event, "gap"'):
        hub.on("message", lambda *args: None)
    with pytest.raises(TypeError, match="callable"):
        hub.on("gap", 3)  # type: ignore[arg-type]


def test_publish_needs_redis_not_memory() -> None:
    with pytest.raises(ValueError, match="memory:// has none"):
        publish("memory://", "room", "x")


def test_a_closed_hub_says_so(hub: Hub) -> None:
    hub.close()
    with pytest.raises(RuntimeError, match="closed"):
        hub.publish("room", "x")
    hub.close()  # twice is fine
