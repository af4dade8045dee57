"""``python -m takeover``, and the ``takeover`` command.

The serving process monkey-patches the standard library with gevent before
anything else is imported, as gunicorn's gevent worker does, so that blocking
code in the application (``time.sleep``, database drivers) yields to the other
connections instead of stopping the server.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``takeover`` command; return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"] and "--reload" not in args:
        from gevent import monkey

        monkey.patch_all()
    from takeover.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
