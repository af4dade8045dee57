"""Start a bench server after saying which takeover it imports.

    python bench/servers/_launch.py SCRIPT [ARGS...]
    python bench/servers/_launch.py -m MODULE [ARGS...]

Runs the server as ``python SCRIPT ARGS`` or ``python -m MODULE ARGS`` would,
with the same ``sys.path[0]`` (the script's directory, or the working
directory for ``-m``), after printing one line to stdout first::

    bench-import: takeover=/path/to/takeover/__init__.py speedups=/path/to/_speedups...so

The harness (bench/loadgen.py) reads it before the server's ready line and
checks that the row imported the code it is meant to measure: the current
checkout, or the baseline's worktree (``python -m bench --baseline REV``).
``import takeover`` loads nothing but the package's ``__init__`` (its names are
imported on first use), so doing it here first changes nothing for the server:
every takeover server imports it before anything else anyway.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys

MARKER = "bench-import:"


def main() -> None:
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    module = None
    if args[0] == "-m":
        module = args[1]
        sys.argv = [module, *args[2:]]
        sys.path[0] = os.getcwd()
    else:
        sys.argv = list(args)
        sys.path[0] = os.path.dirname(os.path.abspath(args[0]))

    import takeover

    try:
        spec = importlib.util.find_spec("takeover.protocol._speedups")
    except ImportError:
        spec = None
    speedups = spec.origin if spec is not None and spec.origin else "none"
    print(f"{MARKER} takeover={takeover.__file__} speedups={speedups}", flush=True)
    if module is not None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
