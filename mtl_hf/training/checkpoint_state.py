"""The multi-task state a checkpoint needs beyond Trainer's: where the task mixture stands and the
weighting method's state, saved as safetensors (tensors) plus JSON (everything else), never a pickle.

A pickle runs code when it is loaded, so a checkpoint downloaded or shared is only as safe as its
author; safetensors and JSON hold data only. The JSON file is written last and atomically: a
checkpoint that has it is complete, one that lacks it was cut short (a kill while saving).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import MissingPathError, UserError
from ..models.mtl_vit.tasks_mtl_vit import LOSS_FIELDS

logger = logging.getLogger(__name__)

STATE_TENSORS = "multitask_state.safetensors"
STATE_JSON = "multitask_state.json"
PICKLED_STATE = "multitask_state.pt"  # written by mtl_hf before its state went to safetensors + JSON
_TENSOR = "__tensor__"  # in the JSON: a tensor stored in the safetensors file under this key
FORMAT_VERSION = 1


def save_multitask_state(folder: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write `state` (nested dicts and lists of tensors, numbers, strings, None) into `folder`."""
    tensors: dict[str, torch.Tensor] = {}
    document = {"format_version": FORMAT_VERSION, "state": _split(state, "", tensors)}
    save_file(tensors, os.path.join(folder, STATE_TENSORS))
    final = os.path.join(folder, STATE_JSON)
    partial = final + ".partial"
    with open(partial, "w") as file:
        json.dump(document, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, final)  # the completion mark: present only once both files are whole


def load_multitask_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The state `save_multitask_state` wrote into `folder`; refuses pickled or incomplete state."""
    folder = os.fspath(folder)
    json_path, tensors_path = os.path.join(folder, STATE_JSON), os.path.join(folder, STATE_TENSORS)
    if not os.path.isfile(json_path):
        if os.path.isfile(os.path.join(folder, PICKLED_STATE)):
            raise UserError(
                f"{folder} holds {PICKLED_STATE}, a pickle from an earlier mtl_hf; pickles can run code when loaded, "
                "so it is not read: resume from a checkpoint written by this version, or start the run again"
            )
        raise MissingPathError(
            f"{folder} has no {STATE_JSON}: it was not written by MultiTaskTrainer, or the run stopped while saving "
            "it, so the task mixture's position and the weighting's state cannot be restored"
        )
    with open(json_path) as file:
        document = json.load(file)
    if document.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{json_path}: format_version {document.get('format_version')!r}, expected {FORMAT_VERSION}")
    return _join(document["state"], load_file(tensors_path))


def restore_task_losses(model, folder: str | os.PathLike) -> None:
    """Gives `model`'s tasks the loss settings of the run saved in `folder`: regression target scaling and
    statistics, label smoothing, class and positive weights with their label counts, the regression loss. A
    resumed run computes its losses as it did before (a checkpoint of mtl_hf 0.1.0: raw targets, plain losses)."""
    saved = type(model.config).from_pretrained(folder)
    for spec in saved.task_specs:
        if spec.name in model.task_names and spec.type == model.config.get_task(spec.name).type:
            model.update_task(
                spec.name,
                target_scaling=spec.target_scaling,
                target_statistics=spec.target_statistics,
                **{field: getattr(spec, field) for field in LOSS_FIELDS},
            )


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds everything a resume reads (Trainer's state last, ours after it)."""
    return os.path.isfile(os.path.join(folder, "trainer_state.json")) and os.path.isfile(
        os.path.join(folder, STATE_JSON)
    )


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str:
    """The newest complete `checkpoint-N` folder in `output_dir`; newer incomplete ones are skipped, with a warning."""
    output_dir = os.fspath(output_dir)
    steps = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            number = name.removeprefix(f"{PREFIX_CHECKPOINT_DIR}-")
            if number != name and number.isdigit() and os.path.isdir(os.path.join(output_dir, name)):
                steps.append(int(number))
    incomplete = []
    for step in sorted(steps, reverse=True):
        folder = os.path.join(output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if is_complete_checkpoint(folder):
            for skipped in incomplete:
                logger.warning("%s is incomplete (the run stopped while saving it); resuming from %s", skipped, folder)
            return folder
        incomplete.append(folder)
    names = ", ".join(os.path.basename(folder) for folder in reversed(incomplete))
    raise UserError(
        f"output_dir {output_dir!r} holds no complete checkpoint to resume from"
        + (f" (incomplete: {names}, cut short while saving)" if incomplete else "")
        + "; start a fresh run, or pass the path of a checkpoint"
    )


def _split(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = path or "/"
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()  # copies: safetensors refuses shared memory
        return {_TENSOR: key}
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str) or "/" in key or key == _TENSOR:
                raise TypeError(f"checkpoint state at {path or '/'}: key {key!r} must be a string without '/'")
        return {key: _split(item, f"{path}/{key}", tensors) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(item, f"{path}/{index}", tensors) for index, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return value.item()
    raise TypeError(f"checkpoint state at {path or '/'}: a {type(value).__name__} cannot be saved without pickle")


def _join(value: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {key: _join(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_join(item, tensors) for item in value]
    return value


__all__ = [
    "PICKLED_STATE",
    "STATE_JSON",
    "STATE_TENSORS",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
    "load_multitask_state",
    "restore_task_losses",
    "save_multitask_state",
]
