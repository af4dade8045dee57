"""What is measured: the scenarios, the servers under test and the commands that start them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import NODE_DIR, NOFILE, PY, ROOT

# -- scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str  # column heading
    unit: str
    higher_is_better: bool
    full: dict[str, Any]  # load generator parameters for the full run
    quick: dict[str, Any]  # ... and for --quick

    def params(self, quick: bool) -> dict[str, Any]:
        return dict(self.quick if quick else self.full)


SCENARIOS = [
    Scenario(
        "small",
        "32 B echo",
        "msgs/s",
        True,
        {"scenario": "echo", "connections": 50, "size": 32, "binary": False},
        {"scenario": "echo", "connections": 20, "size": 32, "binary": False},
    ),
    Scenario(
        "large",
        "1 MiB echo",
        "MB/s",
        True,
        {"scenario": "echo", "connections": 4, "size": 1 << 20, "binary": True},
        {"scenario": "echo", "connections": 2, "size": 1 << 20, "binary": True},
    ),
    Scenario(
        "handshake",
        "handshakes",
        "/s",
        True,
        {"scenario": "handshake", "concurrency": 8, "size": 32},
        {"scenario": "handshake", "concurrency": 8, "size": 32},
    ),
    Scenario(
        "idle",
        "idle RSS",
        "KB/conn",
        False,
        {"scenario": "idle", "connections": 3000, "openConcurrency": 64},
        {"scenario": "idle", "connections": 500, "openConcurrency": 64},
    ),
    Scenario(
        "broadcast",
        "broadcast",
        "deliveries/s",
        True,
        {"scenario": "broadcast", "connections": 1000, "batch": 20, "openConcurrency": 64},
        {"scenario": "broadcast", "connections": 200, "batch": 20, "openConcurrency": 64},
    ),
    # Not run by the server loop: bench/capacity.py measures one redis-server for the hub.
    Scenario("redis", "Redis capacity", "µs/publish", False, {}, {}),
    # Not run by the server loop: bench/drops.py runs it, on DROPS_SERVERS (counts, not speeds).
    Scenario(
        "drops",
        "drops",
        "% delivered",
        True,
        {"clients": 60, "rate": 40, "duration": 20, "cutEvery": 5, "refuseFor": 2, "drain": 10},
        {"clients": 20, "rate": 40, "duration": 8, "cutEvery": 3, "refuseFor": 1, "drain": 8},
    ),
    # Not run by the server loop: bench/fanout.py runs it, on FANOUT_SERVERS.
    Scenario(
        "fan-out",
        "fan-out",
        "deliveries/s",
        True,
        {"clients": 4000, "rates": [25, 50, 100], "openConcurrency": 64, "drain": 10.0},
        {"clients": 1000, "rates": [25, 50, 100], "openConcurrency": 64, "drain": 5.0},
    ),
    # The same rows at saturation (issue 21): the server and its Redis on one CPU, the C driver
    # (bench/native/fanout_driver.c) on another, four publishers, rates past what one core delivers.
    Scenario(
        "fan-out-saturated",
        "fan-out at saturation",
        "deliveries/s",
        True,
        {"clients": 1000, "rates": [100, 400, 1600], "publishers": 4, "openConcurrency": 64, "drain": 5.0},
        {"clients": 500, "rates": [100, 800], "publishers": 4, "openConcurrency": 64, "drain": 3.0},
    ),
]
SCENARIO_BY_KEY = {scenario.key: scenario for scenario in SCENARIOS}


def describe_scenario(scenario: Scenario, params: dict[str, Any], duration: float) -> str:
    """One line saying exactly what a scenario measures with these parameters."""
    if scenario.key == "small":
        return (
            f"{params['connections']} connections x 32-byte text messages, closed loop, "
            f"{duration:g} s: echoes received per second"
        )
    if scenario.key == "large":
        return (
            f"{params['connections']} connections x 1 MiB (1,048,576-byte) binary messages, closed "
            f"loop, {duration:g} s: echoed payload received, in MB/s (10^6 bytes)"
        )
    if scenario.key == "handshake":
        return (
            f"{params['concurrency']} loops in flight of connect, opening handshake, close handshake, "
            f"TCP close, {duration:g} s: completed cycles per second"
        )
    if scenario.key == "idle":
        return (
            f"{params['connections']} idle connections: (server RSS after - before) / "
            f"{params['connections']}, in KB (1024 bytes)"
        )
    if scenario.key == "drops":
        return (
            f"{params['clients']} WebSocket clients in one room over two workers, behind a proxy that "
            f"cuts every connection every {params['cutEvery']:g} s and refuses new ones for "
            f"{params['refuseFor']:g} s; one publisher (not cut) of numbered messages at "
            f"{params['rate']:g}/s for {params['duration']:g} s, then up to {params['drain']:g} s to "
            f"catch up: messages delivered (distinct, of published x clients), duplicates, out of "
            f"order, reconnects, gaps reported"
        )
    if scenario.key == "fan-out-saturated":
        rates = ", ".join(f"{rate:g}" for rate in params["rates"])
        return (
            f"{params['clients']:,} WebSocket clients in one room over the server's workers, "
            f"{params['publishers']} publishers taking turns, 100-byte text messages at {rates} "
            f"publishes/s, each for {duration:g} s after warm-up; the server and its redis-server on "
            f"one CPU, the driver on another: deliveries/s, the server's CPU µs per delivery, "
            f"publish-to-receive latency p50/p99, messages not received by the end of the drain"
        )
    if scenario.key == "fan-out":
        rates = ", ".join(f"{rate:g}" for rate in params["rates"])
        return (
            f"{params['clients']:,} WebSocket clients in one room over the server's workers, one publisher "
            f"of 100-byte text messages at {rates} publishes/s, each for {duration:g} s after warm-up "
            f"(every publish goes to every client): deliveries/s received, publish-to-receive latency "
            f"p50/p99, lost messages"
        )
    return (
        f"{params['connections']} clients; one of them asks for {params['batch']} broadcasts of a "
        f"100-byte text message at a time, the next batch when all arrived, {duration:g} s: "
        f"messages received per second, all clients together"
    )


# -- servers ----------------------------------------------------------------------------


@dataclass
class ServerSpec:
    key: str
    label: str
    kind: str  # "ws" or "tcp"
    echo: Callable[[int], list[str]]
    broadcast: Callable[[int], list[str]] | None
    path: str = "/ws"
    needs: list[str] = field(default_factory=list)  # Python modules, or "node"
    notes: str = ""
    no_broadcast_reason: str = ""
    unavailable: str = ""  # set when a dependency is missing
    #: The checkout whose takeover the server must import (checked at startup, see
    #: bench/servers/_launch.py), or None for servers that do not use takeover.
    takeover_root: Path | None = None
    cwd: Path = ROOT  # where the server starts: its relative paths and ``-m`` resolve there
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    baseline_of: str = ""  # the key of the current-code row this baseline row compares with
    #: Scenarios this server is not measured in, with the reason (shown as n/a).
    not_applicable: dict[str, str] = field(default_factory=dict)

    def skip_reason(self, scenario: str) -> str | None:
        """Why this server has no figure for ``scenario`` (n/a), or None if it has one."""
        if scenario in self.not_applicable:
            return self.not_applicable[scenario]
        if scenario == "broadcast" and self.broadcast is None:
            return self.no_broadcast_reason
        return None

    def command(self, scenario: str, port: int) -> list[str] | None:
        if scenario == "broadcast":
            return self.broadcast(port) if self.broadcast else None
        return self.echo(port)

    def url(self, port: int) -> str:
        return f"tcp://127.0.0.1:{port}" if self.kind == "tcp" else f"ws://127.0.0.1:{port}{self.path}"


def module_server(module: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, "-m", module, "--port", str(port)]


def module_broadcast(module: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, "-m", module, "--port", str(port), "--broadcast"]


def takeover_serve(app: str) -> Callable[[int], list[str]]:
    return lambda port: [PY, "-m", "takeover", "serve", app, "--bind", f"127.0.0.1:{port}"]


def node_server(broadcast: bool) -> Callable[[int], list[str]]:
    extra = " --broadcast" if broadcast else ""
    # Node's own limit on open files is the shell's: raise it for the 3,000 connections.
    return lambda port: [
        "bash",
        "-c",
        f"ulimit -n {NOFILE}; exec node bench/node/server.js --host 127.0.0.1 --port {port}{extra}",
    ]


#: gunicorn's threads for the gthread rows (bench/servers/gunicorn_echo.py THREADS).
GTHREADS = 64
GUNICORN_ECHO = ROOT / "bench" / "servers" / "gunicorn_echo.py"


def gunicorn_server(worker: str, app: str = "flask-echo") -> Callable[[int], list[str]]:
    """bench/servers/gunicorn_echo.py, run by its path: a baseline row (its cwd the worktree) runs
    this checkout's runner and settings on the worktree's takeover and app."""
    return lambda port: [
        PY, str(GUNICORN_ECHO), "--port", str(port), "--worker", worker, "--app", app,
    ]


SERVERS = [
    ServerSpec(
        "takeover",
        "takeover (socket mode)",
        "ws",
        lambda port: [
            PY,
            "examples/echo.py",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--idle-timeout",
            "30",
        ],
        module_broadcast("bench.servers.takeover_socket_broadcast"),
        notes="examples/echo.py --idle-timeout 30: the upgrade event, ws.onmessage = ws.send; "
        "broadcast: takeover.broadcast()",
        takeover_root=ROOT,
    ),
    ServerSpec(
        "takeover-inapp",
        "takeover (in-app, Flask)",
        "ws",
        takeover_serve("examples.flask_echo:app"),
        takeover_serve("bench.servers.takeover_inapp_broadcast:app"),
        needs=["flask"],
        notes="python -m takeover serve examples.flask_echo:app (the /ws view); "
        "broadcast: takeover.broadcast()",
        takeover_root=ROOT,
    ),
    ServerSpec(
        "gunicorn-gthread",
        "takeover on gunicorn gthread (handed over)",
        "ws",
        gunicorn_server("gthread"),
        None,
        needs=["flask", "gunicorn"],
        notes=f"examples/flask_echo.py on gunicorn -k gthread --threads {GTHREADS} -w 1: each WebSocket is "
        "handed over to takeover's I/O thread, its listener runs in the listener pool",
        takeover_root=ROOT,
        no_broadcast_reason="the broadcast app is for takeover serve",
    ),
    ServerSpec(
        "gunicorn-gthread-metrics",
        "takeover on gunicorn gthread (handed over), metrics on",
        "ws",
        gunicorn_server("gthread", "flask-echo-metrics"),
        None,
        needs=["flask", "gunicorn", "prometheus_client"],
        notes="the gunicorn-gthread row's app with takeover.metrics.wsgi_app mounted at /metrics "
        "(bench/servers/metrics_echo.py), PROMETHEUS_MULTIPROC_DIR set (the worker copies its figures "
        "once a second) and /metrics scraped once a second: metrics on against the row above",
        takeover_root=ROOT,
        no_broadcast_reason="the broadcast app is for takeover serve",
    ),
    ServerSpec(
        "flask-sock-gthread",
        "Flask-Sock on gunicorn gthread",
        "ws",
        gunicorn_server("gthread", "flask-sock"),
        None,
        needs=["flask", "flask_sock", "gunicorn"],
        notes=f"bench/servers/flasksock_threaded.py (from flask_sock import Sock; a route looping "
        f"ws.send(ws.receive())) on gunicorn -k gthread --threads {GTHREADS} -w 1: simple-websocket, "
        "a worker thread per connection",
        no_broadcast_reason="no broadcast variant of the threaded Flask-Sock app",
        not_applicable={
            "idle": f"each connection holds one of gunicorn's {GTHREADS} threads: no more than "
            f"{GTHREADS} connections open (measured: 64 of 500)",
        },
    ),
    ServerSpec(
        "takeover-flask-sock-gthread",
        "takeover.flask_sock on gunicorn gthread",
        "ws",
        gunicorn_server("gthread", "takeover-flask-sock"),
        None,
        needs=["flask", "gunicorn", "takeover.flask_sock:Sock"],
        notes="the Flask-Sock row's app with only the import changed (from takeover.flask_sock import "
        f"Sock) on gunicorn -k gthread --threads {GTHREADS} -w 1",
        takeover_root=ROOT,
        no_broadcast_reason="no broadcast variant of the threaded Flask-Sock app",
    ),
    ServerSpec(
        "gunicorn-takeover",
        "takeover on gunicorn -k takeover.gunicorn.Worker",
        "ws",
        gunicorn_server("takeover"),
        None,
        needs=["flask", "gunicorn"],
        notes="examples/flask_echo.py on gunicorn's gevent worker (takeover.gunicorn.Worker) -w 1",
        takeover_root=ROOT,
        no_broadcast_reason="the broadcast app is for takeover serve",
    ),
    ServerSpec(
        "gevent-websocket",
        "gevent-websocket",
        "ws",
        module_server("bench.servers.geventwebsocket_echo"),
        module_broadcast("bench.servers.geventwebsocket_echo"),
        needs=["geventwebsocket"],
        notes="WebSocketHandler on gevent.pywsgi, ws.receive()/ws.send() loop; broadcast: loop of ws.send()",
    ),
    ServerSpec(
        "takeover-legacy",
        "takeover.legacy (gevent-websocket app)",
        "ws",
        lambda port: [PY, "-m", "bench.servers.geventwebsocket_echo", "--port", str(port), "--takeover"],
        lambda port: [
            PY, "-m", "bench.servers.geventwebsocket_echo", "--port", str(port), "--broadcast", "--takeover",
        ],
        needs=["geventwebsocket"],
        notes="the gevent-websocket row's app, unchanged, with "
        "handler_class=takeover.legacy.WebSocketHandler",
        takeover_root=ROOT,
    ),
    ServerSpec(
        "websockets",
        "websockets (asyncio)",
        "ws",
        module_server("bench.servers.websockets_echo"),
        module_broadcast("bench.servers.websockets_echo"),
        needs=["websockets"],
        notes="websockets.asyncio.server.serve(max_size=None), default asyncio loop, "
        "`async for message in ws: await ws.send(message)`; broadcast: websockets.broadcast()",
    ),
    ServerSpec(
        "flask-sock",
        "Flask-Sock (gevent)",
        "ws",
        module_server("bench.servers.flasksock_echo"),
        module_broadcast("bench.servers.flasksock_echo"),
        needs=["flask_sock"],
        notes="Flask-Sock route on gevent.pywsgi.WSGIServer after monkey.patch_all(); "
        "broadcast: loop of ws.send()",
    ),
    ServerSpec(
        "node-ws",
        "Node ws 8",
        "ws",
        node_server(False),
        node_server(True),
        needs=["node"],
        notes="http.createServer + server.on('upgrade') + wss.handleUpgrade (noServer: true); "
        "broadcast: loop over wss.clients",
    ),
    ServerSpec(
        "picows",
        "picows (uvloop)",
        "ws",
        module_server("bench.servers.picows_echo"),
        module_broadcast("bench.servers.picows_echo"),
        needs=["picows", "uvloop"],
        notes="frame-level echo on uvloop, for reference; broadcast: loop of transport.send()",
    ),
    ServerSpec(
        "gevent-tcp",
        "raw gevent TCP (no WebSocket)",
        "tcp",
        module_server("bench.servers.gevent_tcp_echo"),
        None,
        notes="gevent.server.StreamServer, recv(65536)/sendall loop: the floor of a gevent round trip; "
        "'handshake' is connect + one 32-byte round trip + close",
        no_broadcast_reason="no WebSocket, nothing to broadcast",
    ),
    ServerSpec(
        "thread-floor",
        "a thread per connection, at its floor (no server)",
        "ws",
        module_server("bench.servers.thread_echo_floor"),
        None,
        notes="bench/servers/thread_echo_floor.py: an OS thread per connection doing only blocking recv, "
        "takeover's frame parser and sendall, with a bare-bones handshake: what a blocking route "
        "(Flask-Sock's, takeover.flask_sock's) costs per message at best",
        no_broadcast_reason="a reference for the per-message cost of a thread, nothing to broadcast",
        not_applicable={"idle": "a reference for the per-message cost of a thread"},
    ),
]
REFERENCE = "takeover"


# -- the fan-out scenario's servers ---------------------------------------------------


@dataclass(frozen=True)
class FanoutSpec:
    """A fan-out row: an app on gunicorn with ``workers`` workers, with or without Redis."""

    key: str
    label: str
    workers: int
    worker: str  # bench/servers/fanout_gunicorn.py --worker
    app: str  # module:name
    redis: bool  # a redis-server for this row, its URL in BENCH_HUB_URL and BENCH_REDIS_URL
    client: str  # the driver's members (bench/node/fanout.js): "ws" or "socket.io"
    needs: list[str]
    notes: str
    takeover_root: Path | None
    history: int = 100  # the Hub's history=, on Redis (BENCH_HUB_HISTORY)
    brokers: str = "one"  # one redis-server, "shards" (three, Hub([...])) or "cluster" (3 masters)
    cwd: Path = ROOT  # where gunicorn starts (a baseline twin: its worktree, to import REV's takeover)
    baseline_of: str = ""  # a baseline twin: the key of the row it is the REV of

    def server(self, redis_url: str | None) -> ServerSpec:
        """The ServerSpec that starts this row's gunicorn (bench/loadgen.py's ServerProcess runs
        a spec's ``echo`` command for any scenario but broadcast)."""
        env = {"BENCH_HUB_URL": redis_url or "memory://", "BENCH_HUB_HISTORY": str(self.history)}
        if redis_url:
            env["BENCH_REDIS_URL"] = redis_url.split(",")[0]
        return ServerSpec(
            self.key,
            self.label,
            "ws",
            lambda port: [
                PY, "-m", "bench.servers.fanout_gunicorn", "--port", str(port),
                "--workers", str(self.workers), "--worker", self.worker, "--app", self.app,
            ],
            None,
            needs=self.needs,
            notes=self.notes,
            takeover_root=self.takeover_root,
            cwd=self.cwd,
            env=env,
        )

    def urls(self, port: int) -> dict[str, str]:
        """The driver's ``url`` (members) and ``pubUrl`` (the publisher)."""
        if self.client == "socket.io":
            return {"url": f"http://127.0.0.1:{port}", "pubUrl": f"http://127.0.0.1:{port}"}
        return {"url": f"ws://127.0.0.1:{port}/ws", "pubUrl": f"ws://127.0.0.1:{port}/pub"}



