"""takeover.metrics on real servers: the pinned metrics, scraped from gunicorn, one worker and four.

Every figure is read the way an operator reads it: the Prometheus text of
``/metrics`` (parsed with prometheus_client's parser), and, for four workers,
through a real Prometheus server's query API (Debian's ``prometheus``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import ClientConnection, connect

from tests.paths import ROOT
from tests.processes import OutputLines, free_port, stop_process
from tests.redis_server import RedisServer

APP = "tests.metrics.apps.metrics_app:app"
WAIT = 30.0


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    output: OutputLines
    port: int
    clients: contextlib.ExitStack

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws(self, query: str = "") -> ClientConnection:
        """A client, closed at the end of the server's block if the test has not closed it."""
        return self.clients.enter_context(connect(f"ws://127.0.0.1:{self.port}/ws{query}", open_timeout=10))

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return str(response.read().decode())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, by (name, labels)."""
        samples = {}
        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


@contextlib.contextmanager
def gunicorn(workers: int, env: dict[str, str], *options: str) -> Iterator[Gunicorn]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", str(workers),
        "-b", f"127.0.0.1:{port}", "--graceful-timeout", "3", *options, APP,
    ]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **env),
    )
    output = OutputLines(process.stdout)
    try:
        booted = output.wait_output(lambda text: text.count("Booting worker") >= workers, WAIT)
        assert booted, output.output
        with contextlib.ExitStack() as clients:
            server = Gunicorn(process, output, port, clients)
            eventually(lambda: server.get("/pid"))  # a worker answers
            yield server
    finally:
        stop_process(process)


def eventually(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``check()``'s first truthy result, tried until ``timeout`` (what it last raised, after that)."""
    deadline = time.monotonic() + timeout
    error: BaseException | None = None
    for _ in range(100_000):
        try:
            result = check()
        except (AssertionError, OSError, KeyError) as caught:
            error, result = caught, None
        if result:
            return result
        if time.monotonic() > deadline:
            if error is not None:
                raise error
            raise AssertionError(f"still {result!r} after {timeout} s")
        time.sleep(0.1)  # polling a scrape: the figure has no event to wait for
    raise AssertionError("unreachable")


def open_by_process(multiproc: Path, total: int) -> dict[int, int] | None:
    """Each worker's open sockets, from the figures it copies into ``multiproc`` every second,
    once they add up to ``total``."""
    found = {}
    for path in multiproc.glob("takeover-status-*.json"):
        figures = json.loads(path.read_text())
        found[int(figures["pid"])] = int(figures["connections_open"])
    return found if sum(found.values()) == total else None


