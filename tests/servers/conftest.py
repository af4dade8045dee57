"""Fixtures of the servers tests only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients import RawClient
from tests.processes import ServerProcess


@pytest.fixture
def raw_client(echo_server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(echo_server.port)
    yield client
    client.close()
