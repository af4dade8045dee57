"""The ``make bench`` harness: every server under test, one after another, one load generator.

    python -m bench [--quick] [--rounds N] [--duration S] [--servers A,B] [--scenarios X,Y]

Each measurement starts the server as its own process (a fresh one per measurement),
waits for its ready line, runs the Node load generator (bench/node/loadgen.js) for one
scenario against it, and stops it. Rounds are interleaved: round 1 runs scenario 1 on
every server, then scenario 2 on every server, ...; then round 2 does the same, starting
from the next server (the order rotates so no server always runs first). The figure
reported is the median over the rounds.

``BENCH_QUICK=1`` in the environment is ``--quick``: one round of 1 s with fewer
connections, for a fast check. Results go to bench/results/latest.json and latest.md
(plus a timestamped copy of each); server output goes to bench/results/logs/.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "node"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
PY = sys.executable
NOFILE = 20000  # open files for the harness, the servers and the load generator
READY_TIMEOUT = 20.0  # seconds for a server to print its ready line
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


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
]
REFERENCE = "takeover"


def check_available(server: ServerSpec) -> str:
    """Why ``server`` cannot run here, or "" if it can."""
    for need in server.needs:
        if need == "node":
            if shutil.which("node") is None:
                return "node is not installed"
            if not (NODE_DIR / "node_modules" / "ws").is_dir():
                return "bench/node/node_modules/ws is missing (npm install in bench/node)"
            continue
        probe = subprocess.run([PY, "-c", f"import {need}"], capture_output=True, text=True, cwd=ROOT)
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
            return f"import {need} failed: {last}"
    return ""


# -- processes --------------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE for this process and so for its children; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            hard = wanted
        except (ValueError, OSError):
            wanted = hard
    if soft == resource.RLIM_INFINITY or soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree = children_of()
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(tree.get(current, []))
    return pids


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in KB."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """User and system CPU time of every process on the machine (all CPUs), from /proc/stat.

    Interrupt and softirq time (where the kernel moves loopback traffic) is left out,
    as it is out of the processes' own figures.
    """
    with open("/proc/stat") as stat:
        user, nice, system = (int(value) for value in stat.readline().split()[1:4])
    return (user + nice + system) / TICKS


def foreign_cpu_share(seconds: float = 1.0) -> float:
    """How busy the machine is without us, in cores (mean over ``seconds``)."""
    mine = os.getpid()
    before_all, before_mine = machine_busy_seconds(), cpu_seconds(mine)
    time.sleep(seconds)
    after_all, after_mine = machine_busy_seconds(), cpu_seconds(mine)
    return max(0.0, (after_all - before_all) - (after_mine - before_mine)) / seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """What a child runs before exec: its CPU, and death with the harness (no stray servers)."""

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class Lines:
    """The lines a process writes to a pipe, read by a thread (so reads can time out)."""

    def __init__(self, stream: Any, log: Any = None) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.log = log
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            if self.log is not None:
                self.log.write(line)
                self.log.flush()
            self.queue.put(line)
        self.queue.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line; None at EOF; raises queue.Empty after ``timeout``."""
        return self.queue.get(timeout=timeout)


class ServerProcess:
    def __init__(self, spec: ServerSpec, scenario: str, cpus: set[int] | None, log: Any) -> None:
        self.spec = spec
        self.port = free_port()
        command = spec.command(scenario, self.port)
        assert command is not None
        self.command = command
        log.write(f"\n=== {time.strftime('%H:%M:%S')} {spec.key} {scenario}: {' '.join(command)}\n")
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
            preexec_fn=child_setup(cpus),
        )
        self.lines = Lines(self.process.stdout, log)

    def wait_ready(self) -> None:
        try:
            line = self.lines.get(READY_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"no ready line within {READY_TIMEOUT:g} s") from None
        if line is None:
            code = self.process.wait(5)
            raise RuntimeError(f"exited with status {code} before its ready line (see the log)")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(STOP_TIMEOUT)


