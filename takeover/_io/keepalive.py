"""Deno's ``idleTimeout`` for one session: a ping after half of it in silence, 1001 after all of it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from takeover._io.closing import Reason
from takeover.protocol.connection import State

if TYPE_CHECKING:
    from takeover._io.session import Session

__all__ = ["check"]


def check(session: Session) -> None:
    """Run when the session's idle timer fires: ping, close, or set the timer again.

    A session whose reading we paused (its ``receive()`` queue full, its
    listeners behind, a ``send()`` waiting) is not idle: its peer may be
    waiting for us.
    """
    idle = session.options.idle_timeout
    if session.ready_state is not State.OPEN or idle is None:
        return
    now = time.monotonic()
    half = idle / 2
    if session.paused:
        session._set_timer(half, session._on_idle_timer)
        return
    silence = now - session.last_activity
    if silence >= idle:
        session.close(Reason.IDLE_TIMEOUT)
    elif silence >= half:
        if session._ping_sent_at <= session.last_activity:
            session._ping_sent_at = now
            session.ping()
        session._set_timer(idle - silence, session._on_idle_timer)
    else:
        session._set_timer(half - silence, session._on_idle_timer)
