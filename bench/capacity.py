"""What one Redis carries for a hub (``python -m bench --scenarios redis``): issue 21's capacity model.

One redis-server (bench/redisproc.py), driven from this process with redis-py:

* **publishes**: the hub's publish script (takeover/hub/_scripts.py, the same
  one the hubs run), pipelined 100 at a time, on ``rooms`` rooms in turn, each
  room subscribed by ``subscribers`` connections (the processes that have
  members in it), which read what they are sent. Measured: redis-server's CPU
  time per publish (from /proc), and so publishes per second per Redis core;
* **subscriptions**: one connection subscribes to ``channels`` rooms' channels
  (one process following that many rooms). Measured: redis-server's memory
  per subscription (``INFO memory``'s ``used_memory``, before and after).

Nothing is pinned; the figures are the server's own CPU and memory, which the
load around it does not change much. One round per ``--rounds``; medians.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench.proc import cpu_seconds
from bench.redisproc import RedisServer

REDIS = "redis"
PUBLISHES = 20_000
PIPELINE = 100
ROOMS = 100
SUBSCRIBERS = 4
CHANNELS = 20_000
PAYLOAD = "x" * 100


def _drain(pubsub: Any, stop: threading.Event) -> None:
    for _ in range(10**9):
        if stop.is_set():
            return
        pubsub.get_message(timeout=0.05)


def measure_redis(log: Any) -> dict[str, float]:
    """One round: CPU µs per publish (with SUBSCRIBERS readers per room), bytes per subscription."""
    import redis

    from takeover.hub._scripts import PUBLISH, keys

    server = RedisServer(log)
    try:
        server.wait_ready()
        client = redis.Redis.from_url(server.url)
        script = client.register_script(PUBLISH)
        rooms = [f"capacity-{n}" for n in range(ROOMS)]
        readers = []
        stop = threading.Event()
        for _ in range(SUBSCRIBERS):
            pubsub = redis.Redis.from_url(server.url).pubsub()
            pubsub.subscribe(*(keys("takeover", room)[2] for room in rooms))
            thread = threading.Thread(target=_drain, args=(pubsub, stop), daemon=True)
            thread.start()
            readers.append((pubsub, thread))
        before, started = cpu_seconds(server.pid), time.monotonic()
        for start in range(0, PUBLISHES, PIPELINE):
            pipe = client.pipeline(transaction=False)
            for n in range(start, start + PIPELINE):
                meta, stream, channel, _ = keys("takeover", rooms[n % ROOMS])
                script(keys=[meta, stream], args=[channel, 100, 300_000, "t", PAYLOAD], client=pipe)
            pipe.execute()
        used, wall = cpu_seconds(server.pid) - before, time.monotonic() - started
        stop.set()
        for pubsub, thread in readers:
            thread.join(5)
            pubsub.close()
        memory_before = int(client.info("memory")["used_memory"])
        follower = redis.Redis.from_url(server.url).pubsub()
        channels = [f"takeover:room:follow-{n}" for n in range(CHANNELS)]
        for start in range(0, CHANNELS, 1000):
            follower.subscribe(*channels[start : start + 1000])
        for _ in range(10**6):  # every confirmation read: the subscriptions are all in place
            message = follower.get_message(timeout=1.0)
            if message is None or (message["type"] == "subscribe" and message["data"] >= CHANNELS):
                break
        memory_after = int(client.info("memory")["used_memory"])
        follower.close()
        client.close()
    finally:
        server.stop()
    return {
        "publish_cpu_us": used / PUBLISHES * 1e6,
        "publishes_per_second_measured": PUBLISHES / wall,
        "bytes_per_subscription": (memory_after - memory_before) / CHANNELS,
    }


def run_redis(rounds: int, logs: Any) -> dict[str, Any]:
    """``rounds`` rounds; the medians, and what one Redis core carries."""
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    with open(logs / "redis-capacity.log", "w") as log:
        for round_index in range(rounds):
            result = measure_redis(log)
            results.append(result)
            print(
                f"[round {round_index + 1}/{rounds}] redis     {result['publish_cpu_us']:.1f} µs of Redis "
                f"CPU per publish, {result['bytes_per_subscription']:.0f} bytes per subscription",
                flush=True,
            )
    cpu = statistics.median(r["publish_cpu_us"] for r in results)
    return {
        "description": (
            f"one redis-server: the hub's publish script, {PUBLISHES:,} publishes of 100 bytes pipelined "
            f"{PIPELINE} at a time over {ROOMS} rooms, each room subscribed by {SUBSCRIBERS} connections; "
            f"then one connection subscribing to {CHANNELS:,} rooms"
        ),
        "publish_cpu_us": cpu,
        "publishes_per_core": 1e6 / cpu,
        "bytes_per_subscription": statistics.median(r["bytes_per_subscription"] for r in results),
        "rounds": results,
    }


def redis_markdown(capacity: dict[str, Any]) -> str:
    return (
        "## What one Redis carries\n\n"
        + capacity["description"]
        + ".\n\n| figure | median |\n|---|---|\n"
        + f"| Redis CPU per publish | {capacity['publish_cpu_us']:.1f} µs |\n"
        + f"| publishes per second per Redis core | {capacity['publishes_per_core']:,.0f} |\n"
        + "| memory per subscription (a room followed by a process) | "
        + f"{capacity['bytes_per_subscription']:.0f} bytes |\n"
    )
