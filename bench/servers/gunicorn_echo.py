"""An echo app on gunicorn with one worker, for the bench (``--worker gthread|takeover``, ``--app``).

    python bench/servers/gunicorn_echo.py --port PORT --worker gthread [--app flask-echo]

``--app flask-echo`` (the default) is examples/flask_echo.py's app; ``flask-echo-metrics``
is the same with takeover.metrics on (bench/servers/metrics_echo.py), scraped every second;
``flask-sock`` and ``takeover-flask-sock`` are bench/servers/flasksock_threaded.py's
Flask-Sock echo with ``from flask_sock import Sock`` or ``from
takeover.flask_sock import Sock`` (this sets ``BENCH_FLASK_SOCK`` for it).
``--worker gthread`` is ``-k gthread --threads 64``: takeover hands event-style
WebSockets over to its I/O thread, Flask-Sock holds a thread per connection.
``--worker takeover`` is gunicorn's gevent worker, ``takeover.gunicorn.Worker``.
Prints one line to stdout once the worker has loaded the app (the harness's ready
line).

The harness runs this file by its path, from the directory whose ``examples`` and
``bench`` the app is imported from (gunicorn's own command line puts its working
directory first on ``sys.path`` too): a ``--baseline REV`` row runs this checkout's
runner, with the same settings, on REV's takeover and examples/flask_echo.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

if __package__:  # python -m bench.servers.gunicorn_echo
    from bench.servers._gunicorn import EmbeddedGunicorn
else:  # python bench/servers/gunicorn_echo.py: its directory is sys.path[0]
    from _gunicorn import EmbeddedGunicorn  # type: ignore[import-not-found,no-redef]

WORKERS = {"gthread": "gthread", "takeover": "takeover.gunicorn.Worker"}
THREADS = 64  # gthread's threads (-k gthread --threads 64)
#: --app: (module:name, BENCH_FLASK_SOCK for it or None).
APPS = {
    "flask-echo": ("examples.flask_echo:app", None),
    "flask-sock": ("bench.servers.flasksock_threaded:app", "flask_sock"),
    "takeover-flask-sock": ("bench.servers.flasksock_threaded:app", "takeover"),
    "flask-echo-metrics": ("bench.servers.metrics_echo:app", None),
}
SCRAPE_EVERY = 1.0  # seconds between two scrapes of /metrics (flask-echo-metrics)


def scrape_forever(port: int) -> None:
    """GET /metrics every second, as a Prometheus server would (a daemon thread of the arbiter)."""
    import time
    import urllib.request

    for _ in range(100_000):  # bounded: the run ends long before
        time.sleep(SCRAPE_EVERY)  # the scrape interval itself, not a wait for an event
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                response.read()
        except OSError:
            continue  # not listening yet, or stopping


def imported(app: str) -> str:
    """Where the worker imported the app from, and for the Flask-Sock app which ``Sock``."""
    module = sys.modules.get(app.partition(":")[0])
    sock = getattr(module, "Sock", None)
    return f" (app {getattr(module, '__file__', '?')}" + (
        f", Sock from {sock.__module__})" if sock is not None else ")"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--worker", choices=sorted(WORKERS), required=True)
    parser.add_argument("--app", choices=sorted(APPS), default="flask-echo")
    args = parser.parse_args()
    app, which = APPS[args.app]
    if which is not None:
        os.environ["BENCH_FLASK_SOCK"] = which
    if args.app == "flask-echo-metrics":
        import tempfile
        import threading

        # prometheus_client's multiprocess mode, as for gunicorn -w 4 (docs/guides/operations.rst).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="takeover-bench-metrics-")
        threading.Thread(target=scrape_forever, args=(args.port,), daemon=True).start()
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(1, cwd)  # after this file's directory; the worker imports the app from here
    name = f"gunicorn ({args.worker}{f', {THREADS} threads' if args.worker == 'gthread' else ''}, {args.app})"
    options: dict[str, Any] = {
        "bind": f"127.0.0.1:{args.port}",
        "workers": 1,
        "worker_class": WORKERS[args.worker],
        "threads": THREADS,
        "worker_connections": 10_000,
        "timeout": 120,  # a worker starved of CPU by the load must not be killed for it
        "graceful_timeout": 3,
        "accesslog": None,
        "loglevel": "warning",
        # Ready once the one worker has imported the app, not when the arbiter listens:
        # connections made before would wait for the worker's start in the measured window.
        "post_worker_init": lambda worker: print(
            f"{name} listening on 127.0.0.1:{args.port}{imported(app)}", flush=True
        ),
    }
    EmbeddedGunicorn(app, options).run()


if __name__ == "__main__":
    main()
