"""The ``takeover`` command: run any WSGI application on :class:`takeover.Server`::

    takeover serve MODULE:APP [--bind HOST:PORT] [--certfile F --keyfile F]
                              [--idle-timeout S] [--compression deflate
                              [--compression-level N] [--compression-threshold BYTES]]
                              [--allowed-origin ORIGIN ...] [--hub URL] [--reload]
                              [--metrics-bind HOST:PORT] [--access-log-format text|json]

``python -m takeover`` is the same command. ``MODULE`` is imported with the
current directory on ``sys.path``; ``path/to/file.py:APP`` imports a file.
``APP`` may be a dotted attribute path (``app:server.wsgi_app``).

Once listening, exactly one line goes to stdout::

    takeover serving MODULE:APP on ws://HOST:PORT/ (http://HOST:PORT/)

Errors the user can fix (a module or attribute that does not exist, a port in
use, a missing certificate, ...) are one line on stderr, ``takeover: ...``, and
exit status 2. SIGINT and SIGTERM close the server gracefully and exit 0.

``--hub URL`` sets the environment variable ``TAKEOVER_HUB`` to ``URL`` before
the application is imported, for an application that makes its
:class:`takeover.Hub` from it (as ``examples/chat`` does).

``--metrics-bind HOST:PORT`` also serves :mod:`takeover.metrics` on that
address: Prometheus metrics at ``/metrics``, the status page at ``/status``
(its address is printed on stderr). ``--access-log-format json`` writes the
``takeover.access`` log as one JSON object per line (:mod:`takeover.accesslog`).

``--reload`` runs the server in a child process and restarts it when a ``.py``
file under the application's directory or the current directory changes.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import importlib.util
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from takeover.appload import AppSpec, CLIError, load_app, load_ssl_context, parse_app_spec
from takeover.options import UNSET, WebSocketOptions
from takeover.protocol.deflate import DeflateOptions
from takeover.protocol.origin import normalize_origin
from takeover.reloader import run_reloader, warn
from takeover.server import format_address

__all__ = [
    "AppSpec",
    "CLIError",
    "build_parser",
    "format_address",
    "load_app",
    "load_ssl_context",
    "main",
    "parse_app_spec",
    "parse_bind",
    "run_reloader",
    "serve",
    "watch_roots",
]

PROG = "takeover"
#: The environment variable ``--hub`` sets: the URL of the application's hub, by convention.
HUB_VARIABLE = "TAKEOVER_HUB"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EXIT_USAGE = 2

# -- arguments ------------------------------------------------------------------


def parse_bind(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT`` (the default host) or ``[IPv6]:PORT`` into ``(host, port)``."""
    usage = f"invalid address {text!r}: expected HOST:PORT, :PORT or [IPv6]:PORT"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or not rest.startswith(":"):
            raise CLIError(usage)
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise CLIError(usage)
        if ":" in host:
            raise CLIError(f"invalid address {text!r}: put an IPv6 address in brackets, as [::1]:8000")
        host = host or DEFAULT_HOST
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise CLIError(f"invalid address {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


# -- serving -------------------------------------------------------------------


def _reason(error: OSError) -> str:
    """The OS's words for ``error``, without gevent's address suffix, lower-cased."""
    if error.errno == errno.EADDRINUSE:
        return "address already in use"
    reason = error.args[1] if len(error.args) >= 2 and isinstance(error.args[1], str) else str(error)
    return reason[:1].lower() + reason[1:]


def _banner(spec: AppSpec, host: str, port: int, tls: bool) -> str:
    address = format_address(host, port)
    secure = "s" if tls else ""
    return f"{PROG} serving {spec.text} on ws{secure}://{address}/ (http{secure}://{address}/)"


def serve(
    spec: AppSpec,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout: float | None = None,
    compression: DeflateOptions | None = None,
    allowed_origins: Sequence[str] | None = None,
    access_log_format: str = "text",
    metrics_bind: tuple[str, int] | None = None,
) -> int:
    """Import the application, listen, print the banner and serve until SIGINT or SIGTERM."""
    # One line per upgrade and per close from the "takeover.access" logger,
    # unless the application configured logging itself.
    if not logging.root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        # That format shows no thread or process. Under gevent, looking the thread
        # up makes a dummy Thread for every new greenlet: about 4% of an in-app
        # handshake's time went to it (py-spy, examples/flask_echo.py).
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        # Nor a file and line: no stack walk per record (the logging HOWTO's "Optimization").
        logging._srcfile = None
    if access_log_format == "json":
        from takeover.accesslog import use_json

        use_json()  # "takeover.access" as JSON lines on stderr (takeover.accesslog)
    app = load_app(spec)

    import gevent

    from takeover import create_server

    # The flags given, over WebSocketOptions' defaults (written once, in takeover.options).
    given: dict[str, Any] = {
        "idle_timeout": idle_timeout, "compression": compression, "allowed_origins": allowed_origins,
    }
    options = WebSocketOptions().replace(
        **{name: UNSET if value is None else value for name, value in given.items()}
    )
    server = create_server(app, ssl_context=ssl_context, options=options)
    metrics = _metrics_server(metrics_bind) if metrics_bind is not None else None

    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        server.close()
        if metrics is not None:
            metrics.close()

    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, stop)
    try:
        server.listen(port, host)
    except OSError as error:  # also ssl.SSLError
        raise CLIError(f"cannot listen on {format_address(host, port)}: {_reason(error)}") from None
    if stopping:  # a signal came while we were binding
        server.close()
        return 0
    bound_host, bound_port = server.address
    if metrics is not None:
        # On stderr: stdout stays the one banner line that scripts read.
        print(f"{PROG} metrics on http://{format_address(*metrics.address)}/metrics (status page: /status)",
              file=sys.stderr, flush=True)
    print(_banner(spec, bound_host, bound_port, ssl_context is not None), flush=True)
    server.serve_forever()
    return 0


