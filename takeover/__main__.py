"""``python -m takeover``: the ``takeover`` command (see :mod:`takeover.cli`)."""

from takeover.cli import main

raise SystemExit(main())
