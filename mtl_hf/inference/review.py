"""`--review_precision`: per task, the confidence cut that the model's validation rows say keeps the answers let
through at the target precision (`metrics/selective.py`), and the table that says what each cut costs in coverage.
The answers then carry `{task}_needs_review` and a row-level `needs_review` (`inference/answers.py`)."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import UserError
from ..metrics.selective import RISK_LEVEL, review_cut


def review_cuts(
    config, every_task: float | None, per_task: Mapping[str, float], thresholds: Mapping[str, float], model: str
) -> dict[str, dict[str, float]]:
    """Per task asked (every classification / multilabel task for `every_task`), its cut and what the validation
    rows say of it (`review_cut`), checked: known tasks with a stored review curve, and no `--threshold` of one's
    own (the curve was measured at the calibrated thresholds)."""
    answerable = [spec.name for spec in config.task_specs if spec.type != "regression"]
    asked = dict.fromkeys(answerable, every_task) if every_task is not None else {}
    unknown = sorted(set(per_task) - set(answerable))
    if unknown:
        raise UserError(
            f"--review_precision names {unknown}: not a classification or multilabel task of {model} ({answerable})"
        )
    asked.update(per_task)
    cuts = {}
    for task, target in asked.items():
        curve = ((config.calibration or {}).get(task) or {}).get("review")
        if curve is None:
            raise UserError(
                f"--review_precision: {model} has no validation record for task {task!r}; run `mtl-hf calibrate "
                f"{model} DATA` on held-out rows first (training does it where it has evaluation rows)"
            )
        if task in thresholds:
            raise UserError(
                f"--review_precision for {task!r} reads the decisions at its calibrated thresholds, which --threshold "
                f"{task}={thresholds[task]} changes: give one of them"
            )
        try:
            cuts[task] = {"target": target, **review_cut(curve, target)}
        except UserError as error:
            raise UserError(f"--review_precision {task}={target}: {error}") from None
    return cuts


def review_table(cuts: Mapping[str, Mapping[str, float]]) -> str:
    """The cuts as `predict` and `serve` print them at start."""
    lines = [
        f"Review queue (answers below the cut go to a person; validation rows, precision promised with "
        f"{1 - RISK_LEVEL:.0%} confidence):",
        f"{'task':<16} {'target':>7} {'cut':>7} {'coverage':>9} {'precision':>9} {'bound':>7}",
    ]
    for task, cut in cuts.items():
        lines.append(
            f"{task:<16} {cut['target']:>7.3f} {cut['cut']:>7.3f} {cut['coverage']:>9.1%} {cut['precision']:>9.3f} "
            f"{cut['bound']:>7.3f}"
        )
    return "\n".join(lines)


__all__ = ["review_cuts", "review_table"]
