"""The layout rules of the I/O layer (docs/architecture.rst), checked on the source."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "takeover"


def test_importing_the_server_the_worker_websocket_and_upgrade_leaves_gevent_websocket_out() -> None:
    code = (
        "import sys\n"
        "import takeover.server, takeover.gunicorn, takeover.websocket, takeover.upgrade, takeover.cli\n"
        "from takeover import WebSocket, upgrade_websocket, create_server\n"
        "assert 'geventwebsocket' not in sys.modules\n"
        "import takeover.gunicorn as g\n"
        "assert g.LegacyWorker.__module__ == 'takeover.legacy.gunicorn'\n"
        "assert 'geventwebsocket' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def lines_outside_the_io_layer(pattern: re.Pattern[str], unless: re.Pattern[str] | None = None) -> list[str]:
    """The lines matching ``pattern`` (and not ``unless``) of modules other than websocket.py and _io/."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "websocket.py" or relative.startswith("_io/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and not (unless is not None and unless.search(line)):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    return offenders


def test_only_websocket_py_and_io_touch_a_websockets_private_attributes() -> None:
    private = re.compile(r"\b(?:ws|websocket|self\.websocket|self\.ws)\._[a-z]\w*")
    offenders = lines_outside_the_io_layer(private)
    assert not offenders, "\n".join(offenders)


def test_only_websocket_py_and_io_touch_a_websockets_session() -> None:
    """Adapters, the hub, legacy and Flask-Sock talk to a WebSocket through its public surface and
    the adapter seam (takeover._io.handover), never through ``ws.session`` (docs/architecture.rst)."""
    session = re.compile(r"\.session\b(?!_)")
    flask_session = re.compile(r"\b(?:flask|from flask import [^\n]*)\bsession\b")
    offenders = lines_outside_the_io_layer(session, unless=flask_session)
    assert not offenders, "\n".join(offenders)


def test_the_execution_model_is_one_loop_class() -> None:
    """One class for where a session lives (and a hub's home): no second loop, no thread runtime."""
    loops = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        for name in re.findall(r"^class (\w*(?:Loop|Home|Runtime)\w*)\b", text, re.M):
            loops.append(f"{path.relative_to(PACKAGE).as_posix()}:{name}")
    assert loops == ["_io/loop.py:Loop"], loops
    # The facade delegates to its session without asking where it runs.
    assert "in_loop" not in (PACKAGE / "websocket.py").read_text()


def test_modules_stay_small() -> None:
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines())
             for path in PACKAGE.rglob("*.py")}
    assert sizes["websocket.py"] <= 400
    assert {name: size for name, size in sizes.items() if size > 600} == {}
