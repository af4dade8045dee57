"""``rediss://``: the hub and ``takeover.publish`` over real TLS, with a password and a database number.

A redis-server with a TLS port only and ``requirepass``, its certificate from
a CA made by trustme, which the URL names with ``ssl_ca_certs``.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from takeover import Hub, publish
from tests.certs import make_certs
from tests.hub.cluster import eventually
from tests.redis_server import HOST, RedisServer


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    directory = tmp_path_factory.mktemp("redis-tls")
    ca_file, cert_file, key_file = make_certs(directory)
    probe = ssl.create_default_context(cafile=str(ca_file))
    server = RedisServer(directory, tls=probe, args=(
        "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no", "--requirepass", "s3cret",
    ))
    server.start()
    yield server, ca_file
    server.kill()


def test_the_hub_and_publish_work_over_tls_with_a_password_and_a_database(
    tls_redis: tuple[RedisServer, Path],
) -> None:
    server, ca_file = tls_redis
    url = f"rediss://:s3cret@{HOST}:{server.port}/3?ssl_ca_certs={ca_file}"
    hub = Hub(url, health_check_interval=0.5)
    try:
        eventually(lambda: hub.healthy or None)
        mine = hub.publish("secure", "from the hub")
        theirs = publish(url, "secure", b"from redis-py")
        assert mine.remote and theirs.remote
        assert theirs.offset == mine.offset + 1  # type: ignore[operator]
        assert [(m.offset, m.data) for m in hub.history("secure")] == [
            (mine.offset, "from the hub"), (theirs.offset, b"from redis-py"),
        ]
    finally:
        hub.close()
    assert publish(url.replace("/3?", "/4?"), "secure", "x").offset != theirs.offset + 1  # type: ignore[operator]


@pytest.mark.parametrize("problem", ["wrong password", "untrusted certificate"])
def test_a_hub_that_cannot_log_in_stays_unhealthy_and_publishes_locally(
    tls_redis: tuple[RedisServer, Path], problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, ca_file = tls_redis
    if problem == "wrong password":
        url = f"rediss://:wrong@{HOST}:{server.port}/0?ssl_ca_certs={ca_file}"
    else:
        url = f"rediss://:s3cret@{HOST}:{server.port}/0"  # the system's CAs do not know trustme's
    hub = Hub(url, health_check_interval=0.5, timeout=0.5)
    try:
        assert hub.publish("secure", "only here").remote is False
        assert hub.healthy is False
        expected = "refused AUTH" if problem == "wrong password" else "CERTIFICATE_VERIFY_FAILED"
        eventually(lambda: any(expected in record.getMessage() for record in caplog.records) or None)
    finally:
        hub.close()
