"""What every `mtl-hf` command's parser shares: a user's mistake on the command line is one line naming the
culprit (with the closest flag for a typo), never a page of usage."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
from collections.abc import Iterator, Sequence

from ..errors import UserError, one_line


class OneLineErrors:
    """Mixin for `argparse.ArgumentParser` subclasses: errors raise `UserError` (printed as one line, exit code
    2) instead of printing the usage; the flags the parser defines are recorded for "did you mean" hints."""

    def __init__(self, *args, **kwargs):
        self.known_flags: list[str] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.known_flags.extend(action.option_strings)
        return action

    def error(self, message: str):
        raise UserError(f"{message}; see `{self.prog} --help`")

    def refuse_unknown(self, unknown: Sequence[str]) -> None:
        """Raises `UserError` naming the unknown arguments, each flag with its closest known one."""
        if unknown:
            raise UserError(
                f"unknown command-line argument(s) {list(unknown)}: {flag_hints(self.known_flags, unknown)}; "
                f"see `{self.prog} --help` for the names"
            )


class CommandParser(OneLineErrors, argparse.ArgumentParser):
    """An `ArgumentParser` that never abbreviates flags (a typo must not set another field) and reports errors
    in one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def flag_hints(flags: Sequence[str], unknown: Sequence[str]) -> str:
    """Each unknown flag with the closest of `flags`: `--learning_rat (did you mean --learning_rate?)`."""
    hints = []
    for token in unknown:
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=")[0], flags, n=1)
            hints.append(f"{token} (did you mean {close[0]}?)" if close else token)
    return ", ".join(hints) or "values without a flag"


def negative_values_attached(flags: Sequence[str]) -> list[str]:
    """`--key -1e-3` as `--key=-1e-3`: argparse takes a value such as -1e-3 for a flag, not a number."""
    joined: list[str] = []
    for token in flags:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and _is_negative_number(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def _is_negative_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return token.startswith("-")


@contextlib.contextmanager
def user_errors_in_one_line(prog: str) -> Iterator[None]:
    """A `UserError` in the block is printed as `PROG: error: ...` on one line and ends the program with code 2."""
    try:
        yield
    except UserError as error:
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


__all__ = ["CommandParser", "OneLineErrors", "flag_hints", "negative_values_attached", "user_errors_in_one_line"]
