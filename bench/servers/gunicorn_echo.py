"""examples/flask_echo.py's app on gunicorn with one worker, for the bench (``--worker gthread|takeover``).

    python -m bench.servers.gunicorn_echo --port PORT --worker gthread

``gthread`` (4 threads): event-style WebSockets are handed over to takeover's
I/O thread. ``takeover``: gunicorn's gevent worker, ``takeover.gunicorn.Worker``.
Prints one line to stdout once gunicorn listens (the harness's ready line).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.servers._gunicorn import EmbeddedGunicorn

WORKERS = {"gthread": "gthread", "takeover": "takeover.gunicorn.Worker"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker", choices=sorted(WORKERS), required=True)
    args = parser.parse_args()
    options: dict[str, Any] = {
        "bind": f"127.0.0.1:{args.port}",
        "workers": 1,
        "worker_class": WORKERS[args.worker],
        "threads": 4,
        "worker_connections": 10_000,
        "accesslog": None,
        "loglevel": "warning",
        "when_ready": lambda server: print(f"gunicorn ({args.worker}) listening", flush=True),
    }
    EmbeddedGunicorn("examples.flask_echo:app", options).run()


if __name__ == "__main__":
    main()
