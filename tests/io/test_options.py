"""takeover.options.WebSocketOptions: defaults written once, checked values, and how upgrades use them."""

from __future__ import annotations

import dataclasses
from typing import Any

import gevent.socket
import pytest
from werkzeug.test import EnvironBuilder

from takeover import DeflateOptions, upgrade_websocket
from takeover.options import DEFAULT_OPTIONS, OPTIONS_KEY, UNSET, WebSocketOptions
from takeover.protocol.origin import OriginPolicy

HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_the_defaults() -> None:
    assert DEFAULT_OPTIONS == WebSocketOptions(
        idle_timeout=30.0, max_message_size=64 * 1024 * 1024, close_timeout=10.0, max_queue=64,
        compression=None, allowed_origins=None, high_water_mark=1024 * 1024, send_timeout=30.0,
        max_buffered_amount=16 * 1024 * 1024,
    )


def test_it_is_frozen_and_replace_skips_unset() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_OPTIONS.idle_timeout = 5  # type: ignore[misc]
    assert DEFAULT_OPTIONS.replace(idle_timeout=UNSET, max_queue=UNSET) is DEFAULT_OPTIONS
    changed = DEFAULT_OPTIONS.replace(idle_timeout=5, max_queue=UNSET)
    assert changed.idle_timeout == 5 and changed.max_queue == 64


def test_values_are_normalised() -> None:
    options = WebSocketOptions(idle_timeout=0, max_message_size=0, compression="deflate",
                               allowed_origins=["HTTPS://App.Example.com:443"])
    assert options.idle_timeout is None and options.max_message_size is None
    assert options.compression == DeflateOptions()
    assert options.allowed_origins == OriginPolicy(origins=frozenset({"https://app.example.com"}))


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("idle_timeout", -1, ValueError),
        ("close_timeout", 0, ValueError),
        ("close_timeout", None, ValueError),
        ("max_queue", 0, ValueError),
        ("max_message_size", -5, ValueError),
        ("high_water_mark", -1, ValueError),
        ("send_timeout", 0, ValueError),
        ("max_buffered_amount", "lots", ValueError),
        ("compression", "zstd", ValueError),
        ("allowed_origins", "https://one.example", TypeError),
    ],
)
def test_bad_values_name_the_option(name: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=name):
        WebSocketOptions(**{name: value})


def test_the_send_wait_threshold_is_capped_by_the_hard_limit() -> None:
    assert WebSocketOptions(high_water_mark=100, max_buffered_amount=50).send_wait_threshold == 50
    assert WebSocketOptions(high_water_mark=None).send_wait_threshold is None
    assert WebSocketOptions(high_water_mark=100, max_buffered_amount=None).send_wait_threshold == 100


def upgrade(environ_options: WebSocketOptions | None, **arguments: Any) -> WebSocketOptions:
    environ = EnvironBuilder(path="/o", headers=HEADERS).get_environ()
    if environ_options is not None:
        environ[OPTIONS_KEY] = environ_options
    ours, _theirs = gevent.socket.socketpair()
    ws, _ = upgrade_websocket(environ, socket=ours, **arguments)
    ws.close()
    return ws.options


def test_an_upgrade_starts_from_the_servers_options_and_applies_its_arguments() -> None:
    server = WebSocketOptions(idle_timeout=7, max_queue=3)
    assert upgrade(server) is server, "an upgrade that changes nothing shares the server's object"
    options = upgrade(server, max_queue=9)
    assert (options.idle_timeout, options.max_queue) == (7, 9)
    assert upgrade(None).idle_timeout == 30.0
    assert upgrade(server, idle_timeout=None).idle_timeout is None
    assert upgrade(server, options=WebSocketOptions(max_queue=5)).idle_timeout == 30.0
