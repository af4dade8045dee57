"""What ``takeover serve`` loads from its arguments: the application and the TLS files.

``MODULE:APP`` and ``path/to/file.py:APP`` are parsed into an :class:`AppSpec`
and imported by :func:`load_app`; ``--certfile``/``--keyfile`` become an
``SSLContext`` by :func:`load_ssl_context`. Each failure a user can fix is a
:class:`CLIError` whose message is the one line the command prints.
"""

from __future__ import annotations

import importlib
import os
import ssl
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NoReturn

__all__ = ["AppSpec", "CLIError", "WSGIApp", "load_app", "load_ssl_context", "parse_app_spec"]

WSGIApp = Callable[..., Any]


class CLIError(Exception):
    """An error the user can fix; ``main`` prints it as one line and exits 2."""


# -- the application -------------------------------------------------------------


@dataclass(frozen=True)
class AppSpec:
    """A parsed ``MODULE:APP`` argument.

    ``module`` is the name to import and ``path_entry`` the directory to put
    first on ``sys.path`` for it; ``attribute`` is the (dotted) attribute path.
    ``file`` is set for the ``path/to/file.py:APP`` form.
    """

    text: str
    module: str
    attribute: str
    path_entry: str
    file: str | None = None


def _is_dotted_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def parse_app_spec(text: str, cwd: str | None = None) -> AppSpec:
    """Parse ``MODULE:APP`` or ``path/to/file.py:APP``.

    A file inside packages (directories with ``__init__.py``) is imported by
    its dotted name from the directory above the outermost package, as Flask does.
    """
    cwd = cwd or os.getcwd()
    module, colon, attribute = text.rpartition(":")
    if not colon or not module or not _is_dotted_name(attribute):
        raise CLIError(
            f"invalid application {text!r}: expected MODULE:APP, as myapp:app or path/to/app.py:app"
        )
    if not module.endswith(".py"):
        if not _is_dotted_name(module):
            raise CLIError(
                f"invalid application {text!r}: {module!r} is not a module name "
                "(for a file, give its path ending in .py)"
            )
        return AppSpec(text, module, attribute, cwd)

    path = os.path.realpath(os.path.join(cwd, module))
    if not os.path.isfile(path):
        raise CLIError(f"cannot import module {module!r}: no such file")
    base, filename = os.path.split(path)
    name = filename[: -len(".py")]
    if name == "__init__":
        base, name = os.path.split(base)
    while os.path.isfile(os.path.join(base, "__init__.py")):
        base, package = os.path.split(base)
        name = f"{package}.{name}"
    if not _is_dotted_name(name):
        raise CLIError(f"cannot import module {module!r}: {name!r} is not a valid module name")
    return AppSpec(text, name, attribute, base, file=path)


def _user_traceback(error: BaseException) -> Any:
    """``error``'s traceback without the frames of this module and importlib."""
    ours = (__file__, importlib.__file__)
    tb = error.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in ours
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    return tb


def _label(spec: AppSpec) -> str:
    """The module as the user named it."""
    return spec.text.rpartition(":")[0] if spec.file else spec.module


def _import(spec: AppSpec) -> ModuleType:
    if spec.path_entry not in sys.path:
        sys.path.insert(0, spec.path_entry)
    label = _label(spec)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        raise CLIError(f"cannot import module {label!r}: {error}") from None
    except Exception as error:
        # An error in the application's own code: its traceback says where.
        traceback.print_exception(type(error), error, _user_traceback(error))
        raise CLIError(f"cannot import module {label!r}: {type(error).__name__}: {error}") from None
    if spec.file is not None:
        found = getattr(module, "__file__", None)
        if found is None or os.path.realpath(found) != spec.file:
            raise CLIError(
                f"cannot import module {label!r}: the name {spec.module!r} is already "
                f"taken by {found or 'a built-in module'}"
            )
    return module


def load_app(spec: AppSpec) -> WSGIApp:
    """Import ``spec``'s module and return the application; raises :class:`CLIError`."""
    module = _import(spec)
    label = _label(spec)
    app: Any = module
    for part in spec.attribute.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise CLIError(f"module {label!r} has no attribute {spec.attribute!r}") from None
    if not callable(app):
        raise CLIError(
            f"{spec.text!r} is not a WSGI application: {type(app).__name__} objects are not callable"
        )
    return app  # type: ignore[no-any-return]


# -- TLS -----------------------------------------------------------------------


class _EncryptedKey(Exception):
    pass


def _no_password() -> NoReturn:
    raise _EncryptedKey


def _check_readable(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CLIError(f"cannot load certificate {what} {path!r}: {error.strerror or error}") from None


def load_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server ``SSLContext`` with ``certfile`` and ``keyfile``; raises :class:`CLIError`."""
    cert = _check_readable(certfile, "file")
    key = _check_readable(keyfile, "key file")
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise CLIError(f"cannot load certificate file {certfile!r}: it holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise CLIError(f"cannot load certificate key file {keyfile!r}: it holds no PEM private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _EncryptedKey:
        raise CLIError(
            f"cannot load certificate key file {keyfile!r}: the key is encrypted; give an unencrypted key"
        ) from None
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        raise CLIError(f"cannot load certificate {certfile!r} with key {keyfile!r}: {error}") from None
    return context
