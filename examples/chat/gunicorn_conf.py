"""gunicorn's ``--config`` for the chat in ``make demo-cluster``: the app's log lines, with the worker's pid.

gunicorn sets up its own loggers only. Each worker sends the rest at INFO to
stderr, as ``takeover serve`` does: the chat's joins and leaves, the hub's
warnings (Redis lost, messages lost) and takeover's access log.
"""

from __future__ import annotations

import logging
from typing import Any


def post_worker_init(worker: Any) -> None:
    if not logging.root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s"
        )


#: No control socket (gunicorn 27's, in ~/.gunicorn/): a second cluster, or the test's, would take it over.
control_socket_disable = True
