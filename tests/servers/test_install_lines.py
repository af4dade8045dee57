"""Every row of the README's servers table, installed in a fresh virtualenv and run as written.

README.md's "## Servers" table gives, per server, an ``install`` line
(``pip install ...``) and a ``run`` line, where ``app:app`` is the user's WSGI
module. For each row:

* a new virtualenv (``python -m venv``, no system site-packages; rows with the
  same install line share one) gets the install line, with ``takeover``
  replaced by this checkout (extras kept), then must have Flask, which app.py needs;
* app.py is the README's Flask example (under "## In a Flask (or any WSGI)
  view"), read at test time, plus a plain-text ``/`` if the example has none;
* the run line starts in app.py's directory with the venv's bin first on PATH
  and a free port in place of 8000;
* ``GET /`` is answered and a WebSocket echoes (the ``websockets`` client of
  this test's venv); on waitress each of two upgrades is answered 501 with a
  one-line body, the log has one WARNING and no traceback, and GET / still works;
* SIGTERM stops the server.

The hub's line (``pip install 'takeover[redis]'`` under its README heading) gets a
venv of its own too, where a ``Hub`` and ``takeover.publish`` talk to a real
redis-server.

Slow: pip builds takeover (and uWSGI, which needs gcc and the Python headers) once
per distinct install line; pip's cache makes reruns faster.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.not_implemented import check_one_warning, check_upgrade_is_refused
from tests.paths import ROOT
from tests.processes import OutputLines, free_port

README = ROOT / "README.md"
SERVERS_HEADING = "## Servers"
FLASK_HEADING = "## In a Flask (or any WSGI) view"
HOST = "127.0.0.1"
README_PORT = "8000"
PIP_TIMEOUT = 900.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
INDEX_TEXT = "app.py from the README, served\n"
#: Added to the README's example when it has no ``/`` of its own.
#: Added to every app: each process that imports it leaves a file (the test waits for all).
READY_MARKER = '''

import os as _os, pathlib as _pathlib
_pathlib.Path(__file__).with_name(f"ready-{_os.getpid()}").touch()
'''
INDEX_ROUTE = f'''

@app.route("/")
def index():
    """Not in the README's example: a plain-text page for the test's GET /."""
    return {INDEX_TEXT!r}, 200, {{"Content-Type": "text/plain; charset=utf-8"}}
'''

pytestmark = pytest.mark.timeout(PIP_TIMEOUT + 300)


# -- the README ---------------------------------------------------------------------


class ReadmeError(Exception):
    """README.md lacks what this test reads from it."""


def section(text: str, heading: str) -> str:
    """The lines under ``heading`` up to the next ``## `` heading (outside code fences)."""
    lines = text.splitlines()
    if heading not in lines:
        raise ReadmeError(f"README.md has no {heading!r} heading")
    body: list[str] = []
    fenced = False
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("## ") and not fenced:
            break
        body.append(line)
    return "\n".join(body)


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def code(cell: str) -> str | None:
    """The text of a cell that is one ``code span``, else None."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match.group(1).strip() if match else None


def slug(text: str) -> str:
    text = text.replace("`", "").replace("'", "").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


@dataclass(frozen=True)
class Row:
    """One row of the servers table; ``problem`` says what makes it unusable, if anything."""

    server: str
    install: str
    run: str
    problem: str | None = None

    @property
    def is_waitress(self) -> bool:
        return shlex.split(self.run)[0].startswith("waitress")


def servers_table(text: str) -> list[Row]:
    """The rows of the table with server, install and run columns under "## Servers"."""
    lines = section(text, SERVERS_HEADING).splitlines()
    headers = [
        index for index, line in enumerate(lines)
        if line.startswith("|") and {"server", "install", "run"} <= {name.lower() for name in cells(line)}
    ]
    if not headers:
        raise ReadmeError(f"no table with server, install and run columns under {SERVERS_HEADING!r}")
    names = [name.lower() for name in cells(lines[headers[0]])]
    columns = {name: names.index(name) for name in ("server", "install", "run")}
    rows: list[Row] = []
    for line in lines[headers[0] + 2 :]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        row = cells(line)
        if len(row) != len(names):
            raise ReadmeError(f"servers table: {len(row)} cells, not {len(names)}: {line!r}")
        server, install, run = (row[columns[name]] for name in ("server", "install", "run"))
        pip, command = code(install), code(run)
        problem = None
        if pip is None or not pip.startswith("pip install "):
            problem = f"the install column is not a `pip install ...` line: {install!r}"
        elif command is None:
            problem = f"the run column is not a command line in backticks: {run!r}"
        elif len(re.findall(rf"\b{README_PORT}\b", command)) != 1:
            problem = f"the run line does not name port {README_PORT} exactly once: {command!r}"
        rows.append(Row(server, pip or install, command or run, problem))
    if not rows:
        raise ReadmeError(f"the servers table under {SERVERS_HEADING!r} has no rows")
    return rows


def flask_example(text: str) -> str:
    """app.py: the first ```python block under the Flask heading, plus ``/`` if it has none."""
    match = re.search(r"^```python\n(.*?)^```", section(text, FLASK_HEADING), re.S | re.M)
    if match is None:
        raise ReadmeError(f"no ```python block under {FLASK_HEADING!r}")
    source = match.group(1)
    if "upgrade_websocket" not in source or not re.search(r"""route\(\s*["']/ws["']""", source):
        raise ReadmeError(f"the example under {FLASK_HEADING!r} has no /ws route that upgrades")
    if re.search(r"""\.(?:route|get)\(\s*["']/["']""", source):
        return source
    return source + INDEX_ROUTE


