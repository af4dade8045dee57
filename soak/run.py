"""``make soak``: 5,000 concurrent connections echoing for 60 s, then all closed.

Checks, and prints: zero errors, zero lost or reordered messages, and that the
server's open file descriptors, greenlets and RSS come back to within 10% of
where they started (counts: 10% or 2, whichever is larger). Exits non-zero if
any figure misses. Loopback only; every wait is bounded.

It also prints the number of live Python objects: with CPython's own small
object allocator RSS stays near its high-water mark after the connections
close (an arena is returned only when it is entirely empty) even when the
object count is back to where it started; run with PYTHONMALLOC=malloc to see
the memory actually handed back (the server calls malloc_trim before each
reading).

    python -m soak.run [--connections 5000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WS_MODULE = ROOT / "bench" / "node" / "node_modules" / "ws"
NOFILE = 30000


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "soak.server", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    match = re.search(r"ws://[^:]+:(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"soak: the server did not start: {line!r}")
    return process, int(match.group(1))


def server_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as response:
        data: dict[str, int] = json.loads(response.read())
        return data


def within(after: int, before: int, *, count: bool) -> bool:
    margin = max(before * 0.10, 2 if count else 0)
    return after <= before + margin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    raise_open_file_limit()
    process, port = start_server()
    try:
        before = server_stats(port)
        started = time.monotonic()
        env = dict(os.environ, WS_MODULE=str(WS_MODULE))
        client = subprocess.run(
            ["node", str(ROOT / "soak" / "client.js"), f"ws://127.0.0.1:{port}/",
             str(args.connections), str(args.seconds)],
            capture_output=True, text=True, env=env, timeout=args.seconds + 180,
        )
        load = json.loads(client.stdout.strip().splitlines()[-1])
        elapsed = time.monotonic() - started
        after = server_stats(port)
        for _ in range(60):  # closes may still be finishing: bounded wait
            if after["websockets"] == 0:
                break
            time.sleep(0.5)
            after = server_stats(port)
    finally:
        process.terminate()
        process.wait(30)

    checks = {
        "connections opened": load["opened"] == args.connections,
        "errors": load["errors"] == 0,
        "lost messages": load["lost"] == 0,
        "reordered messages": load["reordered"] == 0,
        "open WebSockets after": after["websockets"] == 0,
        "file descriptors back": within(after["fds"], before["fds"], count=True),
        "greenlets back": within(after["greenlets"], before["greenlets"], count=True),
        "RSS back": within(after["rss_kb"], before["rss_kb"], count=False),
    }
    print(f"soak: {args.connections} connections, {args.seconds:g} s of echo, {elapsed:.1f} s in all")
    print(f"  messages echoed: {load['messages']:,} ({load['messages'] / args.seconds:,.0f}/s)")
    print(f"  errors: {load['errors']} (first: {load['firstError']}), lost: {load['lost']},"
          f" reordered: {load['reordered']}")
    for key in ("fds", "greenlets", "websockets", "objects", "rss_kb"):
        print(f"  {key}: before {before[key]:,}, after {after[key]:,}")
    failed = [name for name, ok in checks.items() if not ok]
    print("soak: PASS" if not failed else f"soak: FAIL: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