def run_loadgen(
    params: dict[str, Any],
    server: ServerProcess,
    cpus: set[int] | None,
    on_event: Callable[[dict[str, Any], Any], None],
) -> dict[str, Any]:
    """Run loadgen.js with ``params``; call ``on_event(event, process)`` for each progress line."""
    budget = params["duration"] + params["warmup"] + params["timeout"] + params.get("hold", 0) + 30
    command = [
        "bash",
        "-c",
        f'ulimit -n {NOFILE}; exec node bench/node/loadgen.js "$1"',
        "loadgen",
        json.dumps(params),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=child_setup(cpus),
    )
    lines = Lines(process.stdout)
    errors = Lines(process.stderr)
    deadline = time.monotonic() + budget
    result: dict[str, Any] | None = None
    try:
        while result is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"load generator still running after {budget:g} s")
            try:
                line = lines.get(remaining)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "result":
                result = event
            else:
                on_event(event, process)
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited with status {server.process.returncode} during the run")
    finally:
        if process.poll() is None:
            try:
                process.wait(10 if result is not None else 0.1)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if result is None:
        stderr = []
        while True:
            try:
                line = errors.get(1)
            except queue.Empty:
                break
            if line is None:
                break
            stderr.append(line)
        raise RuntimeError("load generator ended without a result: " + "".join(stderr[-5:]).strip())
    return result


# -- one measurement --------------------------------------------------------------------


def measure(
    spec: ServerSpec,
    scenario: Scenario,
    params: dict[str, Any],
    pin: dict[str, set[int] | None],
    log: Any,
    settle: float,
) -> dict[str, Any]:
    """Start the server, run one scenario against it, stop it; return the load generator's result
    with "value" (the figure in the scenario's unit) and the server's CPU time and RSS added."""
    server = ServerProcess(spec, scenario.key, pin["server"], log)
    try:
        server.wait_ready()
        pid = server.process.pid
        params = dict(params, url=spec.url(server.port))
        marks: dict[str, float] = {}

        def on_event(event: dict[str, Any], loadgen: Any) -> None:
            kind = event.get("event")
            if kind in ("start", "end"):
                marks[f"time_{kind}"] = time.monotonic()
                marks[f"cpu_{kind}"] = cpu_seconds(pid)
                marks[f"client_{kind}"] = cpu_seconds(loadgen.pid)
                marks[f"all_{kind}"] = machine_busy_seconds()
            elif kind == "ready":  # idle: warmed up, nothing open
                time.sleep(settle)
                marks["rss_before"] = rss_kb(pid)
                loadgen.stdin.write("go\n")
                loadgen.stdin.flush()
            elif kind == "open":  # idle: every connection open, nothing sent since
                time.sleep(settle)
                marks["rss_after"] = rss_kb(pid)
                marks["opened"] = event.get("count", 0)
                loadgen.stdin.write("close\n")
                loadgen.stdin.flush()

        result = run_loadgen(params, server, pin["client"], on_event)
        if result.get("error"):
            raise RuntimeError(f"load generator: {result['error']}")
        if "cpu_start" in marks and "cpu_end" in marks:
            # Shares of one core over the measured window: the server's, the load
            # generator's, and everyone else's (another job on the machine skews figures).
            window = marks["time_end"] - marks["time_start"]
            server_cpu = marks["cpu_end"] - marks["cpu_start"]
            client_cpu = marks["client_end"] - marks["client_start"]
            everything = marks["all_end"] - marks["all_start"]
            result["server_cpu"] = server_cpu / window
            result["client_cpu"] = client_cpu / window
            result["foreign_cpu"] = max(0.0, everything - server_cpu - client_cpu) / window
        if scenario.key == "idle":
            result["rss_before_kb"] = marks["rss_before"]
            result["rss_after_kb"] = marks["rss_after"]
            result["value"] = (marks["rss_after"] - marks["rss_before"]) / result["connections"]
        elif scenario.key == "small":
            result["value"] = result["messages_per_second"]
        elif scenario.key == "large":
            result["value"] = result["mb_per_second"]
        elif scenario.key == "handshake":
            result["value"] = result["handshakes_per_second"]
        else:
            result["value"] = result["deliveries_per_second"]
        problems = []
        if result.get("wrong_size"):
            problems.append(f"{result['wrong_size']} echoes of the wrong size")
        if result.get("wrong_type"):
            problems.append(f"{result['wrong_type']} echoes of the wrong type (text/binary)")
        if scenario.key == "broadcast" and not result.get("complete", True):
            problems.append(f"a batch did not arrive in full ({result['delivered']} of {result['expected']})")
        if scenario.key == "handshake" and result.get("failures"):
            problems.append(f"{result['failures']} failed handshakes ({result.get('first_failure')})")
        if problems:
            result["problems"] = problems
        return result
    finally:
        server.stop()


