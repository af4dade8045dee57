"""The browser side: ``takeover.js``, a reconnecting WebSocket that resumes hub rooms with ``since``.

The module is plain JavaScript (an ES module, no build step, no dependency),
shipped as package data; :func:`client_js` gives its text for the application
to serve, for example from Flask::

    app.add_url_rule("/takeover.js", view_func=lambda: (client_js(), {"Content-Type": "text/javascript"}))

Its API is in docs/guides/client.rst and at the top of the file.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["client_js"]


@functools.lru_cache(maxsize=1)
def client_js() -> str:
    """The text of ``takeover.js``, the browser client (an ES module: serve it as ``text/javascript``)."""
    return resources.files(__package__).joinpath("takeover.js").read_text(encoding="utf-8")
