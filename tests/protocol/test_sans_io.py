"""The protocol core is sans-I/O: importing it loads no socket, gevent nor Werkzeug."""

from __future__ import annotations

import subprocess
import sys


def test_the_protocol_core_imports_no_io_library() -> None:
    code = (
        "import sys, takeover.protocol.connection, takeover.protocol.handshake;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'werkzeug', 'socket'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