def hub_row(
    key: str, label: str, workers: int, notes: str, *, worker: str = "takeover", redis: bool = True,
    brokers: str = "one", history: int = 100,
) -> FanoutSpec:
    """A row running bench/servers/hub_fanout.py (takeover's Hub) with the harness's ws members."""
    needs = ["flask", "gunicorn", "redis", "takeover:Hub", "redis-server", "node"]
    if not redis:
        needs = ["flask", "gunicorn", "takeover:Hub", "node"]
    return FanoutSpec(
        key, label, workers, worker, "bench.servers.hub_fanout:app", redis, "ws", needs, notes, ROOT,
        history, brokers,
    )


FANOUT_WORKERS = 4
FANOUT_SERVERS = [
    hub_row(
        "hub-redis",
        f"takeover Hub on Redis, gunicorn -w {FANOUT_WORKERS}",
        FANOUT_WORKERS,
        f"bench/servers/hub_fanout.py on gunicorn -k takeover.gunicorn.Worker -w {FANOUT_WORKERS}: "
        "hub = Hub(redis_url, history=100); hub.join(ws, 'room') in the view; the publisher's "
        "messages are hub.publish('room', data) in the worker it connected to",
    ),
    hub_row(
        "hub-shards",
        f"takeover Hub on 3 Redis servers, gunicorn -w {FANOUT_WORKERS}",
        FANOUT_WORKERS,
        "the same app with Hub([url1, url2, url3]): each room on one of three redis-servers by "
        "rendezvous hashing (one room here, so one server carries it; the others carry the "
        "processes' liveness)",
        brokers="shards",
    ),
    hub_row(
        "hub-cluster",
        f"takeover Hub on a Redis Cluster (3 masters), gunicorn -w {FANOUT_WORKERS}",
        FANOUT_WORKERS,
        "the same app with Hub('redis+cluster://...'): a cluster of three masters made with "
        "redis-cli --cluster create; the room's publish ends in SPUBLISH, each worker SSUBSCRIBEs "
        "on the room's master",
        brokers="cluster",
    ),
    hub_row(
        "hub-memory",
        "takeover Hub memory://, gunicorn -w 1",
        1,
        "the same app on gunicorn -k takeover.gunicorn.Worker -w 1 with Hub('memory://'): every "
        "client in one process",
        redis=False,
    ),
    FanoutSpec(
        "flask-socketio",
        f"Flask-SocketIO, Redis message_queue, gunicorn -w {FANOUT_WORKERS}",
        FANOUT_WORKERS,
        "geventwebsocket",
        "bench.servers.socketio_fanout:app",
        True,
        "socket.io",
        [
            "flask_socketio", "redis", "geventwebsocket", "gunicorn", "redis-server", "node",
            "node:socket.io-client",
        ],
        "bench/servers/socketio_fanout.py on gunicorn -k geventwebsocket.gunicorn.workers."
        f"GeventWebSocketWorker -w {FANOUT_WORKERS}: SocketIO(app, message_queue=redis_url, "
        "async_mode='gevent', transports=['websocket']); join_room('room'); the publisher's "
        "'publish' events are socketio.emit('msg', data, to='room'); socket.io-client members",
        None,
    ),
]