def read_rows() -> tuple[list[Row], str | None]:
    try:
        rows = servers_table(README.read_text(encoding="utf-8"))
    except (OSError, ReadmeError) as error:
        return [], str(error)
    seen: set[str] = set()
    for row in rows:
        if slug(row.server) in seen:
            return [], f"two rows of the servers table have the server {row.server!r}"
        seen.add(slug(row.server))
    return rows, None


ROWS, TABLE_ERROR = read_rows()
# Without a table the test still runs once, and fails: it must not pass on an empty table.
PARAMS = [pytest.param(row, id=slug(row.server)) for row in ROWS] or [
    pytest.param(None, id="no-servers-table")
]


# -- virtualenvs --------------------------------------------------------------------


def pip_arguments(line: str) -> list[str]:
    """``pip install ...``'s arguments after ``install``, with ``takeover`` as this checkout."""
    words = shlex.split(line)
    assert words[:2] == ["pip", "install"], line
    arguments: list[str] = []
    for word in words[2:]:
        match = re.fullmatch(r"takeover(\[[^\]]*\])?", word)
        arguments.append(f"{ROOT}{match.group(1) or ''}" if match else word)
    if arguments == words[2:]:
        pytest.fail(f"`{line}` does not install takeover")
    return arguments


def clean_env(**changes: str) -> dict[str, str]:
    """This process's environment without what would leak its own venv into another."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(changes)
    return env


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def need_c_compiler(line: str) -> None:
    """uWSGI builds from source: fail (not skip) without gcc or the Python headers."""
    if "uwsgi" not in line.lower():
        return
    missing = []
    if shutil.which("gcc") is None:
        missing.append("gcc")
    include = sysconfig.get_config_var("INCLUDEPY")
    if not include or not (Path(include) / "Python.h").exists():
        missing.append(f"Python.h (looked in {include})")
    if missing:
        pytest.fail(
            f"`{line}` builds uWSGI from source, and {' and '.join(missing)} is missing: install "
            "build-essential and python3-dev (apt-get install build-essential python3-dev)",
            pytrace=False,
        )


@dataclass
class Venv:
    """A virtualenv with one install line in it."""

    path: Path
    line: str
    seconds: float = 0.0
    has_flask: bool = False

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    def env(self, **changes: str) -> dict[str, str]:
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return clean_env(PATH=path, VIRTUAL_ENV=str(self.path), **changes)

    def executable(self, name: str) -> str | None:
        return shutil.which(name, path=str(self.bin))


def make_venv(line: str, path: Path) -> Venv | str:
    """A fresh venv at ``path`` with ``line`` installed; or why it could not be made."""
    started = time.monotonic()
    venv = Venv(path, line)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(path)],
            env=clean_env(), capture_output=True, text=True, timeout=120, check=True,
        )
        pip = venv.executable("pip")
        assert pip is not None, f"no pip in {venv.bin}"
        installed = subprocess.run(
            [pip, "install", *pip_arguments(line)], cwd=path, env=venv.env(),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT,
        )
    except subprocess.CalledProcessError as error:
        return f"python -m venv failed:\n{error.stdout}{error.stderr}"
    except subprocess.TimeoutExpired as error:
        return f"`{line}` did not finish within {error.timeout:g} s"
    if installed.returncode != 0:
        return f"`{line}` failed (exit {installed.returncode}):\n{tail(installed.stdout + installed.stderr)}"
    # The app is the user's existing Flask app: Flask is its own requirement, installed
    # after the README's line (which must not need it, nor break it).
    app_requirement = subprocess.run(
        [pip, "install", "flask"], cwd=path, env=venv.env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PIP_TIMEOUT,
    )
    if app_requirement.returncode != 0:
        output = app_requirement.stdout + app_requirement.stderr
        return f"the app's own `pip install flask` failed:\n{tail(output)}"
    shown = subprocess.run(
        [str(venv.bin / "python"), "-m", "pip", "show", "--quiet", "flask"],
        env=venv.env(), capture_output=True, text=True, timeout=120,
    )
    venv.has_flask = shown.returncode == 0
    venv.seconds = time.monotonic() - started
    return venv


@pytest.fixture(scope="module")
def venv_for(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Venv]]:
    """``venv_for(line)``: the module's venv for that install line, made on first use."""
    made: dict[str, Venv | str] = {}

    def get(line: str) -> Venv:
        if line not in made:
            need_c_compiler(line)
            made[line] = make_venv(line, tmp_path_factory.mktemp("venv"))
        venv = made[line]
        if isinstance(venv, str):
            pytest.fail(venv, pytrace=False)
        return venv

    yield get
    for line, venv in made.items():
        if isinstance(venv, Venv):
            print(f"\nvenv for `{line}`: {venv.seconds:.0f} s")