def refused_upgrade(port: int) -> bytes:
    """An upgrade with version 12: answered 426 (RFC 6455 §4.4)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n"
        )
        return raw.recv(4096)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_one_worker_counts_opens_closes_messages_bytes_and_refusals() -> None:
    with gunicorn(1, {}) as server:
        clients = [server.ws() for _ in range(3)]
        for client in clients:
            for number in range(10):
                client.send(f"message {number}")
                assert client.recv(timeout=10) == f"message {number}"
        for client in clients[:2]:
            client.close(code=4001)
        assert refused_upgrade(server.port).startswith(b"HTTP/1.1 426")

        def settled() -> Any:
            samples = server.metrics()
            return samples if value(samples, "takeover_closes_total", code="4001") == 2 else None

        samples = eventually(settled)
        assert value(samples, "takeover_connections_open") == 1
        assert value(samples, "takeover_connections_total") == 3
        assert value(samples, "takeover_messages_received_total") == 30
        assert value(samples, "takeover_messages_sent_total") == 30
        # 30 frames of 9 bytes, masked: 6 bytes of header each, at least (RFC 6455 §5.2).
        assert value(samples, "takeover_bytes_received_total") >= 30 * (9 + 6)
        assert value(samples, "takeover_bytes_sent_total") >= 30 * (9 + 2)
        assert value(samples, "takeover_handshake_rejections_total", status="426") == 1
        assert value(samples, "takeover_handovers_total") == 3  # gthread hands each over
        assert value(samples, "takeover_backpressure_closes_total") == 0


def test_the_hub_counts_deliveries_and_the_lag_of_each_message() -> None:
    with gunicorn(1, {}) as server:
        members = [server.ws("?room=news") for _ in range(2)]
        for member in members:  # its echo comes after its open event: a live member of the room
            member.send("pid")
            assert member.recv(timeout=10) == server.get("/pid")
        body = urllib.request.Request(server.url("/publish?room=news"), data=b"hello", method="POST")
        with urllib.request.urlopen(body, timeout=10):
            pass
        assert [member.recv(timeout=10) for member in members] == ["hello", "hello"]

        samples = server.metrics()
        assert value(samples, "takeover_hub_deliveries_total") == 2
        assert value(samples, "takeover_hub_healthy") == 1
        assert value(samples, "takeover_hub_gaps_total") == 0
        assert value(samples, "takeover_hub_delivery_lag_seconds_count") == 1
        assert value(samples, "takeover_hub_delivery_lag_seconds_bucket", le="+Inf") == 1
        assert 0 <= value(samples, "takeover_hub_delivery_lag_seconds_sum") < 1.0
        assert value(samples, "takeover_hub_members") == 2


# -- four workers, scraped by a real Prometheus --------------------------------------


class Prometheus:
    """Debian's prometheus, scraping one target every second, on a free port."""

    def __init__(self, directory: Path, target: str) -> None:
        self.port = free_port()
        directory.mkdir()
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: takeover\n    metrics_path: /metrics\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.process = subprocess.Popen(
            [prometheus_path(), f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.log = OutputLines(self.process.stderr)

    def query(self, expression: str) -> float | None:
        """The one value of an instant query, or None while it has none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, expected: float) -> None:
        found: list[float | None] = []

        def check() -> bool:
            found.append(self.query(expression))
            return found[-1] == expected

        try:
            eventually(check, timeout=60)
        except AssertionError:
            raise AssertionError(
                f"{expression}: {found[-5:]} (wanted {expected})\n{self.log.output[-2000:]}"
            ) from None

    def stop(self) -> None:
        stop_process(self.process)


def prometheus_path() -> str:
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(path).exists():
        raise RuntimeError("no prometheus: Debian's package prometheus (.ci/run installs it)")
    return path


def test_prometheus_sums_four_gunicorn_workers(tmp_path: Path) -> None:
    prometheus_path()
    redis = RedisServer(tmp_path)
    redis.start()
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "TAKEOVER_HUB": redis.url, "HUB_CHECK": "0.5"}
    prometheus = None
    try:
        with gunicorn(4, env) as server:
            clients = [server.ws("?room=lobby") for _ in range(40)]
            pids = {int(server.get("/pid")) for _ in range(40)}
            assert len(pids) >= 2, "the kernel spread nothing over the workers"
            prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{server.port}")
            prometheus.wait_for("sum(takeover_connections_open)", 40)
            prometheus.wait_for("takeover_hub_healthy", 1)
            published = urllib.request.Request(server.url("/publish?room=lobby"), data=b"hi", method="POST")
            with urllib.request.urlopen(published, timeout=10):
                pass
            assert all(client.recv(timeout=10) == "hi" for client in clients)
            prometheus.wait_for("sum(takeover_hub_deliveries_total)", 40)
            # One observation per message per worker (the histogram is summed over them).
            prometheus.wait_for("clamp_max(takeover_hub_delivery_lag_seconds_count, 1)", 1)
            prometheus.wait_for('clamp_max(takeover_hub_delivery_lag_seconds_bucket{le="+Inf"}, 1)', 1)
            for client in clients[:10]:
                client.close(code=4001)
            prometheus.wait_for('sum(takeover_closes_total{code="4001"})', 10)
            prometheus.wait_for("sum(takeover_connections_open)", 30)
            redis.kill()
            prometheus.wait_for("takeover_hub_healthy", 0)
            redis.start()
            prometheus.wait_for("takeover_hub_healthy", 1)
    finally:
        if prometheus is not None:
            prometheus.stop()
        redis.kill()


def test_a_worker_that_dies_leaves_the_open_count(tmp_path: Path) -> None:
    """Its live gauge goes with it (prometheus_client's ``livesum``); its counters stay in the sums.

    With ``--preload`` the app (and takeover.metrics) is imported once, before the fork: each
    worker must still copy its own figures from its start, whether or not it is scraped.
    """
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    with gunicorn(2, {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}, "--preload") as server:
        for _ in range(12):
            server.ws()

        counts = eventually(lambda: open_by_process(multiproc, 12))
        assert value(server.metrics(), "takeover_connections_open") == 12
        victim = max(counts, key=lambda pid: counts[pid])
        os.kill(victim, 9)
        eventually(lambda: value(server.metrics(), "takeover_connections_open") == 12 - counts[victim])
        assert value(server.metrics(), "takeover_connections_total") == 12


# -- takeover serve --metrics-bind --------------------------------------------------


def test_takeover_serve_metrics_bind_serves_metrics_and_status_on_their_own_port() -> None:
    command = [
        sys.executable, "-m", "takeover", "serve", "tests.metrics.apps.metrics_app:flask_app",
        "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    output = OutputLines(process.stdout)
    try:
        metrics = output.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", WAIT)
        serving = output.wait_for(r"ws://127\.0\.0\.1:(\d+)/", WAIT)
        assert metrics and serving, output.output
        server = Gunicorn(process, output, int(serving.group(1)), contextlib.ExitStack())
        scraped = Gunicorn(process, output, int(metrics.group(1)), contextlib.ExitStack())
        with server.clients:
            server.ws()
            server.ws()

            def two_open() -> Any:
                samples = scraped.metrics()
                return samples if value(samples, "takeover_connections_open") == 2 else None

            samples = eventually(two_open)
            assert value(samples, "takeover_connections_total") == 2
            status = json.loads(scraped.get("/status?format=json"))
            assert status["total"]["connections_open"] == 2
        with pytest.raises(urllib.error.HTTPError) as missing:
            scraped.get("/elsewhere")
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError):  # the application's port does not serve them
            server.get("/metrics")
    finally:
        stop_process(process)


def test_a_metrics_bind_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "takeover", "serve", "tests.metrics.apps.metrics_app:flask_app",
             "--bind", "127.0.0.1:0", "--metrics-bind", f"127.0.0.1:{port}"],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
    assert result.returncode == 2, result
    assert f"cannot listen on 127.0.0.1:{port} for --metrics-bind: address already in use" in result.stderr


def test_uwsgi_processes_are_summed_too(tmp_path: Path) -> None:
    """The README's uWSGI line: four processes with threads, the app loaded before the fork."""
    from tests.uwsgi_nginx import uwsgi_command

    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    port = free_port()
    command = uwsgi_command(
        "--http-socket", port, "--master", "--processes", "4", "--threads", "8", module=APP
    )
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc), PYTHONUNBUFFERED="1"),
    )
    output = OutputLines(process.stdout)
    try:
        assert output.wait_output(lambda text: text.count("spawned uWSGI worker") >= 4, WAIT), output.output
        with contextlib.ExitStack() as clients:
            server = Gunicorn(process, output, port, clients)
            eventually(lambda: server.get("/pid"))
            for _ in range(20):
                server.ws()
            pids = {int(server.get("/pid")) for _ in range(20)}

            # Every worker copies its own figures, scraped or not.
            by_process = eventually(lambda: open_by_process(multiproc, 20))
            eventually(lambda: value(server.metrics(), "takeover_connections_open") == 20)
            assert len(pids | {pid for pid, count in by_process.items() if count}) >= 2
    finally:
        stop_process(process)
