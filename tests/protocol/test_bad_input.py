"""The reliability issue's bad frames (tests/bad_frames.py) fed to the sans-I/O core, bytes only.

tests/servers/test_bad_input.py sends the same bytes to a running server and
expects the same close codes; here the core must fail the connection from those
bytes alone (most from the header, before any payload), after a valid message,
with the close frame that carries the code queued for the peer.
"""

from __future__ import annotations

import pytest

from takeover.protocol.connection import Connection, Failure, Message, State
from takeover.protocol.frames import OP_CLOSE, OP_TEXT
from tests.bad_frames import VIOLATIONS
from tests.frames import client_frame, server_frames


@pytest.mark.parametrize(
    ("data", "code"), [(data, code) for _, data, code in VIOLATIONS], ids=[name for name, _, _ in VIOLATIONS]
)
def test_frame_violations_fail_the_connection(data: bytes, code: int) -> None:
    conn = Connection()
    assert conn.receive_data(client_frame(OP_TEXT, b"before")) == [Message("before")]
    assert conn.data_to_send() == b""
    events = conn.receive_data(data)
    assert events and isinstance(events[-1], Failure), events
    assert events[-1].code == code
    assert all(not isinstance(event, Failure | Message) for event in events[:-1]), events
    assert conn.state is State.CLOSED
    frames = server_frames(conn.data_to_send())
    assert frames[-1][:2] == (OP_CLOSE, True)
    assert int.from_bytes(frames[-1][2][:2], "big") == code
