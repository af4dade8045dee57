"""``takeover.publish``: publish to a hub's room from any process, with plain redis-py.

For a Celery task, a cron script or a request of a sync worker: no gevent, no
monkey-patching, one redis-py client per URL (made on first use, reused).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from takeover.hub._scripts import PUBLISH, SPUBLISH, KeyScheme
from takeover.hub._types import Publication, check_data, check_room

__all__ = ["publish"]

_clients: dict[tuple[str, int], tuple[Any, Any]] = {}
#: Checked URLs: their ShardMap (None for one server) and the URLs (a str of several, split).
_maps: dict[tuple[str, ...], tuple[Any, tuple[str, ...]]] = {}
_lock = threading.Lock()


def _client(url: str) -> tuple[Any, Any]:
    import os

    key = (url, os.getpid())
    with _lock:
        made = _clients.get(key)
        if made is None:
            try:
                import redis
            except ImportError:
                raise ImportError("takeover.publish needs redis-py: pip install 'takeover[redis]'") from None
            from takeover.hub.cluster import is_cluster_url, parse_cluster_url

            if is_cluster_url(url):  # redis-py's own cluster client: this is plain blocking code
                seeds = parse_cluster_url(url)
                node: Any = redis.cluster.ClusterNode
                nodes = [node(seed.host, seed.port) for seed in seeds]
                client: Any = redis.RedisCluster(
                    startup_nodes=nodes, username=seeds[0].username, password=seeds[0].password,
                    ssl=seeds[0].tls, socket_timeout=1.0, socket_connect_timeout=1.0,
                )
                made = _clients[key] = (client, client.register_script(SPUBLISH))
            else:
                client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
                made = _clients[key] = (client, client.register_script(PUBLISH))
        return made


def _server(url: str | Sequence[str], room: str) -> str:
    """The URL of the server ``room`` lives on, of ``url`` (as the hubs choose it). The URLs are
    checked, and their map made, once per list."""
    key = (url,) if isinstance(url, str) else tuple(url)
    with _lock:
        checked = key in _maps
        shards, urls = _maps.get(key, (None, key))
    if not checked:
        from takeover.hub._broker import check_urls
        from takeover.hub._resp import parse_url
        from takeover.hub._shards import ShardMap

        urls = check_urls(url)
        if urls[0].startswith("memory:"):
            raise ValueError("publish() reaches hubs of other processes through Redis: memory:// has none")
        shards = None if len(urls) == 1 else ShardMap([parse_url(item) for item in urls])
        with _lock:
            _maps[key] = (shards, urls)  # a str of several URLs is split into them (check_urls)
    return urls[0] if shards is None else urls[shards.index(room)]


def publish(
    url: str | Sequence[str], room: str, data: str | bytes, *, history: int = 100,
    history_ttl: float = 300.0, prefix: str = "takeover",
) -> Publication:
    """Publish ``data`` to ``room`` of the hubs on the Redis at ``url``; what the broker did with it.

    ``url`` is the hubs' own: one Redis URL, or the list of their Redis servers
    (in any order), of which the room's own gets it. ``history``,
    ``history_ttl`` and ``prefix`` must be the hubs' own (their defaults are).
    If Redis cannot be reached within a second, nothing is sent and the result
    says ``remote=False``.
    """
    room = check_room(room)
    data = check_data(data)
    url = _server(url, room)
    import redis

    from takeover.hub.cluster import is_cluster_url

    client, script = _client(url)
    cluster = is_cluster_url(url)
    meta, log, channel, _ = KeyScheme(prefix, cluster).keys(room)
    kind, payload = ("t", data.encode("utf-8")) if isinstance(data, str) else ("b", data)
    try:
        if not history:
            stamp = b"/%d" % (time.time() * 1e6)  # the publish time (takeover/hub/_scripts.py)
            (client.spublish if cluster else client.publish)(channel, kind.encode() + stamp + b" " + payload)
            return Publication(None, True)
        offset = script(keys=[meta, log], args=[channel, history, int(history_ttl * 1000), kind, payload])
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError):
        return Publication(None, False)
    return Publication(int(offset), True)
