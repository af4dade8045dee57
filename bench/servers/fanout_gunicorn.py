"""A fan-out app on gunicorn with N workers, for the bench's fan-out scenario.

    python -m bench.servers.fanout_gunicorn --port P --workers 4 --worker takeover \
        --app bench.servers.hub_fanout:app

``--worker takeover`` is ``takeover.gunicorn.Worker`` (gunicorn's gevent worker);
``geventwebsocket`` is gevent-websocket's ``GeventWebSocketWorker``, the one
Flask-SocketIO's deployment guide names for gunicorn with gevent; ``gthread`` is gunicorn's
threaded worker (16 threads), where takeover hands each WebSocket over to its I/O thread. Prints one line
once gunicorn listens (the harness's ready line), then one ``fanout-worker-ready
pid=PID`` line per worker once it has loaded the app.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from bench.servers._gunicorn import EmbeddedGunicorn

WORKERS = {
    "takeover": "takeover.gunicorn.Worker",
    "geventwebsocket": "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
    "gthread": "gthread",
}
THREADS = 16  # gthread's request threads per worker (a handed-over WebSocket gives its thread back)
WORKER_READY = "fanout-worker-ready"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--worker", choices=sorted(WORKERS), required=True)
    parser.add_argument("--app", required=True, help="module:name")
    args = parser.parse_args()
    options: dict[str, Any] = {
        "bind": f"127.0.0.1:{args.port}",
        "workers": args.workers,
        "worker_class": WORKERS[args.worker],
        "worker_connections": 10_000,  # gevent's pool per worker; the default 1,000 is too few
        "timeout": 120,  # a worker starved of CPU by the load must not be killed for it
        "graceful_timeout": 5,
        "accesslog": None,
        "loglevel": "warning",
        "when_ready": lambda server: print(
            f"gunicorn ({args.worker}, {args.workers} workers) listening on 127.0.0.1:{args.port}", flush=True
        ),
        # One write(2) of a few bytes to the shared pipe: workers starting together do not interleave.
        "post_worker_init": lambda worker: os.write(1, f"{WORKER_READY} pid={os.getpid()}\n".encode()),
    }
    if args.worker == "gthread":
        options["threads"] = THREADS
    EmbeddedGunicorn(args.app, options).run()


if __name__ == "__main__":
    main()
