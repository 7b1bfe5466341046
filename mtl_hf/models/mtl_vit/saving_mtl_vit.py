"""What a saved model's folder holds besides its config and weights, and what it must not: the Inference
Endpoints handler and its requirements, the image processor carried over, and pickled weights refused.

Remote code, like its siblings: it imports only the standard library and, where it runs, transformers.
"""

from __future__ import annotations

import os

PICKLED_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TRAINING_ROWS_FILE = "training_rows.safetensors"
"""The 64-bit hashed keys of the rows a model trained on (`mtl_hf.data.row_keys`), sorted: what lets `mtl-hf eval`
recognise them in any table."""


def refuse_pickled_weights(pretrained_model_name_or_path) -> None:
    """Raises when a local model folder holds pickled weights and no safetensors (a Hub repo like that is
    refused by `use_safetensors=True`)."""
    folder = os.fspath(pretrained_model_name_or_path)
    if not os.path.isdir(folder):
        return
    names = sorted(os.listdir(folder))
    pickled = [name for name in names if name.endswith(PICKLED_WEIGHT_SUFFIXES) and name != "training_args.bin"]
    weights = [name for name in names if name.endswith(".safetensors") and name != TRAINING_ROWS_FILE]
    if pickled and not weights:
        raise ValueError(
            f"{folder} holds only pickled weights ({', '.join(pickled)}), which can run code when loaded; convert "
            "them to safetensors, or if you trust the folder pass allow_pickled_weights=True "
            "(mtl-hf and recipes: --allow_pickled_weights)"
        )


PROCESSOR_FILE = "preprocessor_config.json"


def read_training_rows(pretrained_model_name_or_path):
    """The training rows' keys saved in a local model folder (a numpy uint64 array), or None."""
    path = os.path.join(os.fspath(pretrained_model_name_or_path), TRAINING_ROWS_FILE)
    if not os.path.isfile(path):
        return None
    from safetensors.numpy import load_file

    return load_file(path)["keys"]


def write_training_rows(folder, keys) -> None:
    from safetensors.numpy import save_file

    save_file({"keys": keys}, os.path.join(os.fspath(folder), TRAINING_ROWS_FILE))


def processor_folder(pretrained_model_name_or_path) -> str | None:
    """The folder, when it is a local one holding an image processor."""
    folder = os.fspath(pretrained_model_name_or_path)
    return os.path.abspath(folder) if os.path.isfile(os.path.join(folder, PROCESSOR_FILE)) else None


ENDPOINT_REQUIREMENTS = ("transformers>=5.0,<6", "torch", "pillow")


def write_endpoint_files(folder) -> None:
    """`handler.py` (from `endpoint_handler.py`, beside this file) and `requirements.txt`: what Hugging Face
    Inference Endpoints run a repository with."""
    import shutil

    template = os.path.join(os.path.dirname(os.path.abspath(__file__)), "endpoint_handler.py")
    if os.path.isfile(template):
        shutil.copyfile(template, os.path.join(folder, "handler.py"))
        with open(os.path.join(folder, "requirements.txt"), "w") as handle:
            handle.write("\n".join(ENDPOINT_REQUIREMENTS) + "\n")


def remote_pipeline():
    """The pipeline's remote-code module, found beside this file; None where it is not (a model loaded as remote
    code without its pipeline file). Imported by name, not by a relative import, so that loading the model never
    needs what only the pipeline imports (Pillow, numpy)."""
    import importlib

    try:
        return importlib.import_module(".pipeline_mtl_vit", __package__)
    except ImportError:
        return None


__all__ = [
    "ENDPOINT_REQUIREMENTS",
    "PICKLED_WEIGHT_SUFFIXES",
    "PROCESSOR_FILE",
    "processor_folder",
    "refuse_pickled_weights",
    "remote_pipeline",
    "write_endpoint_files",
]