# -- the machine --------------------------------------------------------------------------


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def probe(code: str) -> str:
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return (
        done.stdout.strip()
        if done.returncode == 0
        else "no (" + (done.stderr.strip().splitlines() or ["?"])[-1] + ")"
    )


def takeover_fingerprint() -> str:
    """A hash of takeover's sources as they are on disk (they may change while a run goes on)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "takeover").rglob("*")):
        if path.suffix in (".py", ".c") and path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        with open("/proc/meminfo") as meminfo:
            memory = f"{int(meminfo.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else "missing"
    )

    def node_package(name: str) -> str:
        try:
            return str(json.loads((NODE_DIR / "node_modules" / name / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            return "missing"

    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "takeover"], capture_output=True, text=True, cwd=ROOT
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_version,
        "ws": node_package("ws"),
        "bufferutil": node_package("bufferutil"),
        "takeover": version("takeover"),
        "takeover_commit": git_commit(),
        "takeover_uncommitted_changes": bool(dirty.stdout.strip()),
        "takeover_speedups": probe("from takeover.protocol.mask import SPEEDUPS; print(SPEEDUPS)"),
        "gevent": version("gevent"),
        "greenlet": version("greenlet"),
        "websockets": version("websockets"),
        "websockets_speedups": probe("import websockets.speedups; print('yes')"),
        "gevent-websocket": version("gevent-websocket"),
        "flask": version("flask"),
        "flask-sock": version("flask-sock"),
        "simple-websocket": version("simple-websocket"),
        "picows": version("picows"),
        "uvloop": version("uvloop"),
    }


# -- tables ---------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "KB/conn":
        return f"{value:.1f}"
    if unit == "MB/s":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:,.0f}"


TAKEOVER_MODES = ("takeover", "takeover-inapp")
TARGET_COLUMNS = (*TAKEOVER_MODES, "takeover-legacy")
TARGETS = [
    # (scenario, peer, minimum ratio takeover/peer, label, the takeover rows it applies to)
    ("small", "websockets", 1.3, "32 B echo: takeover >= 1.3x websockets", TAKEOVER_MODES),
    ("small", "gevent-websocket", 1.8, "32 B echo: takeover >= 1.8x gevent-websocket", TAKEOVER_MODES),
    ("small", "gevent-tcp", 0.75, "32 B echo: takeover >= 0.75x raw gevent TCP", TAKEOVER_MODES),
    ("large", "websockets", 1.0, "1 MiB echo: takeover >= 1.0x websockets", TAKEOVER_MODES),
    ("handshake", "gevent-websocket", 1.0, "handshakes/s: takeover >= 1.0x gevent-websocket", TAKEOVER_MODES),
    (
        "large",
        "gevent-websocket",
        20.0,
        "1 MiB echo: the gevent-websocket app on takeover.legacy >= 20x on gevent-websocket",
        ("takeover-legacy",),
    ),
]


def evaluate_targets(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario, peer, minimum, label, modes in TARGETS:
        row: dict[str, Any] = {"target": label}
        for mode in TARGET_COLUMNS:
            if mode not in modes:
                row[mode] = {"ratio": None, "pass": None, "applies": False}
                continue
            mine = summary.get(mode, {}).get(scenario, {}).get("median")
            theirs = summary.get(peer, {}).get(scenario, {}).get("median")
            if mine is None or theirs is None or theirs == 0:
                row[mode] = {"ratio": None, "pass": None}
            else:
                ratio = mine / theirs
                row[mode] = {"ratio": ratio, "pass": ratio >= minimum}
        rows.append(row)
    idle = {}
    for mode in ("takeover", "takeover-inapp"):
        value = summary.get(mode, {}).get("idle", {}).get("median")
        idle[mode] = {"value": value, "pass": None if value is None else value <= 10.0}
    rows.append(dict({"target": "idle RSS: takeover <= 10 KB per connection"}, **idle))
    framed = {}
    for mode, source in (
        ("takeover", "takeover_socket_broadcast.py"),
        ("takeover-inapp", "takeover_inapp_broadcast.py"),
    ):
        text = (BENCH / "servers" / source).read_text()
        uses = "from takeover import broadcast" in text or "import broadcast," in text
        ran = summary.get(mode, {}).get("broadcast", {}).get("median") is not None
        framed[mode] = {
            "value": f"takeover.broadcast in bench/servers/{source}",
            "pass": uses and ran if ran else None,
        }
    rows.append(
        dict({"target": "broadcast: takeover frames the message once (takeover.broadcast)"}, **framed)
    )
    return rows


def verdict(cell: dict[str, Any] | None, scenario_unit: str = "") -> str:
    if cell is None or cell.get("applies") is False:
        return "n/a"
    if cell.get("pass") is None:
        return "not measured"
    mark = "PASS" if cell["pass"] else "FAIL"
    if cell.get("ratio") is not None:
        return f"{mark} ({cell['ratio']:.2f}x)"
    if isinstance(cell.get("value"), float):
        return f"{mark} ({cell['value']:.1f} KB)"
    return mark


def markdown(report: dict[str, Any]) -> str:
    summary = report["summary"]
    scenarios = [SCENARIO_BY_KEY[key] for key in report["config"]["scenarios"]]
    servers = [server for server in SERVERS if server.key in report["config"]["servers"]]
    header = ["server"] + [f"{scenario.title} ({scenario.unit})" for scenario in scenarios]
    rows = []
    for server in servers:
        row = [server.label]
        for scenario in scenarios:
            cell = summary.get(server.key, {}).get(scenario.key, {})
            if cell.get("status") == "ok":
                reference = summary.get(REFERENCE, {}).get(scenario.key, {}).get("median")
                text = fmt(cell["median"], scenario.unit)
                if reference:
                    text += f" ({cell['median'] / reference:.2f}x)"
                if cell.get("client_cpu", 0) >= CLIENT_BOUND:
                    text += " †"
                if cell.get("problems"):
                    text += " !"
                row.append(text)
            else:
                row.append(cell.get("status", "-"))
        rows.append(row)
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True))
            + " |"
        )

    out = [line(header), "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    out += [line(row) for row in rows]
    out.append("")
    out.append(
        f"Medians of {report['config']['rounds']} round(s) of {report['config']['duration']:g} s; "
        "(N.NNx) is the ratio to takeover (socket mode) in the same run "
        '(for idle RSS, lower is better). "†": the load generator used '
        f"{CLIENT_BOUND:.0%} or more of its CPU, so it, not the server, may have set the figure. "
        '"!": a figure with problems (listed below).'
    )
    busy = [
        (server.label, scenario.title, cell["foreign_cpu_max"])
        for server in servers
        for scenario in scenarios
        for cell in [summary.get(server.key, {}).get(scenario.key, {})]
        if cell.get("foreign_cpu_max", 0) > QUIET
    ]
    if busy:
        out.append("")
        out.append(
            "Other processes used the CPUs during: "
            + "; ".join(f"{label}, {title} (up to {share:.0%} of a core)" for label, title, share in busy)
            + "."
        )
    out.append("")
    out.append("CPU use during the measured window (median; share of one core), server / load generator:")
    out.append("")
    cpu_header = ["server"] + [scenario.title for scenario in scenarios if scenario.key != "idle"]
    out.append("| " + " | ".join(cpu_header) + " |")
    out.append("|" + "|".join("---" for _ in cpu_header) + "|")
    for server in servers:
        row = [server.label]
        for scenario in scenarios:
            if scenario.key == "idle":
                continue
            cell = summary.get(server.key, {}).get(scenario.key, {})
            row.append(
                f"{cell['server_cpu']:.0%} / {cell['client_cpu']:.0%}" if "client_cpu" in cell else "-"
            )
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    target_rows = report["targets"]
    out.append("| target (issue) | takeover (socket mode) | takeover (in-app) | takeover.legacy |")
    out.append("|---|---|---|---|")
    for row in target_rows:
        cells = " | ".join(verdict(row.get(mode)) for mode in TARGET_COLUMNS)
        out.append(f"| {row['target']} | {cells} |")
    notes = []
    for server in servers:
        for scenario in scenarios:
            cell = summary.get(server.key, {}).get(scenario.key, {})
            for problem in cell.get("problems", []):
                notes.append(f"- {server.label}, {scenario.title}: {problem}")
            for error in cell.get("errors", []):
                notes.append(f"- {server.label}, {scenario.title}: {error}")
            if cell.get("reason"):
                notes.append(f"- {server.label}, {scenario.title}: {cell['status']}: {cell['reason']}")
    if notes:
        out += ["", "Problems, errors and gaps:", "", *notes]
    return "\n".join(out) + "\n"


def machine_markdown(report: dict[str, Any]) -> str:
    info = report["machine"]
    config = report["config"]
    lines = [
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory']} RAM, Linux {info['kernel']}",
        f"- pinning: {config['pinning']}",
        f"- Python {info['python']}, gevent {info['gevent']}, greenlet {info['greenlet']}",
        f"- takeover {info['takeover']} at {info['takeover_commit']}"
        + (" (with uncommitted changes in takeover/)" if info["takeover_uncommitted_changes"] else "")
        + (
            f" (CHANGED DURING THE RUN: it started at {report['takeover_at_start']['commit']})"
            if report["takeover_sources_changed_during_run"]
            else ""
        )
        + f", C speedups: {info['takeover_speedups']}",
        f"- websockets {info['websockets']} (C speedups: {info['websockets_speedups']}), "
        f"gevent-websocket {info['gevent-websocket']}, Flask {info['flask']}, "
        f"Flask-Sock {info['flask-sock']} (simple-websocket {info['simple-websocket']}), "
        f"picows {info['picows']}, uvloop {info['uvloop']}",
        f"- Node {info['node']}, ws {info['ws']}, bufferutil {info['bufferutil']} "
        f"(load generator: {config['client']} client; Node server)",
        f"- command: `{config['command']}`; {config['rounds']} round(s), {config['duration']:g} s per "
        f"measurement after {config['warmup']:g} s of warm-up; total {report['runtime_seconds']:.0f} s",
    ]
    lines.append("- scenarios:")
    for key in config["scenarios"]:
        lines.append(f"  - {SCENARIO_BY_KEY[key].title}: {config['scenario_descriptions'][key]}")
    return "\n".join(lines) + "\n"


CLIENT_BOUND = 0.9  # the load generator's share of its core from which a figure is marked
QUIET = 0.15  # cores: more CPU than this used by other processes delays the next measurement
RETRIES = 2  # a measurement disturbed by them is taken again, at most this many times
QUIET_WAIT = 60.0  # seconds to wait for it at most, then measure anyway (and say so)


def wait_for_quiet(label: str) -> None:
    """Wait (a bounded time) until other processes leave the CPUs alone."""
    deadline = time.monotonic() + QUIET_WAIT
    busy = foreign_cpu_share(0.5)
    if busy <= QUIET:
        return
    print(f"{label} waiting: other processes use {busy:.0%} of a core", flush=True)
    while busy > QUIET and time.monotonic() < deadline:
        busy = foreign_cpu_share(1.0)
    if busy > QUIET:
        print(
            f"{label} measuring anyway after {QUIET_WAIT:g} s: other processes still use {busy:.0%}",
            flush=True,
        )


# -- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1 s, fewer connections (also BENCH_QUICK=1)"
    )
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 3, quick 1)")
    parser.add_argument("--servers", help="comma-separated keys: " + ",".join(s.key for s in SERVERS))
    parser.add_argument("--scenarios", help="comma-separated keys: " + ",".join(s.key for s in SCENARIOS))
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to CPUs")
    parser.add_argument(
        "--client",
        choices=["lean", "ws"],
        default="lean",
        help="lean (default): ws opens and closes connections, messages are pre-framed "
        "writes and counted reads; ws: every message through ws's API",
    )
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    rounds = args.rounds or (1 if quick else 3)
    duration = args.duration or (1.0 if quick else 3.0)
    warmup = 0.25 if quick else 0.5
    settle = 1.0 if quick else 2.0
    servers = [s for s in SERVERS if not args.servers or s.key in args.servers.split(",")]
    scenarios = [s for s in SCENARIOS if not args.scenarios or s.key in args.scenarios.split(",")]
    if not any(s.key == REFERENCE for s in servers):
        print(
            "note: takeover (socket mode) is not among the servers, so there are no ratios", file=sys.stderr
        )

    if shutil.which("node") is None:
        print(
            "make bench: the load generator needs Node.js (node) and bench/node's npm packages",
            file=sys.stderr,
        )
        return 2
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the server being measured.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    nofile = raise_nofile()
    if nofile < 4 * 3000:
        print(f"warning: only {nofile} open files allowed; the idle scenario may fail", file=sys.stderr)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and not args.no_pin:
        pin: dict[str, set[int] | None] = {"server": {cpus[0]}, "client": {cpus[1]}}
        pinning = f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}"
    else:
        pin = {"server": None, "client": None}
        pinning = "none"

    for server in servers:
        server.unavailable = check_available(server)
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    commit_at_start, sources_at_start = git_commit(), takeover_fingerprint()
    values: dict[str, dict[str, list[float]]] = {s.key: {c.key: [] for c in scenarios} for s in servers}
    details: dict[str, dict[str, list[dict[str, Any]]]] = {
        s.key: {c.key: [] for c in scenarios} for s in servers
    }
    errors: dict[str, dict[str, list[str]]] = {s.key: {c.key: [] for c in scenarios} for s in servers}
    command = "BENCH_QUICK=1 make bench" if quick and not args.quick else "make bench"
    if argv is None and sys.argv[1:]:
        command = "python -m bench " + " ".join(sys.argv[1:])
    print(
        f"bench: {len(servers)} servers x {len(scenarios)} scenarios x {rounds} round(s), "
        f"{duration:g} s each ({'quick' if quick else 'full'}); pinning: {pinning}",
        flush=True,
    )
    for server in servers:
        if server.unavailable:
            print(f"  skipped {server.key}: {server.unavailable}", flush=True)

    logs = {server.key: open(LOGS / f"{server.key}.log", "w") for server in servers}
    try:
        for round_index in range(rounds):
            order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
            for scenario in scenarios:
                params = dict(
                    scenario.params(quick), duration=duration, warmup=warmup, timeout=60, client=args.client
                )
                for server in order:
                    if server.unavailable:
                        continue
                    if scenario.key == "broadcast" and server.broadcast is None:
                        continue
                    label = f"[round {round_index + 1}/{rounds}] {scenario.key:9} {server.key:16}"
                    result = None
                    for attempt in range(1 + RETRIES):
                        wait_for_quiet(label)
                        try:
                            result = measure(server, scenario, params, pin, logs[server.key], settle)
                        except Exception as error:  # one failure must not end the run
                            message = f"round {round_index + 1}: {error}"
                            errors[server.key][scenario.key].append(message)
                            print(f"{label} ERROR {error}", flush=True)
                            result = None
                            break
                        result["attempt"] = attempt + 1
                        if result.get("foreign_cpu", 0) <= QUIET or attempt == RETRIES:
                            break
                        print(
                            f"{label} disturbed: other processes used {result['foreign_cpu']:.0%} of a core "
                            f"({fmt(result['value'], scenario.unit)} {scenario.unit}); measuring again",
                            flush=True,
                        )
                    if result is None:
                        continue
                    values[server.key][scenario.key].append(result["value"])
                    details[server.key][scenario.key].append(result)
                    extra = ""
                    if result.get("server_cpu") is not None:
                        extra = (
                            f"  CPU: server {result['server_cpu']:.0%}, client {result['client_cpu']:.0%}, "
                            f"other {result['foreign_cpu']:.0%}"
                        )
                    problems = ("  ! " + "; ".join(result["problems"])) if result.get("problems") else ""
                    print(
                        f"{label} {fmt(result['value'], scenario.unit):>10} {scenario.unit}{extra}{problems}",
                        flush=True,
                    )
    finally:
        for log in logs.values():
            log.close()
    runtime = time.monotonic() - started
    sources_changed = takeover_fingerprint() != sources_at_start
    if sources_changed:
        print("warning: takeover's sources changed during the run: its figures mix versions", file=sys.stderr)

    summary: dict[str, dict[str, Any]] = {}
    for server in servers:
        summary[server.key] = {}
        for scenario in scenarios:
            cell: dict[str, Any]
            if server.unavailable:
                cell = {"status": "skipped", "reason": server.unavailable}
            elif scenario.key == "broadcast" and server.broadcast is None:
                cell = {"status": "n/a", "reason": server.no_broadcast_reason}
            elif values[server.key][scenario.key]:
                runs = values[server.key][scenario.key]
                found = sorted({p for d in details[server.key][scenario.key] for p in d.get("problems", [])})
                cell = {
                    "status": "ok",
                    "median": statistics.median(runs),
                    "values": runs,
                    "min": min(runs),
                    "max": max(runs),
                }
                shares = [d["client_cpu"] for d in details[server.key][scenario.key] if "client_cpu" in d]
                if shares:
                    cell["client_cpu"] = statistics.median(shares)
                    cell["server_cpu"] = statistics.median(
                        d["server_cpu"] for d in details[server.key][scenario.key] if "server_cpu" in d
                    )
                    cell["foreign_cpu_max"] = max(
                        d["foreign_cpu"] for d in details[server.key][scenario.key] if "foreign_cpu" in d
                    )
                if found:
                    cell["problems"] = found
                if errors[server.key][scenario.key]:
                    cell["errors"] = errors[server.key][scenario.key]
            else:
                cell = {"status": "error", "errors": errors[server.key][scenario.key]}
            summary[server.key][scenario.key] = cell

    report: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "command": command,
            "quick": quick,
            "rounds": rounds,
            "duration": duration,
            "warmup": warmup,
            "settle": settle,
            "pinning": pinning,
            "client": args.client,
            "servers": [s.key for s in servers],
            "scenarios": [s.key for s in scenarios],
            "scenario_params": {s.key: s.params(quick) for s in scenarios},
            "scenario_descriptions": {
                s.key: describe_scenario(s, s.params(quick), duration) for s in scenarios
            },
            "server_notes": {s.key: s.notes for s in servers},
        },
        "runtime_seconds": runtime,
        "takeover_at_start": {"commit": commit_at_start, "sources": sources_at_start},
        "takeover_sources_changed_during_run": sources_changed,
        "summary": summary,
        "details": details,
    }
    report["targets"] = evaluate_targets(summary)
    table = markdown(report)
    text = "# takeover benchmark\n\n" + machine_markdown(report) + "\n" + table
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "quick" if quick else "full"
    for name in ("latest", f"{kind}-{stamp}"):
        (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {RESULTS.relative_to(ROOT)}/latest.json and latest.md; total {runtime:.0f} s")
    return 0
