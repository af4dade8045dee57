"""What a hub needs from its broker (``memory://`` or Redis), and the settings both share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from takeover.hub._local import LocalRoom, Locals
from takeover.hub._types import Member, Message, Publication

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["Broker", "GapListener", "Settings"]

GapListener = Callable[[str, int, int], object]


@dataclass(frozen=True)
class Settings:
    """A hub's options (see :class:`takeover.Hub`)."""

    history: int
    history_ttl: float
    presence_ttl: float
    health_check_interval: float
    timeout: float
    prefix: str


class Broker(Protocol):
    """Moves a hub's messages between processes; runs in the hub's home loop."""

    @property
    def healthy(self) -> bool: ...

    def start(self) -> None: ...

    def subscribe(self, room: str, local: LocalRoom, first: bool) -> None:
        """Return once messages published to ``room`` from now on reach ``local`` (bounded wait)."""

    def unsubscribe(self, room: str) -> None: ...

    def publish(self, room: str, data: str | bytes, exclude: tuple[WebSocket, ...] = ()) -> Publication: ...

    def since(self, room: str, since: int) -> tuple[bool, list[Message]]:
        """Whether everything after ``since`` is retained, and those messages (empty unless it is)."""

    def history(self, room: str, since: int | None) -> list[Message]: ...

    def add_presence(self, room: str, member_id: str, meta: str) -> None: ...

    def remove_presence(self, room: str, member_id: str) -> None: ...

    def presence(self, room: str) -> list[Member]: ...

    def close(self) -> None: ...


def make_broker(
    url: str, settings: Settings, locals_: Locals, gap: Callable[[str, int, int], None]
) -> Broker:
    """The broker for ``url`` (already checked by :func:`check_url`)."""
    if url.startswith("memory:"):
        from takeover.hub.memory import MemoryBroker

        return MemoryBroker(settings, locals_)
    from takeover.hub._resp import parse_url
    from takeover.hub.redis import RedisBroker

    return RedisBroker(parse_url(url), settings, locals_, gap)


def check_url(url: object) -> str:
    """``url`` if it names a broker: ``memory://`` or a Redis URL; else ``ValueError``."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if url in ("memory://", "memory:"):
        return url
    if url.startswith("memory:"):
        raise ValueError(f"the memory broker's URL is memory://, not {url!r}")
    from takeover.hub._resp import parse_url

    parse_url(url)
    return url
