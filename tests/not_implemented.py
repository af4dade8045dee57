"""What a server without access to the connection (waitress, mod_wsgi) must answer an upgrade.

takeover answers ``501 Not Implemented`` with a one-line plain-text body that names
the server and the servers that work, and logs one WARNING per server per process.
Used by tests/servers/test_unsupported.py and tests/servers/test_install_lines.py.
"""

from __future__ import annotations

from takeover.adapters import SUPPORTED_SERVERS
from tests.clients import RawClient, handshake_request

STATUS_LINE = "HTTP/1.1 501 Not Implemented"
CONTENT_TYPE = "text/plain; charset=utf-8"


def check_501_body(body: bytes, server: str) -> str:
    """``body`` is one line that names ``server`` and the supported servers; returns it, decoded."""
    text = body.decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 1, f"not one line: {text!r}"
    assert text.startswith("501 Not Implemented: "), text
    assert server in text, f"does not name {server}: {text!r}"
    assert SUPPORTED_SERVERS in text, f"does not name the servers that work: {text!r}"
    return text


def check_upgrade_is_refused(port: int, server: str, host: str = "127.0.0.1") -> str:
    """One upgrade of ``/ws`` on a new connection: the exact 501 answer. Returns the body."""
    client = RawClient(port, host, timeout=10)
    try:
        client.send(handshake_request("/ws"))
        status, headers, body = client.read_response()
    finally:
        client.close()
    assert client.status_line == STATUS_LINE, (client.status_line, headers, body)
    assert status == 501
    assert headers.get("content-type") == CONTENT_TYPE, headers
    assert headers.get("content-length") == str(len(body)), (headers, body)
    assert "sec-websocket-accept" not in headers and "upgrade" not in headers, headers
    return check_501_body(body, server)


def check_one_warning(output: str, server: str) -> None:
    """``output`` (a server's log) has one WARNING line, about the 501 on ``server``, and no traceback."""
    warnings = [line for line in output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, f"{len(warnings)} WARNING lines, not one:\n{output}"
    assert "501 Not Implemented" in warnings[0] and server in warnings[0], warnings[0]
    assert "Traceback" not in output, output