# -- the server ---------------------------------------------------------------------



@dataclass
class Server:
    """A run line started in its own session, so that what it forks can be killed with it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int

    def __post_init__(self) -> None:
        self.out = OutputLines(self.process.stdout)

    @property
    def output(self) -> str:
        return self.out.output

    def fail(self, why: str) -> None:
        self.kill()
        pytest.fail(f"{self.name}: {why}\n--- server output ---\n{self.output}", pytrace=False)

    def wait_connectable(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return
            except OSError:
                pass
            try:  # paces the retries and notices an early exit
                self.process.wait(0.1)
            except subprocess.TimeoutExpired:
                continue
            self.fail(f"exited with {self.process.returncode} before accepting connections")
        self.fail(f"port {self.port} not connectable within {START_TIMEOUT:g} s")

    def terminate(self) -> int | None:
        """SIGTERM; the exit status, or None if it was still running after STOP_TIMEOUT."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None
        self.out.join(STOP_TIMEOUT)  # workers may hold the pipe a moment longer
        return status

    def kill(self) -> None:
        """SIGKILL to the server's session (its workers too), if anything of it is left."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.out.join(10)


def start(row: Row, venv: Venv, directory: Path) -> Server:
    port = free_port()
    words = [re.sub(rf"\b{README_PORT}\b", str(port), word) for word in shlex.split(row.run)]
    program = venv.executable(words[0])
    if program is None:
        pytest.fail(f"{row.server}: `{words[0]}` is not in the venv after `{row.install}`", pytrace=False)
    home = directory / "home"  # gunicorn's control socket and the like stay in the test's directory
    home.mkdir()
    env = venv.env(PYTHONUNBUFFERED="1", HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    process = subprocess.Popen(
        [program, *words[1:]], cwd=directory, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    return Server(row.server, process, port)


def get_index(server: Server, custom_index: bool) -> None:
    connection = http.client.HTTPConnection(HOST, server.port, timeout=15)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
    except OSError as error:
        server.fail(f"GET / failed: {error!r}")
    finally:
        connection.close()
    if response.status != 200 or (not custom_index and body != INDEX_TEXT):
        server.fail(f"GET / answered {response.status} {response.reason}: {body[:300]!r}")


def app_processes(run: str) -> int:
    """How many processes of the run line import the app: gunicorn's -w (uWSGI loads it
    in its master, then forks)."""
    words = run.split()
    if words[0] != "gunicorn":
        return 1
    for flag in ("-w", "--workers"):
        if flag in words:
            return int(words[words.index(flag) + 1])
    return 1


def wait_for_app_processes(server: Server, directory: Path, count: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for _ in range(10_000):  # a file each process leaves: nothing to wait on but a look
        if len(list(directory.glob("ready-*"))) >= count:
            return
        if time.monotonic() > deadline or server.process.poll() is not None:
            break
        time.sleep(0.05)
    server.fail(f"{count} processes did not load the app (found {len(list(directory.glob('ready-*')))})")


def echo(server: Server) -> None:
    url = f"ws://{HOST}:{server.port}/ws"
    try:
        for _ in range(2):  # a second connection: the first one left the server serving
            with connect(url, open_timeout=15, close_timeout=10) as ws:
                ws.send("héllo from the install test")
                assert ws.recv(timeout=10) == "héllo from the install test"
                ws.send(b"\x00\xffbinary")
                assert ws.recv(timeout=10) == b"\x00\xffbinary"
    except Exception as error:
        server.fail(f"the WebSocket echo failed: {error!r}")


# -- the test -----------------------------------------------------------------------


@pytest.mark.parametrize("row", PARAMS)
def test_install_line_runs_the_readme_example(
    row: Row | None, venv_for: Callable[[str], Venv], tmp_path: Path
) -> None:
    if row is None:
        pytest.fail(f"README.md: {TABLE_ERROR}", pytrace=False)
    if row.problem:
        pytest.fail(f"README servers table, row {row.server!r}: {row.problem}", pytrace=False)
    source = flask_example(README.read_text(encoding="utf-8"))
    venv = venv_for(row.install)
    if not venv.has_flask:
        pytest.fail(
            f"README servers table, row {row.server!r}: Flask is missing from its venv after"
            " `pip install flask` (`pip show flask` finds nothing)",
            pytrace=False,
        )
    (tmp_path / "app.py").write_text(source + READY_MARKER, encoding="utf-8")
    server = start(row, venv, tmp_path)
    try:
        server.wait_connectable()
        get_index(server, custom_index=not source.endswith(INDEX_ROUTE))
        if row.is_waitress:
            try:
                first = check_upgrade_is_refused(server.port, "waitress")
                assert check_upgrade_is_refused(server.port, "waitress") == first
            except (AssertionError, OSError) as error:
                server.fail(f"the upgrade was not refused as it must be on waitress: {error}")
            get_index(server, custom_index=not source.endswith(INDEX_ROUTE))
        else:
            echo(server)
        if server.process.poll() is not None:
            server.fail(f"exited with {server.process.returncode} during the checks")
        # A worker signalled before it has set its own handlers loses the signal (gunicorn
        # forks with the master's): stop only once every worker process has loaded the app.
        wait_for_app_processes(server, tmp_path, app_processes(row.run))
        status = server.terminate()
        if status is None:
            server.fail(f"still running {STOP_TIMEOUT:g} s after SIGTERM")
        if status not in (0, -signal.SIGTERM):
            server.fail(f"exited with {status} after SIGTERM")
    finally:
        server.kill()
    output = server.output
    if row.is_waitress:
        try:
            check_one_warning(output, "waitress")
        except AssertionError as error:
            pytest.fail(f"{row.server}: {error}", pytrace=False)
    elif "Traceback" in output:
        pytest.fail(f"{row.server}: a traceback in the server's output:\n{output}", pytrace=False)


HUB_HEADING = "## Rooms across processes: `takeover.Hub`"
HUB_CHECK = """
import sys
import redis  # the extra's redis-py, which takeover.publish uses
from takeover import Hub, publish

