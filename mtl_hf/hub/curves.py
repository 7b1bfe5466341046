"""Per-task training curves as one PNG, drawn from `Trainer.state.log_history`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..metrics import PRIMARY_METRIC
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec

logger = logging.getLogger(__name__)


def curve_points(log_history: Sequence[dict[str, Any]], task_specs: Sequence[TaskSpec]) -> dict[str, dict]:
    """`{"loss": {task: (steps, values)}, "eval_loss": {...}, "metric": {...}}` from the logs.

    Training losses come from the `loss_<task>` entries MultiTaskTrainer logs; evaluation losses
    and main metrics from the `eval_<task>_loss` / `eval_<task>_<metric>` entries.
    """
    curves: dict[str, dict[str, tuple[list, list]]] = {"loss": {}, "eval_loss": {}, "metric": {}}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for spec in task_specs:
            for kind, key in [
                ("loss", f"loss_{spec.name}"),
                ("eval_loss", f"eval_{spec.name}_loss"),
                ("metric", f"eval_{spec.name}_{PRIMARY_METRIC[spec.type]}"),
            ]:
                if key in entry:
                    steps, values = curves[kind].setdefault(spec.name, ([], []))
                    steps.append(step)
                    values.append(entry[key])
    return curves


def plot_training_curves(
    log_history: Sequence[dict[str, Any]], task_specs: Sequence[TaskSpec], path: str | Path
) -> Path | None:
    """Draws each task's loss (training, and evaluation when logged) and main metric; returns the PNG's path.

    Returns None, and writes nothing, when the logs hold no per-task loss yet, or when matplotlib (the
    `plots` extra) is not installed: then a warning says so, once, and the card goes without the picture.
    """
    curves = curve_points(log_history, task_specs)
    if not curves["loss"] and not curves["eval_loss"]:
        return None
    try:
        import matplotlib
    except ImportError:
        _warn_once("training_curves.png is not drawn: matplotlib is not installed (pip install 'mtl_hf[plots]')")
        return None

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    figure, (loss_axes, metric_axes) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    colours = {spec.name: f"C{i % 10}" for i, spec in enumerate(task_specs)}
    for name, (steps, values) in curves["loss"].items():
        loss_axes.plot(steps, values, color=colours[name], label=f"{name} (train)")
    for name, (steps, values) in curves["eval_loss"].items():
        loss_axes.plot(steps, values, color=colours[name], linestyle="--", marker="o", label=f"{name} (eval)")
    # Log scale: the tasks' losses differ by orders of magnitude (a regression MSE of 0.01 beside a
    # cross-entropy of 2), and on a linear axis the small ones sit flat at 0 after a few hundred steps.
    all_losses = [value for kind in ("loss", "eval_loss") for _, values in curves[kind].values() for value in values]
    if all(value > 0 for value in all_losses):
        loss_axes.set_yscale("log")
    else:
        loss_axes.set_yscale("symlog", linthresh=1e-3)
    loss_axes.set(title="Loss per task (log scale)", xlabel="step", ylabel="loss")
    loss_axes.legend(fontsize="small")

    specs = {spec.name: spec for spec in task_specs}
    for name, (steps, values) in curves["metric"].items():
        metric_axes.plot(
            steps, values, color=colours[name], marker="o", label=f"{name} ({PRIMARY_METRIC[specs[name].type]})"
        )
    metric_axes.set(title="Evaluation metric per task", xlabel="step", ylabel="score")
    if curves["metric"]:
        metric_axes.legend(fontsize="small")
    else:
        metric_axes.text(
            0.5, 0.5, "no evaluation during training", ha="center", va="center", transform=metric_axes.transAxes
        )
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


__all__ = ["curve_points", "plot_training_curves"]
