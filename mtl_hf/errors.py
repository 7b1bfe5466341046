"""The mistakes a user can fix, as one exception type.

`UserError` marks an error whose message names the culprit and the fix (a bad value, a missing file, a
wrong combination of settings, data that does not fit the model). The `mtl-hf` commands and the recipes
print it as one line and exit with code 2; any other exception is a bug or a failure of the environment
and keeps its traceback (exit code 1).

The subclasses also derive from the built-in type a caller would catch (`FileNotFoundError` for a
missing path, `ImportError` for a missing optional dependency, ...), so `except FileNotFoundError` keeps
working where it did.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; the message says which input is wrong and how to fix it."""


class MissingPathError(UserError, FileNotFoundError):
    """A file, folder or model that is not where the user said."""


class OutputExistsError(UserError, FileExistsError):
    """An output location that already holds something that must not be replaced."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency that the requested feature needs; the message names the extra to install."""


class UnreachableError(UserError, ConnectionError):
    """A location that cannot be reached as asked (offline mode, a Hub id without the Hub)."""


class BadImageError(UserError):
    """An image that cannot be decoded; the message names its source, row and file."""


def one_line(error: BaseException) -> str:
    """The line to print for `error`. An error re-raised from a DataLoader worker carries the worker's
    traceback in its message; its own message is the traceback's last line."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(error).__name__


def missing_extra(feature: str, extra: str, module: str) -> MissingExtraError:
    """The error for `feature`, which needs the optional `module` from the `extra` extra."""
    return MissingExtraError(f"{feature} needs {module}, which is not installed: pip install 'mtl_hf[{extra}]'")


__all__ = [
    "BadImageError",
    "MissingExtraError",
    "MissingPathError",
    "OutputExistsError",
    "UnreachableError",
    "UserError",
    "missing_extra",
    "one_line",
]
