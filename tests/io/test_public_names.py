"""``takeover``'s public names: one table, from which ``__all__`` and the lazy imports are made.

The ``TYPE_CHECKING`` import block says the same for type checkers (which do
not run ``__getattr__``); these tests keep the two in agreement, and check
that every name resolves, lazily, to its module's object.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import takeover

INIT = Path(takeover.__file__)


def type_checking_imports() -> dict[str, str]:
    """Name -> module of the ``from M import N as N`` lines under ``if TYPE_CHECKING:``."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    blocks = [
        node for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1, "one TYPE_CHECKING block"
    for statement in blocks[0].body:
        assert isinstance(statement, ast.ImportFrom) and statement.module, ast.dump(statement)
        for alias in statement.names:
            assert alias.asname == alias.name, f"{alias.name}: import it 'as {alias.name}' (a re-export)"
            found[alias.name] = statement.module
    return found


def test_the_type_checking_block_and_the_table_agree() -> None:
    assert type_checking_imports() == takeover._EXPORTS


def test_all_is_made_from_the_table() -> None:
    assert takeover.__all__ == sorted(takeover._EXPORTS)
    assert sorted(dir(takeover)) == sorted(takeover.__all__)


@pytest.mark.parametrize("name", sorted(takeover._EXPORTS))
def test_every_name_is_its_modules_object(name: str) -> None:
    module = importlib.import_module(takeover._EXPORTS[name])
    assert getattr(takeover, name) is getattr(module, name)


def test_every_public_exception_is_exported() -> None:
    import takeover.errors

    for name in takeover.errors.__all__:
        assert name in takeover.__all__
        assert issubclass(getattr(takeover, name), Exception)
    for name in ("ClientError", "UnsupportedServerError", "ProtocolViolation"):
        assert name in takeover.__all__


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        takeover.nothing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_takeover_imports_no_io_library() -> None:
    code = (
        "import sys, takeover;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'werkzeug')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
