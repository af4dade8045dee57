"""A Flask-Sock echo app for threaded servers: Flask-Sock itself, or takeover's drop-in.

    BENCH_FLASK_SOCK=flask_sock gunicorn -k gthread --threads 64 -w 1 bench.servers.flasksock_threaded:app
    BENCH_FLASK_SOCK=takeover gunicorn -k gthread --threads 64 -w 1 bench.servers.flasksock_threaded:app

(the harness starts it with ``bench/servers/gunicorn_echo.py --app flask-sock`` or
``--app takeover-flask-sock``, which set the variable). The two rows differ only
by the import line below: ``from flask_sock import Sock`` (Flask-Sock 0.7 on
simple-websocket, whose route holds a gthread worker thread per connection) or
``from takeover.flask_sock import Sock``. The route is Flask-Sock's echo, text as
text and binary as binary.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

#: Which ``Sock``: "flask_sock" (the default) or "takeover".
WHICH = os.environ.get("BENCH_FLASK_SOCK", "flask_sock")

if WHICH == "takeover":
    from takeover.flask_sock import Sock
elif WHICH == "flask_sock":
    from flask_sock import Sock  # type: ignore[import-untyped,no-redef]
else:
    raise SystemExit(f"BENCH_FLASK_SOCK={WHICH!r}: expected 'flask_sock' or 'takeover'")

app = Flask(__name__)
sock = Sock(app)


@sock.route("/ws")
def ws(ws: Any) -> None:
    while True:
        ws.send(ws.receive())
