"""``make bench``: takeover against other WebSocket servers, driven by Node's ``ws``.

Run ``python -m bench`` (``--quick`` for a fast check); see docs/benchmarks.md.
"""
