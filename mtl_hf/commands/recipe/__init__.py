"""The training recipe's pieces: its arguments, its parser (YAML defaults + flags) and the assembly of its data
and model. `mtl-hf train` (commands/train.py) and `mtl-hf compare` run on them."""

from typing import TYPE_CHECKING

from ...utils.lazy import lazy_attributes

# The parser needs none of the assembly's imports (models, data): `mtl-hf train CONFIG --help` stays quick.
_ATTRIBUTES = {
    "DataArguments": ".arguments",
    "ModelArguments": ".arguments",
    "build_model": ".assembly",
    "load_data": ".assembly",
    "recipe_task_specs": ".assembly",
    "RecipeParser": ".parser",
    "parse_recipe": ".parser",
}

if TYPE_CHECKING:
    from .arguments import DataArguments, ModelArguments
    from .assembly import build_model, load_data, recipe_task_specs
    from .parser import RecipeParser, parse_recipe

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)

__all__ = [
    "DataArguments",
    "ModelArguments",
    "RecipeParser",
    "build_model",
    "load_data",
    "parse_recipe",
    "recipe_task_specs",
]
