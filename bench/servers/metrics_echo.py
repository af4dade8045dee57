"""examples/flask_echo.py with takeover's metrics on, for the bench's metrics-on rows.

The same app, with :data:`takeover.metrics.wsgi_app` mounted at ``/metrics`` (werkzeug's
DispatcherMiddleware, as docs/guides/operations.rst shows). bench/servers/gunicorn_echo.py
``--app flask-echo-metrics`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the worker starts, so
the worker also copies its figures to that directory once a second, and scrapes ``/metrics``
once a second from the arbiter while the load runs: everything an operator's setup costs.
"""

from __future__ import annotations

from werkzeug.middleware.dispatcher import DispatcherMiddleware

import takeover.metrics
from examples.flask_echo import app as echo_app

app = DispatcherMiddleware(echo_app, {"/metrics": takeover.metrics.wsgi_app})