def _metrics_server(bind: tuple[str, int]) -> Any:
    """``--metrics-bind``: /metrics and /status (takeover.metrics) on a port of their own, listening."""
    try:
        from takeover import metrics
    except ImportError as error:
        raise CLIError(str(error)) from None
    from takeover import create_server

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics.wsgi_app(environ, start_response)
        if path == "/status" or path.startswith("/status/"):
            return metrics.status_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"takeover metrics: /metrics (Prometheus) or /status (the status page)\n"]

    server = create_server(app)
    host, port = bind
    try:
        server.listen(port, host)
    except OSError as error:
        address = format_address(host, port)
        raise CLIError(f"cannot listen on {address} for --metrics-bind: {_reason(error)}") from None
    return server


def watch_roots(spec: AppSpec, cwd: str) -> list[str]:
    """The directories to watch: the application's (top-level package's) tree, then ``cwd``.

    Finds the module without importing it; raises :class:`CLIError` if there is none.
    """
    top = spec.module.partition(".")[0]
    if spec.file is not None:
        root = os.path.join(spec.path_entry, top) if "." in spec.module else os.path.dirname(spec.file)
        return [root, cwd]
    if spec.path_entry not in sys.path:
        sys.path.insert(0, spec.path_entry)
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError) as error:
        raise CLIError(f"cannot import module {spec.module!r}: {error}") from None
    if found is None:
        raise CLIError(f"cannot import module {spec.module!r}: No module named {top!r}")
    roots = []
    if found.submodule_search_locations:
        roots.extend(found.submodule_search_locations)
    elif found.origin and os.path.isfile(found.origin):
        roots.append(os.path.dirname(found.origin))
    return [*roots, cwd]


