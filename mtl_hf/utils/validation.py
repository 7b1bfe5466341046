"""The checks every setting goes through: one of a set of choices, a positive number, a mapping given as such
or as JSON text, names given as a comma-separated list. Each check raises `UserError` naming the setting, what it
got and what it takes."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from ..errors import UserError

_KIND_NAMES = {dict: "mapping", list: "list"}


def check_choice(name: str, value: Any, choices: Sequence[str]) -> Any:
    """`value`, when it is one of `choices`."""
    if value not in choices:
        raise UserError(f"unknown {name} {value!r}; use one of {', '.join(map(str, choices))}")
    return value


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known name closest to a mistyped one, if one is close: `loss_wieght` -> `loss_weight`."""
    matches = difflib.get_close_matches(name, list(known), n=1)
    return matches[0] if matches else None


def check_positive(name: str, value: Any) -> float:
    """`value` as a float, when it is a number above 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UserError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def structured_option(name: str, value: Any, kinds: tuple[type, ...] = (dict,)) -> Any:
    """A mapping (or list, where `kinds` allows one) given as such, from YAML or Python, or as JSON text, as
    on the command line. None stays None."""
    if value is None:
        return None
    wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise UserError(
                f"{name} must be a {wanted} (YAML, or JSON on the command line); {value!r} is not "
                f"JSON ({error.msg} at character {error.pos})"
            ) from None
    if not isinstance(value, kinds):
        raise UserError(f"{name} must be a {wanted}, got {value!r}")
    return value


def comma_separated(text: str) -> list[str]:
    """The names of `"a, b,c"`: split on commas, stripped, empty ones left out."""
    return [name.strip() for name in text.split(",") if name.strip()]


__all__ = ["check_choice", "check_positive", "closest", "comma_separated", "structured_option"]
