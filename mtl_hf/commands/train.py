"""`mtl-hf train` and `recipes/train.py`: one recipe YAML in, a trained and scored model out.

    accelerate launch recipes/train.py recipes/configs/demo.yaml [--key value ...]

The YAML holds the fields of `ModelArguments`, `DataArguments` and `MultiTaskTrainingArguments`
side by side; flags after it override the YAML's values. `run()` reads top to bottom:
data -> tasks (from the data) -> model -> trainer -> train -> save (model, image processor, curves,
card) -> evaluate every task against chance -> push if asked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MissingPathError
from .parsing import user_errors_in_one_line
from .recipe.parser import parse_recipe

if TYPE_CHECKING:
    from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
    from ..training.arguments import MultiTaskTrainingArguments
    from ..training.trainer import MultiTaskTrainer
    from .recipe.arguments import DataArguments, ModelArguments

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None, *, prog: str = "recipes/train.py") -> dict[str, float]:
    """`recipes/train.py CONFIG.yaml [--key value ...]`: parse, then run the stages.

    A user's mistake (an unknown key, a bad value, a missing path, an output_dir in use) ends the
    program with one line naming it and exit code 2; other errors keep their traceback.
    """
    with user_errors_in_one_line(prog):
        return run(*parse_recipe(sys.argv[1:] if argv is None else argv, prog=prog))


def run(model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments):
    """The recipe's stages, top to bottom; returns the evaluation metrics."""
    from .. import register_with_transformers
    from ..utils.output_dir import output_dir_lock

    register_with_transformers()  # the `mtl-hf` command defers it past parsing (mtl_hf/__init__.py)
    _set_up_logging(training_args)
    output_dir = training_args.output_dir
    if model_args.add_tasks_to:  # written aside, moved to output_dir once the old tasks pass their gate
        from .recipe.task_addition import staging_folder

        training_args.output_dir = staging_folder(output_dir, check=training_args.process_index == 0)
    # First: two runs must not write into one folder.
    with output_dir_lock(training_args.output_dir, is_main_process=training_args.process_index == 0):
        try:
            return _run_stages(model_args, data_args, training_args, output_dir)
        except BaseException:
            if model_args.add_tasks_to and training_args.process_index == 0:
                from .recipe.task_addition import discard_if_unused

                discard_if_unused(training_args.output_dir)  # refused before it held anything: no folder left
            raise