url = sys.argv[1]
hub = Hub(url)
assert hub.publish("room", "from a hub").remote
assert publish(url, "room", b"from a plain process").remote
assert [m.data for m in hub.history("room")] == ["from a hub", b"from a plain process"]
hub.close()
import takeover  # the browser client the section names: package data of the installed package
assert "export class ResumingSocket" in takeover.client_js()
print("the hub works")
"""


def test_the_hubs_install_line_gives_the_hub_and_publish(
    venv_for: Callable[[str], Venv], tmp_path: Path
) -> None:
    """The README's `pip install 'takeover[redis]'` (under the hub's heading), against a real redis-server."""
    from tests.redis_server import RedisServer

    lines = re.findall(r"`(pip install [^`]+)`", section(README.read_text(encoding="utf-8"), HUB_HEADING))
    assert len(lines) == 1, f"README's hub section should name one pip line, not {lines}"
    venv = venv_for(lines[0])
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        result = subprocess.run(
            [str(venv.bin / "python"), "-c", HUB_CHECK, redis_server.url], cwd=tmp_path, env=venv.env(),
            capture_output=True, text=True, timeout=60,
        )
    finally:
        redis_server.kill()
    assert result.stdout.strip() == "the hub works", result.stdout + result.stderr


METRICS_HEADING = "## Metrics, a status page, access logs"
METRICS_CHECK = """
import json
import takeover.accesslog
import takeover.metrics

