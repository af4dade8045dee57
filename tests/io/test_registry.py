"""takeover._io.registry.Registry: which WebSockets a server owns, and what upgrades find in the environ."""

from __future__ import annotations

import gc
import socket
from typing import Any

import gevent.socket
import pytest
from werkzeug.test import EnvironBuilder

from takeover import InvalidStateError, create_server, upgrade_websocket
from takeover._io.registry import DEFAULT_REGISTRY, REGISTRY_KEY, Registry
from tests.clients import RawClient, handshake_request
from tests.frames import client_frame

HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def environ_with(registry: Registry | None) -> dict[str, Any]:
    environ = EnvironBuilder(path="/r", headers=HEADERS).get_environ()
    if registry is not None:
        environ[REGISTRY_KEY] = registry
    return environ


def test_an_upgrade_registers_in_the_environs_registry_until_it_closes() -> None:
    registry = Registry()
    ours, theirs = gevent.socket.socketpair()
    ws, _ = upgrade_websocket(environ_with(registry), socket=ours)
    assert len(registry) == 1 and registry.websocket_for(ours) is ws
    assert registry.open_websockets() == [ws]
    assert DEFAULT_REGISTRY.websocket_for(ours) is None, "it went to the process's registry too"
    client = RawClient(0, connect=lambda *args, **kwargs: theirs)
    assert client.read_response()[0] == 101
    client.send(client_frame(0x8, (1000).to_bytes(2, "big")))
    assert ws.wait_closed(5)
    assert len(registry) == 0 and registry.open_websockets() == []


def test_an_empty_registry_is_still_the_one_used() -> None:
    # A registry with nothing in it has len() 0: it must not be mistaken for "none given".
    registry = Registry()
    ours, _theirs = gevent.socket.socketpair()
    ws, _ = upgrade_websocket(environ_with(registry), socket=ours)
    assert registry.websocket_for(ours) is ws
    ws.close()


def test_without_a_registry_upgrades_go_to_the_process_registry() -> None:
    ours, _theirs = gevent.socket.socketpair()
    ws, _ = upgrade_websocket(environ_with(None), socket=ours)
    assert DEFAULT_REGISTRY.websocket_for(ours) is ws
    ws.close()


def test_a_socket_is_upgraded_once() -> None:
    registry = Registry()
    ours, _theirs = gevent.socket.socketpair()
    ws, _ = upgrade_websocket(environ_with(registry), socket=ours)
    with pytest.raises(InvalidStateError, match="already been upgraded"):
        upgrade_websocket(environ_with(registry), socket=ours)
    with pytest.raises(InvalidStateError, match="already been upgraded"):
        registry.add(ours, ws)
    ws.close()


def test_a_closed_websocket_leaves_nothing_in_the_registry() -> None:
    registry = Registry()
    plain_a, plain_b = socket.socketpair()
    ours = gevent.socket.socket(fileno=plain_a.detach())
    ws, _ = upgrade_websocket(environ_with(registry), socket=ours)
    plain_b.close()  # EOF: the session ends
    assert ws.wait_closed(5)
    del ws, ours
    gc.collect()
    assert len(registry) == 0


def test_two_servers_count_their_own_websockets(make_server: Any) -> None:
    servers = [make_server(), make_server()]
    for server in servers:
        server.on("upgrade", lambda request, sock, head: upgrade_websocket(request, socket=sock, head=head))
    clients = []
    for count, server in zip((1, 2), servers, strict=True):
        for _ in range(count):
            client = RawClient(server.address[1], connect=gevent.socket.create_connection)
            client.send(handshake_request())
            assert client.read_response()[0] == 101
            clients.append(client)
    assert [len(server.registry) for server in servers] == [1, 2]
    assert servers[0].registry is not servers[1].registry
    for client in clients:
        client.close()


def test_create_server_gives_each_server_a_registry() -> None:
    assert create_server().registry is not create_server().registry
