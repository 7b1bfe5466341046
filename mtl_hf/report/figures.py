"""The report's pictures, as PNG bytes: per task, its confusion matrix (classification), precision against recall
per label (multilabel), predicted against true (regression), its reliability diagram; and thumbnails of photos."""

from __future__ import annotations

import io

import numpy as np

from ..metrics.reliability import plot_reliability
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from ..errors import missing_extra

        raise missing_extra("mtl-hf report", "plots", "matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    _pyplot().close(figure)
    return buffer.getvalue()


def confusion_figure(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray) -> bytes:
    """Rows: the given label; columns: the answer; each cell the count, shaded by the share of its row."""
    plt = _pyplot()
    known = targets != MISSING_CLASS
    given, answered, classes = targets[known].astype(int), logits[known].argmax(-1), spec.num_outputs
    counts = np.zeros((classes, classes), int)
    np.add.at(counts, (given, answered), 1)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 2.5 + 0.45 * classes
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(classes):
        for column in range(classes):
            if counts[row, column]:
                colour = "white" if shares[row, column] > 0.5 else "black"
                axis.text(column, row, counts[row, column], ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(range(classes), spec.labels, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(classes), spec.labels, fontsize=7)
    axis.set(xlabel="answered", ylabel="given label", title=f"{spec.name}: confusion ({known.sum()} rows)")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the given label's rows")
    return _png(figure)


def precision_recall_figure(spec: TaskSpec, scores: np.ndarray, targets: np.ndarray) -> bytes:
    """Per label, precision against recall as its threshold moves; its average precision in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4))
    for column, label in enumerate(spec.labels):
        known = targets[:, column] != MISSING_CLASS
        truth = targets[known, column] == 1
        if not truth.any() or truth.all():
            continue
        precision, recall, _ = precision_recall_curve(truth, scores[known, column])
        average = average_precision_score(truth, scores[known, column])
        axis.plot(recall, precision, label=f"{label} (AP {average:.2f})")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{spec.name}: precision-recall")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


def regression_figure(spec: TaskSpec, predicted: np.ndarray, targets: np.ndarray) -> bytes:
    """Predicted against true values, with the line where they agree."""
    plt = _pyplot()
    predicted, targets = predicted.reshape(len(predicted), -1)[:, 0], targets.reshape(len(targets), -1)[:, 0]
    known = ~np.isnan(targets)
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(targets[known], predicted[known], s=6, alpha=0.5)
    low, high = np.nanmin(targets[known]), np.nanmax(targets[known])
    axis.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=0.8)
    axis.set(xlabel="true value", ylabel="predicted", title=f"{spec.name}: predicted against true")
    axis.grid(alpha=0.3)
    return _png(figure)


def reliability_figure(spec: TaskSpec, logits: np.ndarray, targets: np.ndarray, temperature: float | None) -> bytes:
    """`metrics/reliability.py`'s diagram for one task (raw scores, and calibrated where it has a temperature)."""
    buffer = io.BytesIO()
    temperatures = {spec.name: temperature} if temperature is not None else {}
    title = "these rows, raw and calibrated scores" if temperature is not None else "these rows (not calibrated)"
    plot_reliability([spec], {spec.name: logits}, {spec.name: targets}, temperatures, buffer, title=title)
    return buffer.getvalue()


def thumbnail(image, size: int = 112) -> bytes:
    """A decoded photo as a small JPEG."""
    picture = image.convert("RGB")
    picture.thumbnail((size, size))
    if max(picture.size) < size:  # a tiny photo (the digits' 8x8 scans) is shown large enough to see
        scale = size / max(picture.size)
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), resample=0)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


__all__ = [
    "confusion_figure",
    "precision_recall_figure",
    "regression_figure",
    "reliability_figure",
    "thumbnail",
]