def _run_stages(
    model_args: ModelArguments, data_args: DataArguments, training_args: MultiTaskTrainingArguments, output_dir: str
):
    import torch
    from transformers import set_seed

    from ..data.transforms import ImageTransforms
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel
    from ..training.trainer import MultiTaskTrainer
    from ..utils.output_dir import claim_output_dir
    from .recipe.assembly import build_model, load_data, recipe_task_specs

    resume_point = _resume_point(training_args)
    if resume_point is None:  # before any work: a previous run there is not replaced by accident
        claim_output_dir(
            training_args.output_dir,
            overwrite=training_args.overwrite_output_dir,
            is_main_process=training_args.process_index == 0,
        )

    # 1. Data: training and evaluation sources; the tasks and their label names come from them.
    train_sources, eval_sources = load_data(data_args, seed=training_args.seed)
    task_specs = recipe_task_specs(train_sources)
    # The thread count changes the order of float sums, so runs with different counts differ in
    # the last digits (`accelerate launch` without a config sets OMP_NUM_THREADS=1).
    logger.info(
        "training on %s; evaluating on %s; CPU threads per process: %d (OMP_NUM_THREADS=%s)",
        train_sources,
        eval_sources or "nothing",
        torch.get_num_threads(),
        os.environ.get("OMP_NUM_THREADS", "unset"),
    )

    # 2. Model and image processor (seeded first: fresh heads start the same on every rank and run).
    set_seed(training_args.seed)
    added = gate_rows = teacher = None
    if model_args.add_tasks_to:
        added, gate_rows, teacher = _tasks_added(model_args, data_args, training_args, task_specs)
        model, image_processor = added.model, added.processor
    else:
        model, image_processor = build_model(model_args, task_specs)
    transforms = ImageTransforms.from_image_processor(image_processor, train=data_args.augment)

    # 3. Trainer.
    trainer = MultiTaskTrainer(
        model,
        training_args,
        train_dataset=train_sources,
        eval_dataset=eval_sources or None,
        processing_class=image_processor,
        image_transforms=transforms,
        teacher=teacher,
    )

    # 4. Train, resuming from the last checkpoint when asked; a finished run is left as it is.
    resume = trainer.resolve_checkpoint(resume_point)
    if resume is not None:
        reached, planned = trainer.completed_steps(resume)
        if reached >= planned:
            if trainer.is_world_process_zero():
                print(
                    f"the run in {training_args.output_dir} is complete ({resume} reached step {reached} of "
                    f"{planned}); nothing to do. Raise num_train_epochs or max_steps to train further."
                )
            return {}
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_metrics("train", train_result.metrics)

    # 5. Save the model, image processor, curves and card before evaluating: a failing evaluation
    #    (a corrupt image in the evaluation data) never loses the training.
    trainer.save_state()
    trainer.save_model()
    if model_args.backbone_output_dir:
        if trainer.is_world_process_zero():
            # From the folder Trainer's save gathered from every rank (FSDP's shards included), not from this rank's
            # live module, which may hold a shard: file work on one rank, no collective.
            saved = MultiTaskViTModel.from_pretrained(training_args.output_dir)
            saved.save_backbone(model_args.backbone_output_dir)
            image_processor.save_pretrained(model_args.backbone_output_dir)
        trainer.accelerator.wait_for_everyone()

    # 6. Evaluate every task, beside answers that ignore the image, and calibrate on those rows; the card then shows
    #    the scores and the calibration.
    metrics = _evaluate_against_chance(trainer, eval_sources, task_specs) if eval_sources else {}
    if not eval_sources:
        _keep_calibration_true(trainer)

    # 7. Tasks added to a saved model: its old tasks scored before and after, then the folder moved into place.
    if added is not None:
        from .recipe.task_addition import finish

        finish(trainer, added, gate_rows, model_args, output_dir)
        training_args.output_dir = output_dir

    # 8. Push when asked.
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="mtl_hf: end of training")  # saves the folder, then uploads it
    if trainer.is_world_process_zero():
        print(
            f"model, image processor, all_results.json, training_curves.png and README.md saved to "
            f"{training_args.output_dir}/"
        )
    return metrics


def _tasks_added(model_args, data_args, training_args, task_specs):
    """The saved model with the new heads, what trains, the old tasks' held-out rows (refused at once when a gate
    was asked for and there are none), and the teacher of `full` mode."""
    from .recipe.assembly import model_location
    from .recipe.old_task_gate import old_task_rows, require_rows
    from .recipe.task_addition import added_task_model, set_training_mode, teacher_of

    name, mode = model_args.add_tasks_to, model_args.add_task_mode
    location = model_location(name)
    added = added_task_model(name, location, task_specs, mode)
    set_training_mode(training_args, mode, added)
    rows = old_task_rows(
        name, location, added.original.config, model_args.old_data, model_args.old_split, data_args.image_column
    )
    require_rows(rows, name, model_args.max_old_task_drop)
    return added, rows, teacher_of(added, mode, training_args)


