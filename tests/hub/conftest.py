"""Fixtures of the hub tests: a real redis-server per module, and a Redis Cluster where asked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters (tests/redis_cluster.py)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"), masters=3)
    cluster.start()
    yield cluster
    cluster.kill()
