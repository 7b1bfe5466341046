"""Finding the model a command names: a local folder, or a Hub id (`owner/name`) where no such folder exists;
either way a missing model is one line saying what was tried."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import MissingPathError, UserError, one_line
from ..hub.lookup import require_path_or_hub_id


def add_pickled_weights_flag(parser: argparse.ArgumentParser) -> None:
    """`--allow_pickled_weights`, for the commands that load a model."""
    parser.add_argument(
        "--allow_pickled_weights",
        action="store_true",
        help="load a model that has only pickled weights (pytorch_model.bin; they can run code when "
        "loaded): only for folders you trust",
    )


def existing_model(model: str) -> str:
    """Where to load `model` from: the saved model folder it names, or, for a Hub id, the id when the Hub answers
    and its cached copy when it does not (see `hub.lookup`)."""
    if Path(model).exists():
        if not (Path(model) / "config.json").is_file():
            raise MissingPathError(f"{model} has no config.json: not a saved model folder")
        return model
    require_path_or_hub_id(model, "model folder")
    from ..hub.lookup import hub_model_location

    return hub_model_location(model)


@contextlib.contextmanager
def loading_model(model: str) -> Iterator[None]:
    """Loading the model the user named: one line for a model that is neither a local folder nor found on the
    Hub (saying both were tried), and for the model files' own refusals (pickled weights, a bad config). The
    model's classes are registered with transformers first (the `mtl-hf` command defers that past its parsing)."""
    from .. import register_with_transformers

    register_with_transformers()
    try:
        yield
    except OSError as error:
        if Path(model).exists():
            raise
        raise MissingPathError(
            f"no model at {model}: no local folder of that name, and the Hub lookup of "
            f"{model} failed ({one_line(error)})"
        ) from None
    except ValueError as error:  # raised by the model's own files (remote code: plain ValueError), or by ours
        if isinstance(error, UserError):
            raise
        raise UserError(one_line(error)) from None


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


__all__ = ["add_pickled_weights_flag", "existing_model", "has_gpu", "loading_model"]
