"""takeover's loggers, and the one-WARNING-per-process rule for deployment problems."""

from __future__ import annotations

import logging
import threading

__all__ = ["logger", "warn_once"]

logger = logging.getLogger("takeover")

_warned: set[str] = set()
_lock = threading.Lock()


def warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` at WARNING the first time ``key`` is seen in this process only.

    For what an operator must hear of once, not per request (a server that
    cannot hand a connection over, a WebSocket that holds a worker).
    """
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    logger.warning(message, *args)
