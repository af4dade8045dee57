"""Command-line options shared by the bench servers."""

from __future__ import annotations

import argparse

#: The message scenario 5 broadcasts: 100 bytes of text.
BROADCAST_MESSAGE = "b" * 100
BROADCAST_PREFIX = "broadcast:"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--broadcast", action="store_true", help="the broadcast variant (scenario 5)")
    return parser.parse_args()


def broadcast_count(message: object) -> int | None:
    """``n`` for a ``broadcast:<n>`` text message, else None."""
    if isinstance(message, str) and message.startswith(BROADCAST_PREFIX):
        return int(message[len(BROADCAST_PREFIX) :])
    return None
