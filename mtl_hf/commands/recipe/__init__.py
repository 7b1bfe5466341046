"""The training recipe's pieces: its arguments, its parser (YAML defaults + flags) and the assembly of its data
and model. `mtl-hf train` (commands/train.py) and `mtl-hf compare` run on them."""

from .arguments import DataArguments, ModelArguments
from .assembly import build_model, load_data, recipe_task_specs
from .parser import RecipeParser, parse_recipe

__all__ = [
    "DataArguments",
    "ModelArguments",
    "RecipeParser",
    "build_model",
    "load_data",
    "parse_recipe",
    "recipe_task_specs",
]
