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

__all__ = ["Batch"]


class Batch:
    """Frames per session, in order; :meth:`flush` writes each session's in one write."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: dict[Session, list[bytes]] = {}

    def add(self, websockets: Iterable[WebSocket], data: str | bytes) -> None:
        """``broadcast(websockets, data)``, written at :meth:`flush` (context takeover: now)."""
        if isinstance(data, str):
            opcode, payload = OP_TEXT, data.encode("utf-8")
        else:
            opcode, payload = OP_BINARY, bytes(data)
        plain: bytes | None = None
        shared: dict[tuple[int, int, int], bytes] = {}
        frames = self._frames
        for ws in websockets:
            session = ws.session
            deflate = session.deflate
            if deflate is None or len(payload) < deflate.threshold:
                if plain is None:
                    plain = encode_frame(opcode, payload)
                frame = plain
            else:
                key = deflate.shared_key
                if key is None:  # its own compressor: in the wire's order, so now
                    self._flush_one(session)
                    session.write(opcode, payload)
                    continue
                compressed = shared.get(key)
                if compressed is None:
                    compressed = shared[key] = encode_frame(opcode, deflate.compress(payload), rsv=RSV1)
                frame = compressed
            queued = frames.get(session)
            if queued is None:
                frames[session] = [frame]
            else:
                queued.append(frame)

    def _flush_one(self, session: Session) -> None:
        queued = self._frames.pop(session, None)
        if queued:
            session.write(OP_BINARY, b"", queued[0] if len(queued) == 1 else b"".join(queued))

    def flush(self) -> None:
        """Write what is held: one write per session."""
        frames, self._frames = self._frames, {}
        for session, queued in frames.items():
            session.write(OP_BINARY, b"", queued[0] if len(queued) == 1 else b"".join(queued))

    def __bool__(self) -> bool:
        return bool(self._frames)
