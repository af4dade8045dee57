"""Where things are, for tests at any depth under tests/ (never relative to a test's own file)."""

from __future__ import annotations

from pathlib import Path

#: The repository: every server process runs with it as its working directory.
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: Node's ``ws`` client of the interop tests (``make tests/node/node_modules/.installed``).
NODE_DIR = ROOT / "tests" / "node"
#: Scripts the servers tests run as processes (a firehose, gevent-websocket apps).
APPS = ROOT / "tests" / "servers" / "apps"
