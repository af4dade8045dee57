"""The machine and the software a run measured: CPU, memory, versions, takeover's commit."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from typing import Any

from bench.config import NODE_DIR, PY, ROOT

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
        "gunicorn": version("gunicorn"),
        "redis": version("redis"),
        "hiredis": version("hiredis"),
        "redis-server": redis_server_version(),
        "flask-socketio": version("flask-socketio"),
        "python-socketio": version("python-socketio"),
        "python-engineio": version("python-engineio"),
        "socket.io-client": node_package("socket.io-client"),
    }


def redis_server_version() -> str:
    """``redis-server --version``'s v=..., or "missing"."""
    program = shutil.which("redis-server")
    if program is None:
        return "missing"
    words = subprocess.run([program, "--version"], capture_output=True, text=True).stdout.split()
    return next((word[2:] for word in words if word.startswith("v=")), "unknown")
