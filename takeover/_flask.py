"""Flask's contexts around a WebSocket's listeners, as they were at the upgrade.

A listener attached in a Flask view runs long after the view returned, in
another greenlet or thread, where Flask's context variables are empty. When
:func:`takeover.upgrade_websocket` is called inside a Flask request,
:func:`capture` keeps what the listeners need:

* a copy of the request context, as :func:`flask.copy_current_request_context`
  makes one (the same session; a shallow copy of the request, over a copy of
  the environ taken at the upgrade, since servers clear or reuse theirs), made
  current for each call without pushing it again, so ``request.args``,
  ``session`` and ``url_for`` work and the request's own teardown does not
  run again;
* the app, whose application context is pushed for each call and popped after
  it, so ``teardown_appcontext`` runs after every call: a Flask-SQLAlchemy
  session goes back to the pool per message, not per connection;
* ``g`` as the view left it (Flask-Login keeps the user there), copied into
  each call's fresh ``g``.

Outside Flask nothing is captured and listeners run as they always did.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["FlaskContext", "capture"]

T = TypeVar("T")


class FlaskContext:
    """The app, a copy of the request context and ``g``'s values, from one upgrade."""

    __slots__ = (
        "_app", "_app_context", "_app_var", "_busy", "_environ", "_g", "_request", "_request_var",
        "_signals", "_tearing_down",
    )

    def __init__(self, app: Any, request_context: Any, g_values: dict[str, Any]) -> None:
        flask_globals, signals = _flask_modules()
        self._app = app
        #: The upgrade's request context; copied on the first call (a handshake that
        #: no listener follows costs nothing more), over ...
        self._request = request_context
        #: ... a copy of its environ made now: servers reuse or clear theirs once the
        #: request is over (uWSGI does), and ``request.args`` is read from it.
        self._environ = dict(request_context.request.environ)
        self._g = g_values
        self._request_var = flask_globals._cv_request
        self._app_var = flask_globals._cv_app
        #: The WebSocket's application context, entered for each call with a fresh ``g``.
        self._app_context: Any = None
        self._signals = (signals.appcontext_pushed, signals.appcontext_popped)
        self._tearing_down = signals.appcontext_tearing_down
        self._busy = False

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside an application context of its own and the upgrade's request context.

        This is what ``AppContext.push()`` then ``pop()`` do — the context made
        current, ``teardown_appcontext`` functions run after the call — without
        making a new context object (and its URL adapter) each time. Where
        someone listens to ``appcontext_pushed`` or ``appcontext_popped``, or a
        listener's call dispatches another event of the same WebSocket, a new
        context is pushed and popped the ordinary way.
        """
        if self._app_context is None:
            self._prepare()
        if self._busy or self._signals[0].receivers or self._signals[1].receivers:
            return self._push_and_call(fn, *args)
        app_context = self._app_context
        g = app_context.g = self._app.app_ctx_globals_class()
        if self._g:
            g.__dict__.update(self._g)
        app_token = self._app_var.set(app_context)
        request_token = self._request_var.set(self._request)
        self._busy = True
        error: BaseException | None = None
        try:
            return fn(*args)
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._busy = False
            try:
                app = self._app
                if app.teardown_appcontext_funcs or self._tearing_down.receivers:
                    app.do_teardown_appcontext(error)  # teardown_appcontext, once per call
            finally:
                self._request_var.reset(request_token)
                self._app_var.reset(app_token)

    def call_alone(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in contexts of its own, pushed and popped: for a thread beside the listeners'."""
        return self._push_and_call(fn, *args)

    def _prepare(self) -> None:
        """On the first call: the copy of the request context, and the WebSocket's app context.

        The request is a shallow copy of the view's (what it had parsed or was
        given stays) reading the environ as it was at the upgrade; the session
        is the view's own object, as ``RequestContext.copy()`` keeps it.
        """
        original = self._request
        request = copy.copy(original.request)
        request.environ = self._environ
        session = original._session  # as RequestContext.copy() passes it (None: opened on first use)
        self._request = type(original)(self._app, environ=self._environ, request=request, session=session)
        self._app_context = self._app.app_context()

    def _push_and_call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._app_context is None:
            self._prepare()
        app_context = self._app.app_context()
        if self._g:
            app_context.g.__dict__.update(self._g)
        app_context.push()
        token = self._request_var.set(self._request)
        try:
            return fn(*args)
        finally:
            self._request_var.reset(token)
            app_context.pop()


_modules: tuple[Any, Any] | None = None


def _flask_modules() -> tuple[Any, Any]:
    """``flask.globals`` and ``flask.signals`` (imported once)."""
    global _modules
    if _modules is None:
        from flask import globals as flask_globals
        from flask import signals

        _modules = (flask_globals, signals)
    return _modules


def capture() -> FlaskContext | None:
    """The current Flask request's contexts, or None outside one (or without Flask)."""
    flask = sys.modules.get("flask")
    if flask is None:
        return None
    flask_globals, _ = _flask_modules()
    if not hasattr(flask_globals, "_cv_request") or not hasattr(flask_globals, "_cv_app"):
        return None  # a Flask whose contexts are not these (3.0 and 3.1 have them)
    request_context = flask_globals._cv_request.get(None)
    if request_context is None:
        return None
    app_context = flask_globals._cv_app.get(None)
    g_values = dict(app_context.g.__dict__) if app_context is not None else {}
    return FlaskContext(request_context.app, request_context, g_values)
