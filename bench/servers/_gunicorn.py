"""gunicorn run from Python with options of our own (its documented custom-application API)."""

from __future__ import annotations

import importlib
from typing import Any

from gunicorn.app.base import BaseApplication


class EmbeddedGunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn serving ``app`` (``module:name``, imported in each worker) with ``options`` (its settings)."""

    def __init__(self, app: str, options: dict[str, Any]) -> None:
        self.app = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        module, _, name = self.app.partition(":")
        return getattr(importlib.import_module(module), name)
