"""takeover: node:http-style socket takeover and WebSockets for Python WSGI apps.

``upgrade_websocket`` is ``Deno.upgradeWebSocket`` for WSGI: over a socket from
a server's ``upgrade`` event (``socket=``, ``head=``), or in-app, returning the
101 response from a view. ``create_server`` makes a gevent WSGI server with
node:http's events.

Names are imported on first use, so ``import takeover.protocol`` (the sans-I/O
core) does not pull in gevent or werkzeug.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from takeover.errors import ConnectionClosed, HandshakeError, InvalidStateError
    from takeover.events import CloseEvent, ErrorEvent, Event, MessageEvent
    from takeover.protocol.deflate import DeflateOptions
    from takeover.server import Server, create_server
    from takeover.upgrade import WebSocketUpgrade, upgrade_websocket
    from takeover.websocket import WebSocket, broadcast

__version__ = "0.1.0"

__all__ = [
    "CloseEvent",
    "ConnectionClosed",
    "DeflateOptions",
    "ErrorEvent",
    "Event",
    "HandshakeError",
    "InvalidStateError",
    "MessageEvent",
    "Server",
    "WebSocket",
    "WebSocketUpgrade",
    "broadcast",
    "create_server",
    "upgrade_websocket",
]

_WHERE = {
    "ConnectionClosed": "takeover.errors",
    "HandshakeError": "takeover.errors",
    "InvalidStateError": "takeover.errors",
    "CloseEvent": "takeover.events",
    "ErrorEvent": "takeover.events",
    "Event": "takeover.events",
    "MessageEvent": "takeover.events",
    "DeflateOptions": "takeover.protocol.deflate",
    "Server": "takeover.server",
    "create_server": "takeover.server",
    "WebSocketUpgrade": "takeover.upgrade",
    "upgrade_websocket": "takeover.upgrade",
    "WebSocket": "takeover.websocket",
    "broadcast": "takeover.websocket",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'takeover' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
