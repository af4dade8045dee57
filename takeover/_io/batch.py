"""``Batch``: several messages to many WebSockets, written to each socket in one write.

The hub's subscriber reads what Redis sent; when the loop has fallen behind,
several messages are waiting in its buffer at once. Sent one by one, each
costs a ``send(2)`` per member; a batch frames each message once (as
:func:`takeover.broadcast` does) and, at :meth:`Batch.flush`, writes each
member's frames in one piece, in order, through the session's one send path.
Nothing is held back when the loop is idle: a batch holds only what was read
together, and is flushed before anything else runs.

A connection that compresses with context takeover (permessage-deflate's
default) has a compressor whose state must follow the order of the wire
(RFC 7692 §7.2.1): its frames are written at once, not batched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from takeover.protocol.frames import OP_BINARY, OP_TEXT, RSV1, encode_frame

if TYPE_CHECKING:
    from takeover._io.session import Session
    from takeover.websocket import WebSocket

__all__ = ["Batch", "encode_data", "frame_for"]


def frame_for(session: Session, opcode: int, payload: bytes, frames: dict[object, bytes]) -> bytes | None:
    """The frame of a message shared by every session that can take the same bytes, made once
    and kept in ``frames``: uncompressed, or compressed once per shared compressor setting
    (``server_no_context_takeover``). None for a session with a compressor of its own (context
    takeover), whose frame is made in the wire's order by :meth:`Session.write` itself."""
    deflate = session.deflate
    if deflate is None or len(payload) < deflate.threshold:
        frame = frames.get(None)
        if frame is None:
            frame = frames[None] = encode_frame(opcode, payload)
        return frame
    key = deflate.shared_key
    if key is None:
        return None
    frame = frames.get(key)
    if frame is None:
        frame = frames[key] = encode_frame(opcode, deflate.compress(payload), rsv=RSV1)
    return frame


def encode_data(data: str | bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """A message's opcode and payload: text as UTF-8, anything else as binary."""
    if isinstance(data, str):
        return OP_TEXT, data.encode("utf-8")
    return OP_BINARY, bytes(data)


class Batch:
    """Frames per session, in order; :meth:`flush` writes each session's in one write."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: dict[Session, list[bytes]] = {}

    def add(self, websockets: Iterable[WebSocket], data: str | bytes) -> None:
        """``broadcast(websockets, data)``, written at :meth:`flush` (context takeover: now)."""
        opcode, payload = encode_data(data)
        shared: dict[object, bytes] = {}
        frames = self._frames
        for ws in websockets:
            session = ws.session
            frame = frame_for(session, opcode, payload, shared)
            if frame is None:  # its own compressor: in the wire's order, so now
                self._flush_one(session)
                session.write(opcode, payload)
                continue
            queued = frames.get(session)
            if queued is None:
                frames[session] = [frame]
            else:
                queued.append(frame)

    def _flush_one(self, session: Session) -> None:
        queued = self._frames.pop(session, None)
        if queued:
            session.write(OP_BINARY, b"", queued[0] if len(queued) == 1 else b"".join(queued), len(queued))

    def flush(self) -> None:
        """Write what is held: one write per session."""
        frames, self._frames = self._frames, {}
        for session, queued in frames.items():
            session.write(OP_BINARY, b"", queued[0] if len(queued) == 1 else b"".join(queued), len(queued))

    def __bool__(self) -> bool:
        return bool(self._frames)
