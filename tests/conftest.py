"""Fixtures of more than one layer: servers on 127.0.0.1, as a process or in this one.

pytest's rootdir conftest: also where ``--autobahn-all`` is declared. Helpers are
modules of their own, imported as ``from tests.<module> import ...`` from any layer:
frames.py (frames as bytes: the one client frame builder), bad_frames.py (malformed
frames and their close codes), clients.py (raw socket clients), processes.py (servers
run as processes), chat_server.py (examples/chat as a process), paths.py (where the
repository, examples/, tests/node/ and tests/servers/apps/ are), not_implemented.py (the
501 that servers without access to the connection must answer). Each layer's
conftest.py holds the fixtures of that layer only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.paths import EXAMPLES
from tests.processes import ServerProcess, start_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--autobahn-all",
        action="store_true",
        default=False,
        help="run Autobahn sections 1-10 (adds the section 9 performance cases), all of 12 and 13 "
        "(permessage-deflate), and 1-10 again with compression on",
    )


@pytest.fixture(scope="module")
def echo_server() -> Iterator[ServerProcess]:
    """``examples/echo.py`` with a short idle timeout disabled (0) for plain echo tests."""
    server = start_server(EXAMPLES / "echo.py", "--idle-timeout", "0")
    yield server
    server.stop()


# -- in-process servers (gevent) ----------------------------------------------


@pytest.fixture
def server() -> Iterator[Any]:
    """takeover's server in this process, on an ephemeral port."""
    from takeover import create_server

    srv = create_server()
    srv.listen(0)
    yield srv
    srv.close()


@pytest.fixture
def make_server() -> Iterator[Any]:
    """``make(app=None, **options)``: servers in this process, all closed afterwards."""
    from takeover import create_server

    servers: list[Any] = []

    def make(app: Any = None, **options: Any) -> Any:
        server = create_server(app, **options)
        server.listen(0)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close(timeout=1)
