"""``make fuzz``: run an atheris (libFuzzer) session on each core entry point.

    python -m fuzz.run [frames|handshake] [-max_total_time=60 ...]

New inputs that reach new code go to fuzz/corpus/<target>/; a crash is saved
under fuzz/crashes/ and, once fixed, stays there: tests/protocol/test_fuzz_corpus.py
replays every file of both directories in `make test`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "frames"
    extra = [arg for arg in sys.argv[1:] if arg.startswith("-")]
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    argv = [sys.argv[0], str(corpus), f"-artifact_prefix={crashes}/{target}-", *extra]
    atheris.Setup(argv, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
