"""takeover's pytest plugin (loaded by pytest once takeover is installed): the ``websocket_connect`` fixture.

::

    @pytest.fixture
    def app():
        return create_app()

    def test_echo(websocket_connect):
        with websocket_connect("/ws") as ws:
            ws.send("hello")
            assert ws.receive() == "hello"

``websocket_connect(path, **options)`` is :func:`takeover.testing.connect`
with the test's ``app`` fixture (the WSGI app: Flask's, or any other) as its
first argument; every option is ``connect``'s. A WebSocket the test left
open is closed when the test ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["websocket_connect"]


@pytest.fixture
def websocket_connect(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``connect`` bound to the ``app`` fixture; what the test leaves open is closed after it."""
    from takeover.testing import connect

    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError(
            "websocket_connect needs a fixture named 'app' that returns the WSGI app to connect to"
        ) from None
    with contextlib.ExitStack() as stack:

        def opened(path: str = "/", **options: Any) -> Any:
            return _Opened(stack, connect(app, path, **options))

        yield opened


class _Opened:
    """What ``websocket_connect(...)`` returns: for ``with``, or used at once (closed at teardown)."""

    def __init__(self, stack: contextlib.ExitStack, manager: Any) -> None:
        self._stack = stack
        self._manager = manager
        self._ws: Any = None

    def __enter__(self) -> Any:
        self._ws = self._manager.__enter__()
        return self._ws

    def __exit__(self, *exc: Any) -> Any:
        return self._manager.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:  # used without `with`: opened now, closed at teardown
        if self._ws is None:
            self._ws = self._stack.enter_context(self._manager)
        return getattr(self._ws, name)
