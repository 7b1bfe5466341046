"""New tasks on a trained model (the recipe's `add_tasks_to:`, `mtl-hf add-task`): the model with its old heads and
the new ones, what trains in each mode, and where the result goes.

  heads  the backbone and the old heads are frozen and only the new heads train: every old answer is bit-identical
         (the same weights, the same forward).
  lora   low-rank adapters on the backbone's attention, applied on the new tasks' path only; the backbone and the
         old heads are frozen, so the old answers are bit-identical. Asked for old and new tasks together, the
         backbone runs twice (without and with the adapters): one forward of the model, two of its backbone.
  full   the backbone and every head train; the old heads are kept near their answers by distillation from the
         model as it was (Learning without Forgetting, `training/distillation.py`) on every training photo, and by
         the old tasks' own labelled rows where the data has them. Distillation needs no old labels: the teacher's
         answers are in the old heads' own label spaces, so nothing in the new data has to be encoded against them.

The model is trained into `OUTPUT.incomplete` and moved to `OUTPUT` only once its old tasks pass the gate
(`old_task_gate.py`); refused, it is moved to `OUTPUT.rejected` instead. `OUTPUT` is never written before then.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ...models.mtl_vit.configuration_mtl_vit import TaskSpec
from ...tasks import check_agreement
from ..model_loading import loading_model

STAGING_SUFFIX, REJECTED_SUFFIX = ".incomplete", ".rejected"
LORA_RANK = 8  # the adapters of `lora` mode: rank 8 on the query and value projections


@dataclass
class AddedTasks:
    """The model with the new heads, its image processor, the model as it was (kept for the gate and, in `full`
    mode, as the teacher), and which tasks are old and new."""

    model: object
    processor: object
    original: object
    old_tasks: list[str]
    new_tasks: list[str]
    old_rows_of: list[str]  # the old tasks that the data labels too (their rows mixed in)


def staging_folder(output_dir: str, *, check: bool = True) -> str:
    """Where the run writes (`OUTPUT.incomplete`): `OUTPUT` must not exist yet, nor an unfinished earlier attempt
    (checked by the main process, before it creates the folder)."""
    final = Path(output_dir)
    staging = final.with_name(final.name + STAGING_SUFFIX)
    if not check:
        return str(staging)
    if final.exists() and any(final.iterdir()):
        raise UserError(
            f"output_dir {final} exists: tasks are added into a new model folder, which is written only once the old "
            "tasks pass their gate; choose another output_dir"
        )
    if staging.exists():
        raise UserError(
            f"{staging} holds an earlier attempt that did not finish: remove it, or choose another output_dir"
        )
    return str(staging)


def added_task_model(model_name: str, location: str, task_specs: list[TaskSpec], mode: str) -> AddedTasks:
    """The saved model at `location` with a fresh head for each task of the data it lacks; the data's tasks that it
    has must be described as it describes them (they are its old labelled rows)."""
    from ...data.backbone_processor import model_image_processor
    from ...models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    with loading_model(model_name):
        model = MultiTaskViTModel.from_pretrained(location)
        processor = model_image_processor(location, model.config)
    original = copy.deepcopy(model)  # read once from disk; kept as it was while `model` gains heads
    if model.config.lora is not None:
        raise UserError(
            f"{model_name} has LoRA adapters that are not merged into its backbone: run mtl-hf merge {model_name} "
            "MERGED, then add the tasks to MERGED"
        )
    old_tasks = list(model.task_names)
    new_specs = [spec for spec in task_specs if spec.name not in old_tasks]
    if not new_specs:
        raise UserError(
            f"the data's tasks {[spec.name for spec in task_specs]} are all tasks of {model_name} already: nothing "
            "to add; to train them further, use model_name_or_path"
        )
    for spec in task_specs:
        if spec.name in old_tasks:
            check_agreement(
                model.config.get_task(spec.name),
                model_name,
                spec,
                "the data",
                fix="the data's rows of an old task must use its labels; rename the column to add a new task",
            )
    for spec in new_specs:
        model.add_task(spec)
    if mode == "lora":
        model.add_task_adapter([spec.name for spec in new_specs], rank=LORA_RANK)
    original.eval()
    labelled_old = [spec.name for spec in task_specs if spec.name in old_tasks]
    return AddedTasks(model, processor, original, old_tasks, [spec.name for spec in new_specs], labelled_old)


def set_training_mode(training_args, mode: str, added: AddedTasks) -> None:
    """What trains: `heads` and `lora` freeze the backbone and the old heads; `full` trains everything."""
    if training_args.lora_rank is not None:
        raise UserError("lora_rank with add_tasks_to: use add_task_mode: lora, which adapts the new tasks' path only")
    if training_args.push_to_hub:
        raise UserError(
            "push_to_hub with add_tasks_to: the model is saved only after its old tasks pass their gate; push it "
            "then, with mtl-hf push OUTPUT_DIR REPO_ID"
        )
    if mode in ("heads", "lora"):
        if added.old_rows_of:
            raise UserError(
                f"the data labels the old task(s) {added.old_rows_of}, whose heads add_task_mode {mode} keeps frozen: "
                "their rows would train nothing; use add_task_mode full (--mode full), or leave those rows out"
            )
        training_args.freeze_backbone, training_args.unfreeze_backbone_at_step = True, None
        training_args.frozen_tasks = list(added.old_tasks)
        if training_args.layer_decay is not None:
            raise UserError(f"layer_decay sets the rates of a backbone that add_task_mode {mode} keeps frozen")


def teacher_of(added: AddedTasks, mode: str, training_args):
    """The model as it was, whose answers the old heads learn from in `full` mode (None without distillation)."""
    return added.original if mode == "full" and training_args.distill_weight > 0 else None


MODE_MEANINGS = {
    "heads": "backbone and old heads frozen, old answers bit-identical",
    "lora": "adapters on the new tasks' path only, old answers bit-identical",
    "full": "everything trained, old heads distilled from the model as it was",
}


def finish(trainer, added: AddedTasks, rows, model_args, output_dir: str) -> dict:
    """Scores the old tasks with the model as it was and as it is, records that beside the model and in its card,
    then moves the run's folder to `output_dir`, or, past `max_old_task_drop`, aside (a one-line error)."""
    from .old_task_gate import failing_tasks, gate_scores, gate_table, write_record

    staging, main = trainer.args.output_dir, trainer.is_world_process_zero()
    model = trainer.accelerator.unwrap_model(trainer.model)
    record = {
        "base_model": model_args.add_tasks_to,
        "mode": model_args.add_task_mode,
        "mode_meaning": MODE_MEANINGS[model_args.add_task_mode],
        "new_tasks": added.new_tasks,
        "max_drop": model_args.max_old_task_drop,
    }
    failing = []
    if rows is not None:
        scores = gate_scores(added.original, model, added.processor, rows, trainer.args.per_device_eval_batch_size)
        record.update(scores=scores, rows=rows.source.num_rows, data=rows.description)
        failing = failing_tasks(scores, model_args.max_old_task_drop)
        if main:
            print(gate_table(scores, rows))
    if main:
        write_record(staging, record)
        trainer.create_model_card()
    trainer.accelerator.wait_for_everyone()
    place = move_into_place(staging, output_dir, accepted=not failing) if main else None
    trainer.accelerator.wait_for_everyone()
    if failing:
        worst = max(failing, key=lambda row: row["before"] - row["after"])
        others = [row["task"] for row in failing if row is not worst]
        raise UserError(
            f"old task {worst['task']!r} fell from {worst['before']:.4f} to {worst['after']:.4f} "
            f"({worst['metric']}), more than max_old_task_drop {model_args.max_old_task_drop}"
            f"{f' (and {others})' if others else ''}: "
            f"the model was not saved to {output_dir}; it is kept in {place or output_dir + REJECTED_SUFFIX}. Try "
            "add_task_mode heads or lora (old answers unchanged), a larger distill_weight, or the old tasks' own rows"
        )
    return record


def discard_if_unused(staging: str) -> None:
    """Removes the run's folder when it holds nothing but its lock (a run refused before it wrote anything)."""
    from ...utils.output_dir import LOCK_FILE

    if os.path.isdir(staging) and set(os.listdir(staging)) <= {LOCK_FILE}:
        shutil.rmtree(staging)


def move_into_place(staging: str, output_dir: str, *, accepted: bool) -> str:
    """`OUTPUT.incomplete` -> `OUTPUT` (accepted) or `OUTPUT.rejected[-N]` (refused, kept aside); returns where."""
    if accepted:
        target = output_dir
    else:
        target = output_dir + REJECTED_SUFFIX
        number = 2
        while os.path.exists(target):
            target, number = f"{output_dir}{REJECTED_SUFFIX}-{number}", number + 1
    os.replace(staging, target)
    return target


__all__ = [
    "AddedTasks",
    "added_task_model",
    "discard_if_unused",
    "finish",
    "move_into_place",
    "set_training_mode",
    "staging_folder",
    "teacher_of",
]
