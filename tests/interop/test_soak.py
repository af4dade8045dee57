"""``make soak``'s own checks, on a small scale: a clean server passes, a leaking one fails.

The soak (5,000 connections for two rounds of 60 s) is not part of ``make
test``; this runs the same driver with 200 connections for 2 s a round, once
against ``soak/server.py`` and once with its ``--leak`` switch, which keeps
every WebSocket and 256 KiB per connection. The driver must print PASS and
exit 0 for the first, and print FAIL and exit 1 for the second.

Its fragment flood (``--flood-only``, 300,000 fragments: no Node needed) the
same way: a clean server passes, and one run with ``--leak-fragments``, which
keeps an object per fragment as takeover did before the flood fix, fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.paths import ROOT

WS = ROOT / "tests" / "node" / "node_modules" / "ws"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not WS.exists(), reason="needs Node.js and tests/node's ws"
)


def soak(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soak.run", "--connections", "200", "--seconds", "2", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@needs_node
def test_a_clean_server_passes() -> None:
    result = soak()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "soak: PASS" in result.stdout
    assert "errors: 0 (first: None), lost: 0, reordered: 0" in result.stdout


@needs_node
def test_a_leaking_server_fails() -> None:
    result = soak("--leak")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "soak: FAIL: RSS back" in result.stdout


def flood(*args: str) -> subprocess.CompletedProcess[str]:
    return soak("--flood-only", "--flood-fragments", "300000", *args)


def test_a_clean_server_passes_the_fragment_flood() -> None:
    result = flood()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "binary fragment flood: " in result.stdout and "text fragment flood: " in result.stdout
    assert "soak: PASS" in result.stdout


def test_a_server_keeping_an_object_per_fragment_fails_the_flood() -> None:
    result = flood("--leak-fragments")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "soak: FAIL: binary fragment flood RSS, text fragment flood RSS" in result.stdout