def _free_port(host: str, port: int) -> int:
    """Check that ``host:port`` can be bound; pick a port for port 0, kept across restarts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            return int(probe.getsockname()[1])
    except OSError as error:
        raise CLIError(f"cannot listen on {format_address(host, port)}: {_reason(error)}") from None


# -- main ------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``takeover: ...`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: {message} (see '{self.prog} --help')\n")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _level(text: str) -> int:
    if text.lstrip("-").isdigit() and -1 <= int(text) <= 9:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be -1 (zlib's default) or 0 to 9, not {text!r}")


def _bytes(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a number of bytes >= 0, not {text!r}")


def _origin(text: str) -> str:
    try:
        return normalize_origin(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _hub_url(text: str) -> str:
    from takeover.hub._broker import check_urls

    try:
        check_urls(text)  # one URL, or several separated by commas (one per Redis server)
        return text
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _bind(text: str) -> tuple[str, int]:
    try:
        return parse_bind(text)
    except CLIError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``takeover`` argument parser."""
    from takeover import __version__

    parser = _Parser(prog=PROG, description="Run WSGI applications with WebSockets on takeover.Server.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve a WSGI application",
        description="Serve the WSGI application APP of MODULE (or of path/to/file.py).",
    )
    serve_parser.add_argument("app", metavar="MODULE:APP", help="as myapp:app or path/to/app.py:app")
    serve_parser.add_argument(
        "--bind",
        "-b",
        metavar="HOST:PORT",
        type=_bind,
        default=(DEFAULT_HOST, DEFAULT_PORT),
        help=f"HOST:PORT, :PORT or [IPv6]:PORT; port 0 picks a free port "
        f"(default {DEFAULT_HOST}:{DEFAULT_PORT})",
    )
    serve_parser.add_argument(
        "--certfile", metavar="FILE", help="serve TLS (wss://, https://) with this PEM certificate chain"
    )
    serve_parser.add_argument("--keyfile", metavar="FILE", help="the PEM private key for --certfile")
    serve_parser.add_argument(
        "--idle-timeout",
        metavar="S",
        type=_non_negative,
        help="seconds before silent in-app WebSockets are pinged and closed; 0 disables "
        "(default: the library's)",
    )
    serve_parser.add_argument(
        "--compression",
        choices=["deflate"],
        help="accept permessage-deflate (RFC 7692) from clients that offer it, by default for "
        "every upgrade (default: no compression)",
    )
    serve_parser.add_argument(
        "--compression-level",
        metavar="N",
        type=_level,
        help="with --compression deflate: zlib's level, 0-9 or -1 for zlib's default (6)",
    )
    serve_parser.add_argument(
        "--compression-threshold",
        metavar="BYTES",
        type=_bytes,
        help="with --compression deflate: send messages under this size uncompressed (default: "
        "1024 without context takeover, else 0, as ws)",
    )
    serve_parser.add_argument(
        "--allowed-origin",
        metavar="ORIGIN",
        action="append",
        type=_origin,
        dest="allowed_origins",
        help="accept WebSocket upgrades only from pages of this origin, as https://app.example.com; "
        "repeat for more (others get 403; default: any origin)",
    )
    serve_parser.add_argument(
        "--hub",
        metavar="URL",
        type=_hub_url,
        help=f"set {HUB_VARIABLE}=URL for the application before it is imported: the URL of its "
        "takeover.Hub, memory:// or redis://HOST:PORT/DB (several Redis servers: their URLs separated "
        "by commas), for apps that read it (as examples/chat does)",
    )
    serve_parser.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        type=_bind,
        help="also serve Prometheus metrics at /metrics and the status page at /status on this address "
        "(takeover.metrics; needs pip install 'takeover[metrics]'). Keep it private: bind it to "
        "127.0.0.1 or a network only your monitoring reaches",
    )
    serve_parser.add_argument(
        "--access-log-format",
        choices=["text", "json"],
        default="text",
        help="the access log's lines on stderr (open, close, refused upgrade; never one per message): "
        "text, or one JSON object per line (default: text)",
    )
    serve_parser.add_argument(
        "--reload", action="store_true", help="restart when a .py file changes (for development)"
    )
    return parser


def _compression(args: argparse.Namespace) -> DeflateOptions | None:
    """The server's ``compression`` from ``--compression*``; raises :class:`CLIError`."""
    tuning = {"level": args.compression_level, "threshold": args.compression_threshold}
    if args.compression is None:
        for name, value in tuning.items():
            if value is not None:
                raise CLIError(f"--compression-{name} needs --compression deflate")
        return None
    return DeflateOptions(**{name: value for name, value in tuning.items() if value is not None})


def _serve_command(args: argparse.Namespace) -> int:
    if (args.certfile is None) != (args.keyfile is None):
        given, missing = ("--certfile", "--keyfile") if args.certfile else ("--keyfile", "--certfile")
        raise CLIError(f"{given} needs {missing} as well")
    compression = _compression(args)
    spec = parse_app_spec(args.app)
    host, port = args.bind
    context = load_ssl_context(args.certfile, args.keyfile) if args.certfile else None
    if args.hub is not None:
        os.environ[HUB_VARIABLE] = args.hub  # before the app is imported; --reload's child inherits it
    if not args.reload:
        return serve(
            spec,
            host,
            port,
            ssl_context=context,
            idle_timeout=args.idle_timeout,
            compression=compression,
            allowed_origins=args.allowed_origins,
            access_log_format=args.access_log_format,
            metrics_bind=args.metrics_bind,
        )

    roots = watch_roots(spec, os.getcwd())
    port = _free_port(host, port)

    child_args = ["serve", args.app, "--bind", format_address(host, port)]
    if args.certfile:
        child_args += ["--certfile", args.certfile, "--keyfile", args.keyfile]
    if args.idle_timeout is not None:
        child_args += ["--idle-timeout", repr(args.idle_timeout)]
    if args.compression is not None:
        child_args += ["--compression", args.compression]
    if args.compression_level is not None:
        child_args += ["--compression-level", str(args.compression_level)]
    if args.compression_threshold is not None:
        child_args += ["--compression-threshold", str(args.compression_threshold)]
    for origin in args.allowed_origins or ():
        child_args += ["--allowed-origin", origin]
    child_args += ["--access-log-format", args.access_log_format]
    if args.metrics_bind is not None:
        child_args += ["--metrics-bind", format_address(*args.metrics_bind)]
    return run_reloader(child_args, roots)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``takeover`` command with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _serve_command(args)
    except CLIError as error:
        warn(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the server listens
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
