"""The hub's keys in Redis and the Lua scripts that keep a room's offsets, stream and channel in step.

For a room ``R`` (prefix ``P``, ``takeover`` by default):

* ``P:meta:R``, a hash: ``o``, the room's last offset, and ``e``, the first
  offset of its epoch;
* ``P:log:R``, a stream capped at about ``history`` entries (``XADD MAXLEN
  ~``), entry ``<offset>-1`` with fields ``k`` (``t`` text, ``b`` binary) and
  ``d`` (the data);
* ``P:room:R``, the channel: ``k<offset>/<time> <data>`` (``k/<time> <data>`` when
  the hub keeps no history), where ``<time>`` is the publish time in µs since the
  epoch (Redis's ``TIME``; the publisher's clock without history), the start of the
  delivery lag that ``takeover.metrics`` reports; ``K<offset>/<time> <token> <data>`` (the kind in capitals)
  when the publishing process excludes some of its own members
  (``publish(exclude=)``): the token, also the entry's field ``x``, tells that
  process which;
* ``P:presence:R``, a hash of member id -> ``<process id> <meta JSON>``, and
  ``P:process:ID``, a key each live process refreshes (``presence_ttl``).

Both keys of a room expire ``history_ttl`` after its last message. When the
room's hash is missing (expired, flushed, a Redis restarted without
persistence) the next message starts a new *epoch*: its offset is Redis's
clock in microseconds (``TIME``), larger than any offset of an earlier epoch,
so an old offset is never taken for a new one, and a client's ``since`` from
before is seen not to be retained. Offsets stay below 2^53: exact in
JavaScript too.
"""

from __future__ import annotations

__all__ = ["ADVANCE", "PUBLISH", "READ", "SPUBLISH", "KeyScheme", "keys", "parse_message"]


def parse_message(payload: bytes) -> tuple[bytes, int | None, bytes, bytes, float | None]:
    """A message of a room's channel (see the module's docstring): its kind (``t`` or ``b``), its
    offset (None without history), the publisher's token (``b""`` for none), its data, and its
    publish time in seconds since the epoch (None from a publisher that did not stamp it)."""
    space = payload.index(b" ")
    kind, head, body = payload[:1], payload[1:space], payload[space + 1 :]
    published_at = None
    stamp = head.find(b"/")
    if stamp >= 0:  # <offset>/<publish time in µs>
        published_at = int(head[stamp + 1 :]) / 1e6
        head = head[:stamp]
    token = b""
    if kind.isupper():  # K<offset> <token> <data>
        token, _, body = body.partition(b" ")
        kind = kind.lower()
    return kind, (int(head) if head else None), token, body, published_at

#: KEYS: meta, log. ARGV: channel, history, ttl in ms, kind (t or b), data, and optionally the
#: publisher's token (publish(exclude=)). Returns the offset.
PUBLISH = """
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if offset == 1 then
  local now = redis.call('TIME')
  offset = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('HSET', KEYS[1], 'o', string.format('%.0f', offset), 'e', string.format('%.0f', offset))
end
local text = string.format('%.0f', offset)
local now = redis.call('TIME')
local stamped = text .. '/' .. now[1] .. string.format('%06d', tonumber(now[2]))
local token = ARGV[6]
local entry = {'k', ARGV[4], 'd', ARGV[5]}
if token then
  entry = {'k', ARGV[4], 'd', ARGV[5], 'x', token}
end
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], text .. '-1', unpack(entry))
if type(added) == 'table' and added.err then
  -- a stream left from an epoch whose offsets outran this one's start: start the log afresh
  redis.call('DEL', KEYS[2])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], text .. '-1', unpack(entry))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if token then
  redis.call('PUBLISH', ARGV[1], string.upper(ARGV[4]) .. stamped .. ' ' .. token .. ' ' .. ARGV[5])
else
  redis.call('PUBLISH', ARGV[1], ARGV[4] .. stamped .. ' ' .. ARGV[5])
end
return offset
"""

#: The same for a Redis Cluster: the channel is a shard channel of the room's slot (sharded pub/sub).
SPUBLISH = PUBLISH.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

#: KEYS: meta. ARGV: an offset. Moves the room's last offset up to it, never down.
ADVANCE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if current < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'o', ARGV[1])
end
return current
"""

#: KEYS: meta, log. ARGV: first offset, last offset (or '+').
#: Returns {the room's last offset or false, the entries, its epoch's first offset or false}.
READ = """
local meta = redis.call('HMGET', KEYS[1], 'o', 'e')
return {meta[1], redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[2]), meta[2]}
"""


def keys(prefix: str, room: str) -> tuple[str, str, str, str]:
    """The room's meta hash, stream, channel and presence hash."""
    return (
        f"{prefix}:meta:{room}", f"{prefix}:log:{room}", f"{prefix}:room:{room}", f"{prefix}:presence:{room}"
    )


def process_key(prefix: str, process_id: str) -> str:
    return f"{prefix}:process:{process_id}"


class KeyScheme:
    """A hub's key names: :func:`keys` and :func:`process_key`, or, on a Redis Cluster, the same
    with the room as a hash tag (``P:meta:{R}``, ...) so that a room's keys and shard channel
    share one slot and its publish stays one script on one node; a process's liveness key is
    then one per room (``P:process:{R}:ID``), on the node of the room's presence hash."""

    def __init__(self, prefix: str, cluster: bool = False) -> None:
        if cluster and ("{" in prefix or "}" in prefix):
            raise ValueError(f"on a Redis Cluster the prefix must not hold braces (a hash tag): {prefix!r}")
        self.prefix = prefix
        self.cluster = cluster
        self.channel_prefix = f"{prefix}:room:{{".encode() if cluster else f"{prefix}:room:".encode()

    def keys(self, room: str) -> tuple[str, str, str, str]:
        """The room's meta hash, stream, channel and presence hash."""
        if not self.cluster:
            return keys(self.prefix, room)
        p, tag = self.prefix, "{" + room + "}"
        return f"{p}:meta:{tag}", f"{p}:log:{tag}", f"{p}:room:{tag}", f"{p}:presence:{tag}"

    def process(self, process_id: str, room: str | None = None) -> str | None:
        """A live process's key (for ``room``, on a cluster; None there without a room)."""
        if not self.cluster:
            return process_key(self.prefix, process_id)
        return None if room is None else f"{self.prefix}:process:{{{room}}}:{process_id}"

    def room_of(self, channel: bytes) -> str:
        """The room whose channel is ``channel``."""
        name = channel[len(self.channel_prefix) :]
        return (name[:-1] if self.cluster else name).decode("utf-8")