def check_available(server: ServerSpec | FanoutSpec) -> str:
    """Why ``server`` cannot run here, or "" if it can. A need is a module to import, ``module:name``
    (``from module import name``), "node" (with bench/node's ws), ``node:package`` (a package
    in bench/node/node_modules) or "redis-server" (the program)."""
    for need in server.needs:
        if need == "redis-server":
            if shutil.which("redis-server") is None:
                return "redis-server is not installed (Debian: apt-get install redis-server)"
            continue
        if need.startswith("node:"):
            package = need.split(":", 1)[1]
            if not (NODE_DIR / "node_modules" / package).is_dir():
                return f"bench/node/node_modules/{package} is missing (npm install in bench/node)"
            continue
        if need == "node":
            if shutil.which("node") is None:
                return "node is not installed"
            if not (NODE_DIR / "node_modules" / "ws").is_dir():
                return "bench/node/node_modules/ws is missing (npm install in bench/node)"
            continue
        module, _, name = need.partition(":")
        code = f"from {module} import {name}" if name else f"import {module}"
        probe = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
            return f"{code} failed: {last}"
    return ""


# -- the drops scenario's servers (bench/drops.py) ---------------------------------------------

DROPS_WORKERS = 2
DROPS_HISTORY = 1000  # messages a room keeps: a member away 10 s (the client's longest backoff) misses 400
DROPS_SERVERS = [
    hub_row(
        "drops-hub-gevent",
        f"takeover Hub on Redis, gunicorn -k takeover.gunicorn.Worker -w {DROPS_WORKERS}",
        DROPS_WORKERS,
        "bench/servers/hub_fanout.py (Hub(redis_url, history=1000): 25 s at 40/s, more than a member "
        "is away); members join with envelope=True and reconnect with since=<the last offset they got>",
        history=DROPS_HISTORY,
    ),
    hub_row(
        "drops-hub-gthread",
        f"takeover Hub on Redis, gunicorn -k gthread -w {DROPS_WORKERS}",
        DROPS_WORKERS,
        "the same app on gunicorn's threaded worker (16 threads): each WebSocket handed over to "
        "takeover's I/O thread",
        worker="gthread",
        history=DROPS_HISTORY,
    ),
    FanoutSpec(
        "drops-flask-socketio",
        f"Flask-SocketIO, Redis message_queue, gunicorn -w {DROPS_WORKERS}",
        DROPS_WORKERS,
        "geventwebsocket",
        "bench.servers.socketio_fanout:app",
        True,
        "socket.io",
        [
            "flask_socketio", "redis", "geventwebsocket", "gunicorn", "redis-server", "node",
            "node:socket.io-client",
        ],
        "bench/servers/socketio_fanout.py on GeventWebSocketWorker; socket.io-client members reconnecting "
        "by themselves (its defaults: 1 s doubling to 5 s, jitter 0.5) and emitting join at each connect; "
        "Flask-SocketIO cannot resume, so what is published while a member is away is lost to it",
        None,
    ),
]
