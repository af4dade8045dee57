"""Sphinx configuration for takeover's documentation (``make docs``)."""

from __future__ import annotations

import argparse
import os
import sys

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import takeover  # noqa: E402

project = "takeover"
author = "the takeover authors"
copyright = "the takeover authors"
release = version = takeover.__version__

extensions = ["sphinx.ext.autodoc", "myst_parser"]  # myst_parser: benchmarks.md
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
# No intersphinx: the build never fetches anything from the network.

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "furo"
html_title = f"takeover {release}"
html_static_path: list[str] = []

# Docstrings use reST roles; names are shown as they are imported.
default_role = "literal"
add_module_names = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True


class CommandHelp(SphinxDirective):
    """``.. takeover-command-help:: serve``: the ``--help`` text of a subcommand, from its parser.

    Built from :func:`takeover.cli.build_parser` at build time, so the page
    always shows the options the command really has.
    """

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from takeover.cli import build_parser

        os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width
        parser = build_parser()
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                text = action.choices[self.arguments[0]].format_help()
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> None:
    app.add_directive("takeover-command-help", CommandHelp)
