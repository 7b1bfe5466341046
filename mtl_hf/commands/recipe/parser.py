"""The recipe's command line: `CONFIG.yaml [--key value ...]` -> `(ModelArguments, DataArguments,
MultiTaskTrainingArguments)`.

As trl's `TrlParser` does it: the YAML's values become the parser's defaults, then the flags parse as
usual and override them. A key set twice in the YAML, an unknown key or flag (named with its closest
match), an abbreviated flag and a bad value are each one line; negative numbers parse as values.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from transformers import HfArgumentParser

from ...errors import MissingPathError, UserError
from ..parsing import OneLineErrors, negative_values_attached
from .arguments import DataArguments, ModelArguments

if TYPE_CHECKING:
    from ...training.arguments import MultiTaskTrainingArguments


def recipe_classes() -> tuple[type, ...]:
    """The recipe's three dataclasses. MultiTaskTrainingArguments is transformers' TrainingArguments, whose import
    costs seconds (torch, and peft where installed): it is imported once the recipe file has been read."""
    from ...training.arguments import MultiTaskTrainingArguments

    return ModelArguments, DataArguments, MultiTaskTrainingArguments


class RecipeParser(OneLineErrors, HfArgumentParser):
    """`HfArgumentParser` over the recipe's three dataclasses, with a YAML file for the defaults."""

    def __init__(self, prog: str = "mtl-hf train"):
        # allow_abbrev=False: argparse would otherwise take `--learning_rat` for `--learning_rate`.
        classes = recipe_classes()
        super().__init__(classes, prog=prog, allow_abbrev=False)
        self.field_names = sorted(field.name for cls in classes for field in dataclasses.fields(cls) if field.init)

    def parse(
        self, argv: Sequence[str], recipe: tuple[str, Mapping[str, Any]] | None = None
    ) -> tuple[ModelArguments, DataArguments, MultiTaskTrainingArguments]:
        """The arguments of `[CONFIG.yaml] [--key value ...]` (`recipe`: the file, already read, as `(path,
        values)`); `--help` prints every field and exits."""
        argv = list(argv)
        if recipe is None and argv and not argv[0].startswith("-"):
            path = argv.pop(0)
            recipe = (path, read_recipe(path))
        if recipe is not None:
            self.use_defaults(recipe[1], where=recipe[0])
        flags = negative_values_attached(argv)
        _, unknown = self.parse_known_args(flags)
        self.refuse_unknown(unknown)
        try:
            return tuple(self.parse_args_into_dataclasses(args=flags, look_for_args_file=False))
        except UserError:
            raise
        except (TypeError, ValueError) as error:  # the dataclasses' own checks of the values given
            raise UserError(str(error)) from None

    def parse_mapping(self, values: Mapping[str, Any], *, where: str = "recipe"):
        """The arguments of a mapping of recipe fields, as a YAML file would give them."""
        self.use_defaults(values, where=where)
        return self.parse([])

    def use_defaults(self, values: Mapping[str, Any], *, where: str) -> None:
        """Makes `values` the defaults that flags override; refuses keys that are no field, naming the closest."""
        unknown = sorted(set(values) - set(self.field_names))
        if unknown:
            hints = [
                f"{key} (did you mean {close[0]}?)"
                for key in unknown
                if (close := difflib.get_close_matches(key, self.field_names, n=1))
            ]
            hint = f" - {', '.join(hints)}" if hints else ""
            raise UserError(f"{where}: unknown argument(s) {unknown}{hint}; see `{self.prog} --help` for the names")
        self.set_defaults(**values)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key set twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise UserError(f"{key!r} is set twice (lines {first_line[key]} and {line}); keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping a recipe YAML file holds."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"config file {path} not found; give the path to a recipe YAML file")
    try:
        with open(path) as file:
            values = yaml.load(file, Loader=_UniqueKeyLoader) or {}
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of argument names to values, got {type(values).__name__}")
    return values


def parse_recipe(argv: Sequence[str], *, prog: str = "mtl-hf train"):
    """`(ModelArguments, DataArguments, MultiTaskTrainingArguments)` from `[CONFIG.yaml] [--key value ...]`; a
    missing or broken recipe file is refused before the slow part, building the parser."""
    argv = list(argv)
    recipe = None
    if argv and not argv[0].startswith("-"):
        path = argv.pop(0)
        recipe = (path, read_recipe(path))
    return RecipeParser(prog).parse(argv, recipe)


__all__ = ["RecipeParser", "parse_recipe", "read_recipe", "recipe_classes"]
