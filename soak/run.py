"""``make soak``: 5,000 concurrent connections echoing for 60 s, then all closed.

Checks, and prints: zero errors, zero lost or reordered messages, and that the
server's open file descriptors, greenlets, OS threads and RSS come back to within 10% of
where they started (counts: 10% or 2, whichever is larger). Exits non-zero if
any figure misses. Loopback only; every wait is bounded.

"Where they started" is measured after a warm-up round, the same as the
measured one: as many connections echoing for as long, then all closed. The
first round grows the process's allocator pools to their working size, and
with CPython's small-object allocator they stay there (an arena goes back to
the OS only when it is entirely empty), so after a cold start RSS looks 80%
higher even when every object is freed. A leak shows as growth from one
round to the next, which is what the check compares. The pools' size follows
the round's peak, so the warm-up is as long as the measured round (a 10 s
warm-up reached a lower peak on a busy machine and the check failed). The
cold-start figures are printed too, and so is the number of live Python
objects, which must come back as well.

Then a fragment flood (soak/flood.py), once with a binary message and once
with a text one: a client sends up to ``--flood-fragments`` 1-byte
continuation frames for at most ``--flood-seconds``, and the server's RSS may
grow by no more than 4 bytes a fragment plus 8 MiB while it holds the
unfinished message (RFC 6455 §5.4: one buffer per message, never an object
per fragment). ``--flood-only`` runs just that, without Node.

    python -m soak.run [--connections 5000] [--seconds 60] [--warmup SECONDS]
                       [--flood-fragments 2000000] [--flood-seconds 10] [--flood-only]
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
from typing import Any

from soak.flood import flood, within_bound

ROOT = Path(__file__).resolve().parent.parent
# Node's ws, from make bench's install (make soak) or make test's (tests/interop/test_soak.py).
WS_MODULES = [ROOT / "bench" / "node" / "node_modules" / "ws",
              ROOT / "tests" / "node" / "node_modules" / "ws"]
NOFILE = 30000


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def ws_module() -> Path:
    for path in WS_MODULES:
        if path.exists():
            return path
    raise SystemExit("soak: Node's ws is not installed: run make soak (it installs bench/node)")


def start_server(leak: bool, leak_fragments: bool = False) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "soak.server", "--port", "0", *(["--leak"] if leak else [])]
    if leak_fragments:
        command.append("--leak-fragments")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)
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


def run_round(port: int, connections: int, seconds: float) -> tuple[dict[str, Any], dict[str, int]]:
    """Run the Node client once; its report, and the server's stats once every WebSocket closed."""
    env = dict(os.environ, WS_MODULE=str(ws_module()))
    client = subprocess.run(
        ["node", str(ROOT / "soak" / "client.js"), f"ws://127.0.0.1:{port}/",
         str(connections), str(seconds)],
        capture_output=True, text=True, env=env, timeout=seconds + 180,
    )
    load: dict[str, Any] = json.loads(client.stdout.strip().splitlines()[-1])
    after = server_stats(port)
    for _ in range(60):  # closes may still be finishing: bounded wait
        if after["websockets"] == 0:
            break
        time.sleep(0.5)
        after = server_stats(port)
    return load, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--warmup", type=float, help="seconds of the warm-up round (default: --seconds; 0: none)"
    )
    parser.add_argument("--leak", action="store_true", help="run the server with --leak (to see FAIL)")
    parser.add_argument("--flood-fragments", type=int, default=2_000_000, help="at most, per flood")
    parser.add_argument("--flood-seconds", type=float, default=10, help="at most, per flood")
    parser.add_argument("--flood-only", action="store_true", help="only the fragment floods (no Node)")
    parser.add_argument(
        "--leak-fragments", action="store_true",
        help="run the server with --leak-fragments, which keeps an object per fragment (to see FAIL)",
    )
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.seconds
    raise_open_file_limit()
    process, port = start_server(args.leak, args.leak_fragments)
    try:
        if not args.flood_only:
            cold = server_stats(port)
            warmup: dict[str, int] | None = None
            if args.warmup > 0:
                warmup, _ = run_round(port, args.connections, args.warmup)
            before = server_stats(port)
            started = time.monotonic()
            load, after = run_round(port, args.connections, args.seconds)
            elapsed = time.monotonic() - started
        floods = [
            flood(port, process.pid, kind, args.flood_fragments, args.flood_seconds)
            for kind in ("binary", "text")
        ]
    finally:
        process.terminate()
        process.wait(30)

    checks = {} if args.flood_only else echo_checks(args, load, warmup, before, after)
    for result in floods:
        checks[f"{result.kind} fragment flood RSS"] = within_bound(result)
    if not args.flood_only:
        print_echo_figures(args, load, warmup, cold, before, after, elapsed)
    for result in floods:
        print(f"  {result}")
    failed = [name for name, ok in checks.items() if not ok]
    print("soak: PASS" if not failed else f"soak: FAIL: {', '.join(failed)}")
    return 1 if failed else 0


def echo_checks(
    args: argparse.Namespace,
    load: dict[str, Any],
    warmup: dict[str, Any] | None,
    before: dict[str, int],
    after: dict[str, int],
) -> dict[str, bool]:
    checks = {
        "connections opened": load["opened"] == args.connections,
        "errors": load["errors"] == 0,
        "lost messages": load["lost"] == 0,
        "reordered messages": load["reordered"] == 0,
        "open WebSockets after": after["websockets"] == 0,
        "file descriptors back": within(after["fds"], before["fds"], count=True),
        "greenlets back": within(after["greenlets"], before["greenlets"], count=True),
        "threads back": within(after["threads"], before["threads"], count=True),
        "RSS back": within(after["rss_kb"], before["rss_kb"], count=False),
        "Python objects back": within(after["objects"], before["objects"], count=False),
    }
    if warmup is not None:
        checks["warm-up round clean"] = (
            warmup["opened"] == args.connections and warmup["errors"] == 0 and warmup["lost"] == 0
            and warmup["reordered"] == 0
        )
    return checks


def print_echo_figures(
    args: argparse.Namespace,
    load: dict[str, Any],
    warmup: dict[str, Any] | None,
    cold: dict[str, int],
    before: dict[str, int],
    after: dict[str, int],
    elapsed: float,
) -> None:
    print(f"soak: {args.connections} connections, {args.seconds:g} s of echo, {elapsed:.1f} s in all")
    print(f"  messages echoed: {load['messages']:,} ({load['messages'] / args.seconds:,.0f}/s)")
    print(f"  errors: {load['errors']} (first: {load['firstError']}), lost: {load['lost']},"
          f" reordered: {load['reordered']}")
    if warmup is not None:
        print(f"  warm-up round: {args.warmup:g} s, {warmup['messages']:,} messages,"
              f" {warmup['errors']} errors, {warmup['lost']} lost, {warmup['reordered']} reordered")
    for key in ("fds", "greenlets", "threads", "websockets", "objects", "rss_kb"):
        print(f"  {key}: cold start {cold[key]:,}, before {before[key]:,}, after {after[key]:,}")


if __name__ == "__main__":
    raise SystemExit(main())
