"""uWSGI and nginx as the tests run them: the command lines, nginx's configuration, finding both.

``uwsgi`` is the test extra's (``pip install uwsgi`` builds it from source);
``nginx`` is Debian's (``apt-get install nginx-light``); ``.ci/run`` installs
what is missing. Tests skip, saying which, only when one cannot be found.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT

HOST = "127.0.0.1"
#: Debian's nginx-light, nginx and nginx-full all install these.
NGINX_UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")

# What /etc/nginx/uwsgi_params passes (the environ uWSGI builds from it), for an nginx without one.
UWSGI_PARAMS = """\
uwsgi_param QUERY_STRING $query_string;
uwsgi_param REQUEST_METHOD $request_method;
uwsgi_param CONTENT_TYPE $content_type;
uwsgi_param CONTENT_LENGTH $content_length;
uwsgi_param REQUEST_URI $request_uri;
uwsgi_param PATH_INFO $document_uri;
uwsgi_param DOCUMENT_ROOT $document_root;
uwsgi_param SERVER_PROTOCOL $server_protocol;
uwsgi_param REQUEST_SCHEME $scheme;
uwsgi_param HTTPS $https if_not_empty;
uwsgi_param REMOTE_ADDR $remote_addr;
uwsgi_param REMOTE_PORT $remote_port;
uwsgi_param SERVER_PORT $server_port;
uwsgi_param SERVER_NAME $server_name;
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    uwsgi_temp_path {tmp}/uwsgi;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {host}:{port};
        location / {{
            include {params};
            uwsgi_pass {host}:{upstream};
            # A WebSocket may be quiet for long: the tunnel's timeouts are these.
            uwsgi_read_timeout 3600s;
            uwsgi_send_timeout 3600s;
        }}
    }}
}}
"""



def uwsgi_binary() -> str:
    """The ``uwsgi`` next to this Python (the venv's), else on PATH; skips if there is none."""
    beside = Path(sys.executable).parent / "uwsgi"
    found = str(beside) if beside.exists() else shutil.which("uwsgi")
    if found is None:
        pytest.skip("uwsgi not installed (pip install uwsgi: needs gcc and the Python headers)")
    return found


def nginx_binary() -> str:
    """nginx from PATH or Debian's /usr/sbin; skips if there is none."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    return found


def uwsgi_command(
    socket_option: str,
    port: int,
    *options: str,
    module: str = "examples.flask_echo:app",
    address_suffix: str = "",
) -> list[str]:
    """uWSGI serving ``module`` from the repository, in this venv, on ``socket_option HOST:port``.

    ``address_suffix`` follows the address (``,cert,key`` for ``--https-socket``).
    ``--home`` is the venv (uWSGI embeds the Python it was built with, not the
    venv's packages); ``--die-on-term`` makes SIGTERM stop it as SIGINT does
    (uWSGI 2.0 reloads on SIGTERM otherwise).
    """
    command = [uwsgi_binary(), socket_option, f"{HOST}:{port}{address_suffix}"]
    command += ["--module", module, "--chdir", str(ROOT)]
    if sys.prefix != sys.base_prefix:
        command += ["--home", sys.prefix]
    return [*command, "--die-on-term", "--need-app", *options]


def write_nginx_conf(directory: Path, port: int, upstream: int) -> Path:
    """nginx's configuration in ``directory``: ``HOST:port`` passed to uWSGI's ``--socket HOST:upstream``."""
    params = NGINX_UWSGI_PARAMS
    if not params.exists():
        params = directory / "uwsgi_params"
        params.write_text(UWSGI_PARAMS)
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=directory, host=HOST, port=port, upstream=upstream, params=params))
    return conf


def nginx_command(conf: Path) -> list[str]:
    # -p: the prefix for relative paths; -e (nginx >= 1.19.5) keeps the default error log out of /var/log.
    return [nginx_binary(), "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")]
