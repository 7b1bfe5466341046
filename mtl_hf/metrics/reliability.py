"""Reliability diagrams: per task, how often an answer given with confidence c was right, against c, before and
after calibration (15 equal-width bins, as the expected calibration error counts them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from .calibration import ECE_BINS, expected_calibration_error, labelled, scores_at

DIAGRAM_FILE = "calibration.png"


def reliability_bins(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0):
    """(bin centres, mean confidence, share right, rows) per non-empty bin: the top label's confidence and whether
    it was the target (classification), or each known label's score and whether the label was present."""
    values, truth = labelled(spec, logits, targets)
    scores = scores_at(spec, values, temperature)
    if spec.type == "classification":
        confidence, right = scores.max(-1), scores.argmax(-1) == truth
    else:
        confidence, right = scores, truth == 1
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, ECE_BINS - 1)
    rows = np.bincount(index, minlength=ECE_BINS)
    filled = rows > 0
    mean_confidence = np.bincount(index, confidence, ECE_BINS)[filled] / rows[filled]
    share_right = np.bincount(index, right.astype(float), ECE_BINS)[filled] / rows[filled]
    return (edges[:-1] + edges[1:])[filled] / 2, mean_confidence, share_right, rows[filled]


def plot_reliability(
    specs: Sequence[TaskSpec],
    logits: Mapping[str, np.ndarray],
    targets: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    path,
    *,
    title: str,
) -> Path | None:
    """One panel per classification / multilabel task in `logits`: share right against confidence, at T = 1 and at
    the task's temperature (where it has one), into `path` (a file path, or a binary file object). Returns the PNG's
    path (the file object), or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [spec for spec in specs if spec.type != "regression" and spec.name in logits]
    if not shown:
        return None
    figure, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.8), squeeze=False)
    for axis, spec in zip(axes[0], shown, strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="perfectly calibrated")
        curves = [("raw scores", 1.0, "tab:red")]
        if spec.name in temperatures:
            curves.append((f"T = {temperatures[spec.name]:.2f}", temperatures[spec.name], "tab:blue"))
        for name, temperature, colour in curves:
            _, confidence, right, _ = reliability_bins(spec, logits[spec.name], targets[spec.name], temperature)
            error = expected_calibration_error(spec, logits[spec.name], targets[spec.name], temperature)
            axis.plot(confidence, right, marker="o", markersize=3, color=colour, label=f"{name}: ECE {error:.3f}")
        what = "top label" if spec.type == "classification" else "each label"
        axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"confidence ({what})", ylabel="share right")
        axis.set_title(f"{spec.name} ({spec.type})", fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)
    return Path(path) if isinstance(path, (str, Path)) else path


__all__ = ["DIAGRAM_FILE", "plot_reliability", "reliability_bins"]
