"""Where the harness, its Node side and its results live, and the open-files limit it asks for."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "node"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
PY = sys.executable
NOFILE = 20000  # open files for the harness, the servers and the load generator
