"""What a hub needs from its broker (``memory://`` or Redis), and the settings both share."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from takeover.hub._local import LocalRoom, Locals
from takeover.hub._types import Member, Message, Publication

if TYPE_CHECKING:
    from takeover.websocket import WebSocket

__all__ = ["Broker", "GapListener", "Settings", "check_url", "check_urls", "make_broker"]

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

    def health(self) -> dict[str, bool]:
        """Whether each server can be reached, by its address."""

    def shard(self, room: str) -> str:
        """The address of the server ``room`` lives on."""

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
    urls: Sequence[str], settings: Settings, locals_: Locals, gap: Callable[[str, int, int], None]
) -> Broker:
    """The broker for ``urls`` (already checked by :func:`check_urls`): one, or one per Redis server."""
    if urls[0].startswith("memory:"):
        from takeover.hub.memory import MemoryBroker

        return MemoryBroker(settings, locals_)
    from takeover.hub._resp import parse_url
    from takeover.hub.cluster import ClusterBroker, is_cluster_url, parse_cluster_url
    from takeover.hub.redis import RedisBroker

    if is_cluster_url(urls[0]):
        return ClusterBroker(parse_cluster_url(urls[0]), settings, locals_, gap)
    if len(urls) == 1:
        return RedisBroker(parse_url(urls[0]), settings, locals_, gap)
    from takeover.hub.sharded import ShardedBroker

    return ShardedBroker([parse_url(url) for url in urls], settings, locals_, gap)


def check_urls(url: object) -> tuple[str, ...]:
    """The broker URLs in ``url``: one URL, or a list of Redis URLs (one per server); else an error.

    A string of several URLs separated by commas, each with its scheme (``redis://a:6379/0,
    redis://b:6379/0``; what :attr:`Hub.url` shows), is the same as their list: one setting
    (``TAKEOVER_HUB``, ``takeover serve --hub``) can name several servers. A Redis Cluster's
    seed nodes (``redis+cluster://h1:1,h2:2``) stay one URL: their commas are not followed by
    a scheme.
    """
    if isinstance(url, str):
        parts = _SEVERAL.split(url.strip())
        if len(parts) == 1:
            return (check_url(url),)
        url = parts
    if not isinstance(url, (list, tuple)):
        raise TypeError(f"url must be a str or a list of str, not {type(url).__name__}")
    if not url:
        raise ValueError("the list of Redis URLs is empty: give one URL per Redis server")
    urls = tuple(check_url(item) for item in url)
    if len(urls) > 1 and any(item.startswith("memory:") for item in urls):
        raise ValueError("memory:// is one process's broker: it cannot be one of several servers")
    from takeover.hub.cluster import is_cluster_url

    if len(urls) > 1 and any(is_cluster_url(item) for item in urls):
        raise ValueError(
            "a Redis Cluster is one URL listing its seed nodes (redis+cluster://HOST:PORT,HOST:PORT), "
            "not one of several servers"
        )
    if len(urls) > 1:
        from takeover.hub._resp import parse_url
        from takeover.hub._shards import ShardMap

        ShardMap([parse_url(item) for item in urls])  # the same server twice: ValueError
    return urls


_SEVERAL = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def check_url(url: object) -> str:
    """``url`` if it names a broker: ``memory://``, a Redis URL or a Redis Cluster's; else ``ValueError``."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    if url in ("memory://", "memory:"):
        return url
    if url.startswith("memory:"):
        raise ValueError(f"the memory broker's URL is memory://, not {url!r}")
    from takeover.hub.cluster import is_cluster_url, parse_cluster_url

    if is_cluster_url(url):
        parse_cluster_url(url)
        return url
    from takeover.hub._resp import parse_url

    parse_url(url)
    return url
