"""Replay the fuzzing corpus and every saved crash through the core's entry points.

``make fuzz`` grows fuzz/corpus/ and saves crashes to fuzz/crashes/; each
file there must run through its target without an exception, so a crash once
found and fixed stays fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS
from tests.paths import ROOT

FILES = sorted(
    [(path.parent.name, path) for path in (ROOT / "fuzz" / "corpus").glob("*/*") if path.is_file()]
    + [(path.name.partition("-")[0], path) for path in (ROOT / "fuzz" / "crashes").glob("*-*")]
)


@pytest.mark.parametrize(("target", "path"), FILES, ids=[f"{t}/{p.name}" for t, p in FILES])
def test_input_runs_without_an_exception(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


def test_the_corpus_has_seeds_for_every_target() -> None:
    assert {target for target, _ in FILES} >= set(TARGETS)
