"""Which of several Redis servers a room lives on: rendezvous hashing of its name.

``Hub([url1, url2, ...])`` and ``takeover.publish([url1, ...], room, data)``
put each room, its offsets, stream, channel and presence, on one of the
servers: the one whose score for the room is highest, the score being the
first 8 bytes (big-endian) of ``blake2b(SHARD + "\\n" + ROOM, digest_size=8)``,
where SHARD is the server's identity (``host:port/db``, or the socket's
``path/db``) and ROOM the room's name, both UTF-8.

This is highest-random-weight ("rendezvous") hashing (Thaler and Ravishankar,
1996), the scheme Centrifugo uses to shard channels over Redis servers: the
order of the list does not matter, every process given the same servers
agrees without talking to the others, and when a server is added, only the
rooms it now wins move to it (about 1/N of them); when one is removed, only
its rooms move, each to its runner-up. It is a dozen lines, so it is written
here rather than taken from a library; the hash is in the standard library
and the same in every Python version, so other languages can compute it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from takeover.hub._resp import Address

__all__ = ["ShardMap", "shard_identity"]

#: Rooms whose shard is remembered (a cache: past it, it starts over).
CACHE_SIZE = 65_536


def shard_identity(address: Address) -> str:
    """The name a server is hashed by: where it is and which database, not how it is reached."""
    where = address.path if address.path is not None else f"{address.host}:{address.port}"
    return f"{where}/{address.db}"


def _score(identity: bytes, room: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(identity + b"\n" + room, digest_size=8).digest(), "big")


class ShardMap:
    """The servers' identities, and for each room the index of the one it lives on."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        identities = [shard_identity(address) for address in addresses]
        seen: dict[str, int] = {}
        for index, identity in enumerate(identities):
            if identity in seen:
                raise ValueError(
                    f"the same Redis server twice in the list: {identity} (entries {seen[identity] + 1} and "
                    f"{index + 1}): each room would live on one of them only; list each server once"
                )
            seen[identity] = index
        self.identities = identities
        self._keys = [identity.encode("utf-8") for identity in identities]
        self._cache: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.identities)

    def index(self, room: str) -> int:
        """The index, in the list as given, of the server ``room`` lives on."""
        found = self._cache.get(room)
        if found is not None:
            return found
        name = room.encode("utf-8")
        scores = [_score(key, name) for key in self._keys]
        found = scores.index(max(scores))
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[room] = found
        return found
