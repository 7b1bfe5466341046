"""Evaluation: every task scored on its own evaluation rows, as `MultiTaskTrainer.evaluate` / `predict` report it.

Each source is read in order (every row once, each rank its own share), collated for the tasks it labels,
and run through the model without gradient; the ranks' logits, targets and loss sums are gathered, and each
task gets `{prefix}_{task}_{metric}` (its type's metrics and the user's `compute_task_metrics`),
`{prefix}_{task}_loss` and `{prefix}_{task}_relative_score`, plus `{prefix}_loss`, `{prefix}_average_score` and
`{prefix}_relative_score` over the tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.trainer_utils import PredictionOutput, speed_metrics

from ..data.collator import MultiTaskCollator
from ..data.mixture import MixtureBatch
from ..data.sources import RawExample, TaskSource
from ..errors import UserError
from ..metrics import PRIMARY_METRIC
from ..metrics.scoring import chance_scores, relative_score, task_metrics
from ..utils.distributed import is_distributed, world_size
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


class _Outputs:
    """This rank's per-task logits, targets and summed losses over the batches seen."""

    def __init__(self):
        self.logits, self.labels = defaultdict(list), defaultdict(list)
        self.loss_sums, self.counts = defaultdict(float), defaultdict(int)
        self.rows = 0

    def add(self, tasks: Sequence[str], outputs, labels: Mapping[str, torch.Tensor], kept: int) -> None:
        self.rows += kept
        for name in tasks:
            self.logits[name].append(outputs.logits[name].float().cpu().numpy())
            self.labels[name].append(labels[name].cpu().numpy())
            self.loss_sums[name] += float(outputs.task_losses[name]) * kept
            self.counts[name] += kept

    def gathered(self):
        """(logits, targets, loss sums, counts, rows) over every rank."""
        rows = int(sum(_gather_sums({"rows": self.rows}).values()))
        return (
            _gather(self.logits),
            _gather(self.labels),
            _gather_sums(self.loss_sums),
            _gather_sums(self.counts),
            rows,
        )


@torch.no_grad()
def predict_sources(trainer: MultiTaskTrainer, sources: Mapping[str, TaskSource], prefix: str) -> PredictionOutput:
    """Per-task logits and targets (dicts task -> array) of every source, and the metrics of every task."""
    if not sources:
        raise UserError("nothing to evaluate: pass eval_dataset (task sources) to the trainer or to evaluate()")
    started = time.time()
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    model.eval()
    collator = MultiTaskCollator(list(trainer.task_specs.values()), trainer.image_transforms.eval())
    skipping = [source.name for source in sources.values() if source.bad_image_policy == "skip"]
    bad_images = BadImageTally(skipping, max_fraction=1.0, device=trainer.args.device) if skipping else None
    outputs = _Outputs()
    unknown_rows: dict[str, float] = defaultdict(float)
    for source in sources.values():
        source.reset_unknown_labels()
        unknown = [name for name in source.task_names if name not in trainer.task_specs]
        if unknown:
            raise UserError(f"eval source {source.name!r} has task(s) {unknown} that the model lacks")
        batch_size = trainer.args.per_device_eval_batch_size
        total = None if source.num_rows is None else math.ceil(source.num_rows / trainer.args.world_size / batch_size)
        progress = tqdm(
            total=total,
            desc=f"{prefix}: {source.name}",
            unit="batch",
            leave=False,
            disable=trainer.args.disable_tqdm or not trainer.is_local_process_zero(),
        )
        for batch in _eval_batches(source, batch_size, trainer.args.process_index, trainer.args.world_size):
            progress.update()
            # A batch of one source: targets and heads for its tasks only.
            inputs = trainer._prepare_inputs(collator(MixtureBatch(batch, tuple(source.task_names))))
            image_counts = inputs.pop("image_counts", None)  # rows left out (bad_image_policy: skip)
            if bad_images is not None:
                bad_images.add(image_counts)
            with trainer.compute_loss_context_manager():
                model_outputs = model(**inputs)
            outputs.add(source.task_names, model_outputs, inputs["labels"], inputs["pixel_values"].shape[0])
        progress.close()
        for task, count in source.rows_with_unknown_labels().items():
            unknown_rows[task] += count
    logits, labels, loss_sums, counts, rows = outputs.gathered()
    metrics = task_scores(trainer, logits, labels, loss_sums, counts, prefix)
    # Rows whose label the model does not know are left out of their task's scores: how many is part of the score.
    unknown_rows = _gather_sums(unknown_rows)
    metrics.update({f"{prefix}_{task}_unknown_labels": int(count) for task, count in unknown_rows.items() if count})
    if bad_images is not None:  # counted, not limited: evaluation reports what the data holds
        metrics.update({f"{prefix}_{key}": count for key, count in bad_images.check().items()})
    metrics.update(speed_metrics(prefix, started, num_samples=rows))
    return PredictionOutput(predictions=dict(logits), label_ids=dict(labels), metrics=metrics)


def task_scores(trainer: MultiTaskTrainer, logits, labels, loss_sums, counts, prefix: str) -> dict[str, float]:
    """Every evaluated task's metrics (its type's and the user's `compute_task_metrics`), its mean loss and its
    relative score; the mean loss over tasks, the average main score and the mean relative score."""
    metrics, primaries, relatives = {}, {}, {}
    for name, values in logits.items():
        spec = trainer.task_specs[name]
        scores = task_metrics(spec, values, labels[name], trainer.args.multilabel_threshold)
        if trainer.compute_task_metrics is not None:
            scores.update(user_task_metrics(trainer.compute_task_metrics, spec, values, labels[name], scores))
        metrics.update({f"{prefix}_{name}_{key}": value for key, value in scores.items() if key != "count"})
        metrics[f"{prefix}_{name}_loss"] = loss_sums[name] / max(counts[name], 1)
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


def _eval_batches(source: TaskSource, batch_size: int, rank: int, world: int) -> Iterator[list[RawExample]]:
    """This rank's rows of `source`, in order, every row once, in batches (the last may be short)."""
    if source.is_streaming:
        rows = source.stream(seed=0, rank=rank, world_size=world, shuffle=False, buffer_size=1)
        batch = []
        for index, row in enumerate(rows):
            batch.append(source.example(row, index))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
        return
    indices = list(range(rank, source.num_rows, world))
    for start in range(0, len(indices), batch_size):
        yield source.rows(indices[start : start + batch_size])


def _gather(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    local = {name: np.concatenate(values) for name, values in parts.items()}
    if not is_distributed():
        return local
    everyone = [None] * world_size()
    torch.distributed.all_gather_object(everyone, local)
    names = sorted({name for part in everyone for name in part})
    return {name: np.concatenate([part[name] for part in everyone if name in part]) for name in names}


def _gather_sums(values: dict[str, float]) -> dict[str, float]:
    if not is_distributed():
        return dict(values)
    everyone = [None] * world_size()
    torch.distributed.all_gather_object(everyone, dict(values))
    totals: dict[str, float] = defaultdict(float)
    for part in everyone:
        for name, value in part.items():
            totals[name] += value
    return dict(totals)


__all__ = ["named_sources", "predict_sources", "task_scores"]
