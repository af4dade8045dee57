"""Flask's contexts around a WebSocket's listeners, as they were at the upgrade.

A listener attached in a Flask view runs long after the view returned, in
another greenlet or thread, where Flask's context variables are empty. When
:func:`takeover.upgrade_websocket` is called inside a Flask request,
:func:`capture` keeps what the listeners need:

* a copy of the request context (the same ``request`` object and session, as
  :func:`flask.copy_current_request_context` makes), made current for each
  call without pushing it again, so ``request.args``, ``session`` and
  ``url_for`` work and the request's own teardown does not run again;
* the app, whose application context is pushed for each call and popped after
  it, so ``teardown_appcontext`` runs after every call: a Flask-SQLAlchemy
  session goes back to the pool per message, not per connection;
* ``g`` as the view left it (Flask-Login keeps the user there), copied into
  each call's fresh ``g``.

Outside Flask nothing is captured and listeners run as they always did.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["FlaskContext", "capture"]

T = TypeVar("T")


class FlaskContext:
    """The app, a copy of the request context and ``g``'s values, from one upgrade."""

    __slots__ = ("_app", "_g", "_request", "_request_var")

    def __init__(self, app: Any, request_context: Any, g_values: dict[str, Any], request_var: Any) -> None:
        self._app = app
        self._request = request_context
        self._g = g_values
        self._request_var = request_var

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside a new application context and the upgrade's request context."""
        app_context = self._app.app_context()
        if self._g:
            app_context.g.__dict__.update(self._g)
        app_context.push()
        token = self._request_var.set(self._request)
        try:
            return fn(*args)
        finally:
            self._request_var.reset(token)
            app_context.pop()  # teardown_appcontext, once per call


def capture() -> FlaskContext | None:
    """The current Flask request's contexts, or None outside one (or without Flask)."""
    flask = sys.modules.get("flask")
    if flask is None:
        return None
    from flask import globals as flask_globals

    request_var = getattr(flask_globals, "_cv_request", None)
    if request_var is None:  # a Flask without it: nothing to restore
        return None
    request_context = request_var.get(None)
    if request_context is None:
        return None
    g_values = dict(flask.g.__dict__) if flask.has_app_context() else {}
    return FlaskContext(request_context.app, request_context.copy(), g_values, request_var)
