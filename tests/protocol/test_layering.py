"""The sans-I/O core stands alone: ``takeover.protocol`` imports nothing above itself.

Each module of ``takeover.protocol`` is imported in a fresh interpreter, which
must then hold no ``takeover`` module outside ``takeover.protocol`` (the
``takeover`` package itself aside: its ``__init__`` imports names lazily) and
no I/O library: neither gevent nor greenlet, werkzeug or socket. (This was
test_websocket_api.py's check of two modules, here for all of them.)
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import takeover.protocol

MODULES = sorted(
    f"takeover.protocol.{info.name}" for info in pkgutil.iter_modules(takeover.protocol.__path__)
)
IO_LIBRARIES = ("gevent", "greenlet", "werkzeug", "socket")


def imported_by(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_every_module_is_checked() -> None:
    for name in ("connection", "deflate", "errors", "frames", "handshake", "mask", "origin"):
        assert f"takeover.protocol.{name}" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_the_protocol_core_imports_nothing_above_itself(module: str) -> None:
    modules = imported_by(module)
    assert module in modules
    above = [m for m in modules if m.startswith("takeover.") and not m.startswith("takeover.protocol")]
    assert above == [], f"{module} imports {above}"


@pytest.mark.parametrize("module", MODULES)
def test_the_protocol_core_imports_no_io_library(module: str) -> None:
    modules = imported_by(module)
    io = [m for m in modules if m.split(".")[0] in IO_LIBRARIES]
    assert io == [], f"{module} imports {io}"


def test_the_public_errors_are_the_cores_classes() -> None:
    import takeover.errors
    import takeover.protocol.errors

    for name in ("HandshakeError", "InvalidStateError", "ProtocolViolation"):
        assert getattr(takeover.errors, name) is getattr(takeover.protocol.errors, name)