def call(app, query=""):
    answer = {}
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": query, "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "x"}
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
    assert answer["status"].startswith("200"), answer
    return body.decode()

assert "takeover_connections_open 0.0" in call(takeover.metrics.wsgi_app)
assert json.loads(call(takeover.metrics.status_app, "format=json"))["total"]["connections_open"] == 0
assert "<html" in call(takeover.metrics.status_app)
takeover.accesslog.JSONFormatter()
print("metrics work")
"""


def test_the_metrics_install_line_gives_metrics_and_the_status_page(venv_for: Callable[[str], Venv]) -> None:
    """The README's `pip install 'takeover[metrics]'` (under its heading): metrics and the page installed."""
    lines = re.findall(r"`(pip install [^`]+)`", section(README.read_text(encoding="utf-8"), METRICS_HEADING))
    assert len(lines) == 1, f"README's metrics section should name one pip line, not {lines}"
    venv = venv_for(lines[0])
    result = subprocess.run(
        [str(venv.bin / "python"), "-c", METRICS_CHECK], env=venv.env(), capture_output=True, text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "metrics work", result.stdout + result.stderr


def test_the_table_reader_fails_loudly() -> None:
    """No heading, no table, no rows: errors; a row without a pip line or port 8000: its problem."""
    table = "| server | install | run |\n|---|---|---|\n"
    with pytest.raises(ReadmeError, match="no '## Servers' heading"):
        servers_table("# takeover\n")
    with pytest.raises(ReadmeError, match="no table"):  # a table under another heading is not it
        elsewhere = f"## Other\n\n{table}| a | `pip install takeover` | `a 8000` |\n"
        servers_table(f"## Servers\n\nsome text\n\n{elsewhere}")
    with pytest.raises(ReadmeError, match="no rows"):
        servers_table(f"## Servers\n\n{table}\nafter the table\n")
    rows = servers_table(
        f"## Servers\n\n{table}"
        "| no code | pip install takeover | `a --port 8000` |\n"
        "| no pip | `uv add takeover` | `b --port 8000` |\n"
        "| no port | `pip install takeover` | `c app:app` |\n"
        "| fine | `pip install takeover gunicorn` | `gunicorn -b 127.0.0.1:8000 app:app` |\n"
    )
    assert [row.server for row in rows] == ["no code", "no pip", "no port", "fine"]
    assert all("pip install" in str(row.problem) for row in rows[:2]), rows
    assert "port 8000" in str(rows[2].problem) and rows[3].problem is None, rows
    assert pip_arguments(rows[3].install) == [str(ROOT), "gunicorn"]
    assert pip_arguments('pip install "takeover[gunicorn]" flask') == [f"{ROOT}[gunicorn]", "flask"]


GUIDE = ROOT / "docs" / "guides" / "servers.rst"


def test_the_guides_table_names_only_lines_this_test_runs() -> None:
    """docs/guides/servers.rst's table: its command lines are the README's, which run above."""
    text = GUIDE.read_text(encoding="utf-8")
    table = text[text.index(".. list-table::") :]
    table = table[: table.index("\n\n", table.index("* - server"))] if "\n\n" in table else table
    rows = table.split("   * - ")[2:]  # after the header row
    commands = [re.findall(r"``([^`]+)``", row.split("\n")[1])[0] for row in rows]
    assert len(commands) == len(ROWS) >= 8, commands
    assert set(commands) == {row.run for row in ROWS}