def _evaluate_against_chance(trainer: MultiTaskTrainer, eval_sources, task_specs) -> dict[str, float]:
    """Every task's metrics on the evaluation rows, saved and logged beside its chance score; the card then
    shows both."""
    from ..metrics.scoring import chance_scores

    prediction = trainer.predict(eval_sources, metric_key_prefix="eval")
    metrics = prediction.metrics
    trainer.log(metrics)  # into the logs (curves, card, TensorBoard) like any evaluation
    trainer.save_metrics("eval", metrics)
    baselines = chance_scores(trainer.task_specs, prediction.label_ids, trainer.args.multilabel_threshold)
    trainer.save_metrics("eval_chance", baselines, combined=False)
    trainer.save_state()
    _keep_calibration_true(trainer, prediction, eval_sources)
    trainer.create_model_card()
    if trainer.is_world_process_zero():
        print(results_table(task_specs, metrics, baselines))
    return metrics


def _keep_calibration_true(trainer: MultiTaskTrainer, prediction=None, eval_sources=None) -> None:
    """Drops the calibration of tasks whose answers training moved, fits every task on the evaluation rows (when
    there are any), and saves the config (and a reliability diagram) beside the weights."""
    from ..metrics.calibration import calibration_table
    from ..metrics.reliability import DIAGRAM_FILE, plot_reliability
    from ..training.calibration_update import drop_stale_calibration, update_calibration

    model = trainer.accelerator.unwrap_model(trainer.model)
    had = model.config.calibration
    stale = drop_stale_calibration(model)
    report = ""
    if stale:
        report = f"\ncalibration of {stale} dropped: training moved their answers, and no evaluation rows refit it"
    if prediction is not None:
        where = ", ".join(f"{source.name} ({source.num_rows} rows)" for source in eval_sources)
        fitted, left = update_calibration(model, prediction.predictions, prediction.label_ids, where)
        stale = [task for task in stale if task not in {fit.task for fit in fitted}]
        report = calibration_table(fitted, left, f"the evaluation rows, {where}") + (
            f"\ncalibration of {stale} dropped: training moved their answers" if stale else ""
        )
    if not trainer.is_world_process_zero():
        return
    if report:
        print(report)
    if model.config.calibration == had:
        return
    output_dir = Path(trainer.args.output_dir)
    model.config.save_pretrained(output_dir)
    if prediction is not None:
        temperatures = {task: entry["temperature"] for task, entry in (model.config.calibration or {}).items()}
        plot_reliability(
            model.config.task_specs,
            prediction.predictions,
            prediction.label_ids,
            temperatures,
            output_dir / DIAGRAM_FILE,
            title="reliability on the evaluation rows the temperatures were fitted on",
        )


def results_table(task_specs: Sequence[TaskSpec], metrics: dict[str, float], chance: dict[str, float]) -> str:
    """Each task's main score beside its chance score, as the recipe prints it at the end."""
    from ..metrics import PRIMARY_METRIC
    from ..metrics.scoring import at_or_below_chance

    rows = [f"\n{'task':<14} {'type':<15} {'metric':<9} {'score':>7} {'chance':>7}"]
    for spec in task_specs:
        key = f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"
        if key in metrics:
            flag = "  at or below chance" if at_or_below_chance(metrics[key], chance[key]) else ""
            rows.append(
                f"{spec.name:<14} {spec.type:<15} {PRIMARY_METRIC[spec.type]:<9} "
                f"{metrics[key]:>7.3f} {round(chance[key], 3) + 0.0:>7.3f}{flag}"  # no -0.000
            )
    rows.append("(chance: the most frequent class; every label 'yes'; the mean value)")
    return "\n".join(rows)


def _resume_point(training_args: MultiTaskTrainingArguments) -> str | bool | None:
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", "no", "none", ""):
        return None
    if str(resume).lower() in ("true", "yes", "last"):
        return True  # MultiTaskTrainer.train finds the last checkpoint in output_dir
    if not os.path.isdir(resume):
        raise MissingPathError(f"resume_from_checkpoint: no checkpoint folder at {resume}")
    return resume


def _set_up_logging(training_args: MultiTaskTrainingArguments) -> None:
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.should_log else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


if __name__ == "__main__":
    main()
