"""The access log as JSON: one object per line, for log collectors (Loki, Elasticsearch, CloudWatch, ...).

takeover's access log is the ``"takeover.access"`` logger: one record when a
WebSocket opens, one when it closes and one when an upgrade is refused —
never one per message. Its text lines (the default) read::

    WebSocket open /chat peer=127.0.0.1:50412
    WebSocket closed /chat peer=127.0.0.1:50412 code=1000 duration=12.034s
    WebSocket refused /chat peer=127.0.0.1:50414 status=426: Unsupported WebSocket version '12': ...

Each of these records also carries its fields as one dict, ``record.takeover``
(``event`` is ``"open"``, ``"close"`` or ``"rejected"``).
:class:`JSONFormatter` writes them as one JSON object per line (wrapped here)::

    {"time": "2025-01-31T09:14:03.127Z", "level": "INFO", "logger": "takeover.access", "event": "close",
     "path": "/chat", "peer": "127.0.0.1:50412", "code": 1000, "clean": true, "duration": 12.034127,
     "messages_in": 100, "messages_out": 100, "bytes_in": 3600, "bytes_out": 3200}

:func:`use_json` sets it up in one call (``takeover serve --access-log-format
json`` calls it); with gunicorn's ``logconfig_dict``, name the formatter's
class, ``takeover.accesslog.JSONFormatter``, instead (docs/guides/operations.rst).
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any

__all__ = ["ACCESS_LOGGER", "JSONFormatter", "use_json"]

#: The name of takeover's access logger.
ACCESS_LOGGER = "takeover.access"

# The name use_json gives its handler: a second call replaces it instead of doubling every line.
_HANDLER_NAME = "takeover.accesslog.use_json"


class JSONFormatter(logging.Formatter):
    """Format each record as one line of JSON.

    The object has ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    then the record's ``takeover`` fields (``event`` first) when it has them —
    else its ``message``. A record with an exception also gets ``exception``,
    its traceback as text. Values JSON cannot hold are written as ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON for ``record``, without the newline."""
        created = time.gmtime(record.created)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, "takeover", None)
        if isinstance(fields, dict):
            entry["event"] = fields.get("event")
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def use_json(logger: logging.Logger | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Write ``logger`` (default: ``"takeover.access"``) as JSON lines to ``stream`` (default: stderr).

    Adds a :class:`logging.StreamHandler` with a :class:`JSONFormatter` and
    returns it. The logger stops propagating, so its records are not also
    written as text by the root logger's handlers; it is set to ``INFO`` when
    it would drop INFO records (as it does when nothing configured logging).
    Calling it again replaces the handler it added before.
    """
    if logger is None:
        logger = logging.getLogger(ACCESS_LOGGER)
    for handler in list(logger.handlers):
        if handler.name == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.name = _HANDLER_NAME
    handler.setFormatter(JSONFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    return handler
