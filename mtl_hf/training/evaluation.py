"""Evaluation: every task scored on its own evaluation rows, as `MultiTaskTrainer.evaluate` / `predict` report it.

Each source is read in order (every row once, each rank its own share) on the batched inference path
(`inference/batches.py`: DataLoader workers decode, every rank makes the same number of forwards), collated for
the tasks it labels; the ranks' logits, targets and loss sums are gathered in the source's row order, and each
task gets `{prefix}_{task}_{metric}` (its type's metrics and the user's `compute_task_metrics`),
`{prefix}_{task}_loss` and `{prefix}_{task}_relative_score`, plus `{prefix}_loss`, `{prefix}_average_score` and
`{prefix}_relative_score` over the tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.trainer_utils import PredictionOutput, speed_metrics

from ..data.collator import MultiTaskCollator
from ..data.sources import TaskSource
from ..errors import UserError
from ..inference.batches import (
    BatchOutputs,
    inference_loader,
    padding_pixels,
    run_batches,
    source_batches,
)
from ..metrics import PRIMARY_METRIC
from ..metrics.scoring import chance_scores, relative_score, task_metrics
from ..utils.collectives import gather_from_ranks, is_distributed
from .tallies import BadImageTally

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .trainer import MultiTaskTrainer


def named_sources(data: Any) -> dict[str, TaskSource]:
    """Evaluation data as `{name: source}`: one source, a list of them, or a mapping."""
    if data is None:
        return {}
    if isinstance(data, TaskSource):
        return {data.name: data}
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, Sequence) and all(isinstance(s, TaskSource) for s in data):
        return {source.name: source for source in data}
    raise UserError(f"evaluation data must be TaskSource(s) or a dict of them, got {type(data).__name__}")


@torch.no_grad()
def predict_sources(trainer: MultiTaskTrainer, sources: Mapping[str, TaskSource], prefix: str) -> PredictionOutput:
    """Per-task logits and targets (dicts task -> array, each source's rows in its order, the sources one after
    the other) of every source, and the metrics of every task."""
    if not sources:
        raise UserError("nothing to evaluate: pass eval_dataset (task sources) to the trainer or to evaluate()")
    started = time.time()
    args = trainer.args
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    transform = trainer.image_transforms.eval()
    padding = padding_pixels(transform)
    distributed = args.world_size > 1 and is_distributed()
    skipping = {source.name: source.num_rows for source in sources.values() if source.bad_image_policy == "skip"}
    bad_images = BadImageTally(skipping, max_fraction=1.0, device=args.device) if skipping else None
    logits, labels = defaultdict(list), defaultdict(list)
    unknown_rows: dict[str, float] = defaultdict(float)
    skipped: dict[str, float] = defaultdict(float)  # photos left out, by the error that kept them from decoding
    rows = 0
    for source in sources.values():
        source.reset_unknown_labels()
        unknown = [name for name in source.task_names if name not in trainer.task_specs]
        if unknown:
            raise UserError(f"eval source {source.name!r} has task(s) {unknown} that the model lacks")
        batch_size = args.per_device_eval_batch_size
        total = None if source.num_rows is None else math.ceil(source.num_rows / args.world_size / batch_size)
        progress = tqdm(
            total=total,
            desc=f"{prefix}: {source.name}",
            unit="batch",
            leave=False,
            disable=args.disable_tqdm or not trainer.is_local_process_zero(),
        )
        # A batch of one source: targets and heads for its tasks only.
        specs = [trainer.task_specs[name] for name in source.task_names]
        loader = inference_loader(
            source_batches(source, batch_size, args.process_index, args.world_size),
            MultiTaskCollator(specs, transform, for_inference=True, uint8_pixels=True),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
        )
        mine = _SourceOutputs(source.task_names)
        for batch in run_batches(
            model,
            loader,
            padding=padding,
            prepare=trainer._prepare_inputs,
            autocast=trainer.compute_loss_context_manager,
            tasks=source.task_names,
            with_labels=True,
            distributed=distributed,
            device=args.device,
        ):
            progress.update()
            if bad_images is not None:
                bad_images.add(batch.image_counts)
            for _, kind, _ in batch.skipped_rows:
                skipped[kind] += 1
            mine.add(batch)
        progress.close()
        everyone = _SourceOutputs.merged(gather_from_ranks(mine, distributed))
        rows += len(everyone.positions)
        for name in source.task_names:
            logits[name].append(everyone.logits[name])
            labels[name].append(everyone.labels[name])
        for task, count in source.rows_with_unknown_labels().items():
            unknown_rows[task] += count
    logits = {name: np.concatenate(parts) for name, parts in logits.items()}
    labels = {name: np.concatenate(parts) for name, parts in labels.items()}
    metrics = task_scores(trainer, logits, labels, prefix)
    # Rows whose label the model does not know are left out of their task's scores: how many is part of the score.
    unknown_rows = _gather_sums(unknown_rows, distributed)
    metrics.update({f"{prefix}_{task}_unknown_labels": int(count) for task, count in unknown_rows.items() if count})
    if bad_images is not None:  # counted, not limited: evaluation reports what the data holds
        metrics.update({f"{prefix}_{key}": count for key, count in bad_images.check().items()})
        skipped = _gather_sums(skipped, distributed)
        metrics.update({f"{prefix}_skipped_{kind}": int(count) for kind, count in sorted(skipped.items()) if count})
        metrics[f"{prefix}_rows_scored"] = rows
    metrics.update(speed_metrics(prefix, started, num_samples=rows))
    return PredictionOutput(predictions=logits, label_ids=labels, metrics=metrics)


class _SourceOutputs:
    """One source's outputs on one rank (positions, logits, targets), and merged over the ranks in the source's
    row order."""

    def __init__(self, task_names: Sequence[str]):
        self.task_names = list(task_names)
        self.positions: list[np.ndarray] | np.ndarray = []
        self.logits: dict = {name: [] for name in task_names}
        self.labels: dict = {name: [] for name in task_names}

    def add(self, batch: BatchOutputs) -> None:
        if not len(batch.positions):
            return
        self.positions.append(batch.positions)
        for name in self.task_names:
            self.logits[name].append(batch.logits[name])
            self.labels[name].append(batch.labels[name])

    @classmethod
    def merged(cls, parts: Sequence[_SourceOutputs]) -> _SourceOutputs:
        merged = cls(parts[0].task_names)
        positions = np.concatenate([np.zeros(0, np.int64), *(p for part in parts for p in part.positions)])
        order = np.argsort(positions, kind="stable")
        merged.positions = positions[order]
        for name in merged.task_names:
            merged.logits[name] = _concatenated([v for part in parts for v in part.logits[name]])[order]
            merged.labels[name] = _concatenated([v for part in parts for v in part.labels[name]])[order]
        return merged


def _concatenated(values: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(values) if values else np.zeros(0, np.float32)


def task_scores(trainer: MultiTaskTrainer, logits, labels, prefix: str) -> dict[str, float]:
    """Every evaluated task's metrics (its type's and the user's `compute_task_metrics`), its loss and its
    relative score; the mean loss over tasks, the average main score and the mean relative score.

    A task's loss is the model's, over all its rows at once, so that it does not depend on how they were batched
    (a mean of batch means would weigh a row by its batch's labelled rows)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    metrics, primaries, relatives = {}, {}, {}
    for name, values in logits.items():
        spec = trainer.task_specs[name]
        scores = task_metrics(spec, values, labels[name], trainer.args.multilabel_threshold)
        if trainer.compute_task_metrics is not None:
            scores.update(user_task_metrics(trainer.compute_task_metrics, spec, values, labels[name], scores))
        metrics.update({f"{prefix}_{name}_{key}": value for key, value in scores.items() if key != "count"})
        metrics[f"{prefix}_{name}_loss"] = float(
            model.task_loss_of_logits(name, torch.from_numpy(values), torch.from_numpy(labels[name]))
        )
        metric = PRIMARY_METRIC[spec.type]
        primaries[name] = scores[metric]
        chance = chance_scores({name: spec}, {name: labels[name]}, trainer.args.multilabel_threshold, prefix)
        relatives[name] = relative_score(scores[metric], chance[f"{prefix}_{name}_{metric}"])
        metrics[f"{prefix}_{name}_relative_score"] = relatives[name]
    metrics[f"{prefix}_loss"] = float(np.mean([metrics[f"{prefix}_{n}_loss"] for n in logits]))
    unscored = [name for name, score in relatives.items() if math.isnan(score)]
    if unscored:
        # A task without a single target in these rows, or whose rows all share one label, has no score: the
        # averages leave it out, and say so.
        metrics[f"{prefix}_unscored_tasks"] = len(unscored)
        logger.warning(
            f"{prefix}: task(s) {unscored} have no targets in these rows (or only one label, which the chance "
            f"answer gets right) and no score; {prefix}_average_score and {prefix}_relative_score are the means "
            f"over the other {len(relatives) - len(unscored)} task(s)"
        )
    scored = [score for score in primaries.values() if not math.isnan(score)]
    metrics[f"{prefix}_average_score"] = float(np.mean(scored)) if scored else math.nan
    scored = [score for score in relatives.values() if not math.isnan(score)]
    metrics[f"{prefix}_relative_score"] = float(np.mean(scored)) if scored else math.nan
    return metrics


def user_task_metrics(function, spec, logits: np.ndarray, targets: np.ndarray, built_in: Mapping) -> dict[str, float]:
    """The user's metrics of one task, from the rows that have a target: checked to be a dict of numbers whose
    names are new."""
    present = targets >= 0 if spec.type != "regression" else ~np.isnan(targets)
    if present.ndim > 1:
        present = present.all(axis=1)
    scores = function(spec.name, logits[present], targets[present])
    where = f"compute_task_metrics for task {spec.name!r}"
    if not isinstance(scores, Mapping):
        raise UserError(f"{where} returned {type(scores).__name__}; return a dict of metric name -> number")
    for key, value in scores.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise UserError(f"{where}: metric name {key!r} must be letters, digits and underscores")
        if key in built_in or key in ("loss", "relative_score"):
            raise UserError(f"{where}: metric {key!r} is one of the task's own metrics; give yours another name")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise UserError(f"{where}: metric {key!r} is {value!r}; metrics must be numbers")
    return {key: float(value) for key, value in scores.items()}


def _gather_sums(values: dict[str, float], distributed: bool) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for part in gather_from_ranks(dict(values), distributed):
        for name, value in part.items():
            totals[name] += value
    return dict(totals)


__all__ = ["named_sources", "predict_sources", "task_scores"]
