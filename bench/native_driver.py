"""The fan-out scenario's C driver (bench/native/fanout_driver.c): built once, and its command line.

The takeover rows' members are read by it rather than by bench/node/fanout.js:
it prints the same JSON lines for the same parameters, at a fraction of Node's
CPU per delivery (see the C file's comment), so that with the driver on a core
of its own the server is what saturates. It is built with the system's C
compiler (``cc``, Debian's build-essential) into bench/native/build/, again
whenever the source is newer than the binary. Without a compiler the harness
falls back to the Node driver and says so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.config import ROOT

SOURCE = ROOT / "bench" / "native" / "fanout_driver.c"
BINARY = ROOT / "bench" / "native" / "build" / "fanout_driver"
BUILD_TIMEOUT = 120.0


def build() -> Path | None:
    """The driver's binary, built if missing or older than its source; None without ``cc``."""
    if BINARY.exists() and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime:
        return BINARY
    compiler = shutil.which("cc")
    if compiler is None:
        return None
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [compiler, "-O2", "-Wall", "-o", str(BINARY), str(SOURCE), "-lm"],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot build {SOURCE.relative_to(ROOT)}: {done.stderr.strip()}")
    return BINARY


def command(binary: Path, params: dict[str, Any]) -> list[str]:
    """The driver's command line for fanout.js's ``params`` (a "ws" row's: ``url`` and ``pubUrl``)."""
    members, publishers = urlsplit(params["url"]), urlsplit(params["pubUrl"])
    options = {
        "--host": members.hostname, "--port": members.port, "--path": members.path or "/",
        "--pub-path": publishers.path or "/",
        "--clients": params["clients"], "--concurrency": params["openConcurrency"],
        "--rates": ",".join(f"{rate:g}" for rate in params["rates"]), "--warmup": params["warmup"],
        "--duration": params["duration"], "--drain": params["drain"], "--pause": params["pause"],
        "--timeout": params["timeout"], "--budget": params["budget"], "--size": params.get("size", 100),
        "--publishers": params.get("publishers", 1),
    }
    return [str(binary), *(str(part) for pair in options.items() for part in pair)]
