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

__version__ = "0.1.0"

#: The public names and the module each comes from: ``__all__`` and the lazy
#: imports below are made from this table.
_EXPORTS: dict[str, str] = {
    "ClientError": "takeover.errors",
    "ConnectionClosed": "takeover.errors",
    "HandshakeError": "takeover.errors",
    "InvalidStateError": "takeover.errors",
    "ProtocolViolation": "takeover.errors",
    "UnsupportedServerError": "takeover.errors",
    "CloseEvent": "takeover.events",
    "ErrorEvent": "takeover.events",
    "Event": "takeover.events",
    "MessageEvent": "takeover.events",
    "Hub": "takeover.hub",
    "Member": "takeover.hub",
    "Message": "takeover.hub",
    "Publication": "takeover.hub",
    "publish": "takeover.hub",
    "client_js": "takeover.client",
    "DeflateOptions": "takeover.protocol.deflate",
    "Server": "takeover.server",
    "create_server": "takeover.server",
    "WebSocketUpgrade": "takeover.upgrade",
    "upgrade_websocket": "takeover.upgrade",
    "WebSocket": "takeover.websocket",
    "broadcast": "takeover.websocket",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    # The same table, for type checkers, which do not run __getattr__ ("X as X":
    # an explicit re-export). tests/test_public_names.py checks that they agree.
    from takeover.client import client_js as client_js
    from takeover.errors import ClientError as ClientError
    from takeover.errors import ConnectionClosed as ConnectionClosed
    from takeover.errors import HandshakeError as HandshakeError
    from takeover.errors import InvalidStateError as InvalidStateError
    from takeover.errors import ProtocolViolation as ProtocolViolation
    from takeover.errors import UnsupportedServerError as UnsupportedServerError
    from takeover.events import CloseEvent as CloseEvent
    from takeover.events import ErrorEvent as ErrorEvent
    from takeover.events import Event as Event
    from takeover.events import MessageEvent as MessageEvent
    from takeover.hub import Hub as Hub
    from takeover.hub import Member as Member
    from takeover.hub import Message as Message
    from takeover.hub import Publication as Publication
    from takeover.hub import publish as publish
    from takeover.protocol.deflate import DeflateOptions as DeflateOptions
    from takeover.server import Server as Server
    from takeover.server import create_server as create_server
    from takeover.upgrade import WebSocketUpgrade as WebSocketUpgrade
    from takeover.upgrade import upgrade_websocket as upgrade_websocket
    from takeover.websocket import WebSocket as WebSocket
    from takeover.websocket import broadcast as broadcast


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'takeover' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
