"""How a model's answers are calibrated, as its config stores it: a temperature per classification or multilabel
task, and a decision threshold per multilabel label, both chosen on validation rows (`mtl_hf/metrics/calibration.py`
fits them; this file checks and applies them, and travels with a saved model as remote code).

    config.calibration = {
        "category": {"temperature": 1.7, "rows": 400, "data": "...", "ece": {"before": 0.08, "after": 0.02}},
        "tags": {"temperature": 1.2, "thresholds": {"sale": 0.31, "new": 0.55}, "rows": 400, ...},
    }

`review` (optional): the validation rows' precision against confidence, from which `--review_precision` chooses
the cut below which an answer goes to a person (`mtl_hf/metrics/selective.py`).

A classification task's scores are softmax(logits / T), a multilabel task's sigmoid(logits / T): dividing by one
number keeps every argmax and every label's ranking, so accuracy and mAP are unchanged, and only the confidences
move. One temperature per task, not per label: a label has only its own validation rows (a rare label a handful of
positives) to fit a scale on, while a task has all of them; each label's own bias is what its threshold absorbs.
A task without an entry, and a model saved before this field existed, answer at T = 1 and threshold 0.5.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_THRESHOLD = 0.5
ENTRY_FIELDS = {"temperature", "thresholds", "rows", "data", "ece", "review"}


def checked_calibration(calibration: Any, tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`calibration` with every entry checked against the tasks (a known classification or multilabel task; a
    positive finite temperature; thresholds in [0, 1] for the task's own labels)."""
    if not isinstance(calibration, dict):
        raise ValueError(f"calibration must be a dict of task -> {{'temperature': T, ...}}, got {calibration!r}")
    kinds = {task["name"]: task for task in tasks}
    checked = {}
    for name, entry in calibration.items():
        task = kinds.get(name)
        if task is None or task["type"] == "regression":
            answerable = [n for n, t in kinds.items() if t["type"] != "regression"]
            raise ValueError(f"calibration names {name!r}, not a classification or multilabel task ({answerable})")
        if not isinstance(entry, dict) or "temperature" not in entry or set(entry) - ENTRY_FIELDS:
            raise ValueError(
                f"calibration[{name!r}] must be a dict with 'temperature' and optionally "
                f"{sorted(ENTRY_FIELDS - {'temperature'})}, got {entry!r}"
            )
        temperature = entry["temperature"]
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(f"calibration[{name!r}] temperature must be a positive number, got {temperature!r}")
        thresholds = entry.get("thresholds") or {}
        if thresholds and task["type"] != "multilabel":
            raise ValueError(f"calibration[{name!r}]: thresholds are for multilabel tasks; {name!r} is {task['type']}")
        unknown = sorted(set(thresholds) - set(task.get("labels") or ()))
        if unknown:
            raise ValueError(f"calibration[{name!r}] thresholds name labels {unknown} that the task does not have")
        for label, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"calibration[{name!r}] threshold of {label!r} must be in [0, 1], got {value!r}")
        checked[name] = {**entry, "temperature": float(temperature)}
        if thresholds:
            checked[name]["thresholds"] = {label: float(value) for label, value in thresholds.items()}
    return checked


def task_temperature(calibration: dict[str, Any] | None, task: str) -> float:
    """The temperature `task`'s logits are divided by before softmax / sigmoid (1.0 when uncalibrated)."""
    return float(((calibration or {}).get(task) or {}).get("temperature", 1.0))


def label_thresholds(calibration: dict[str, Any] | None, task: str, labels: list[str]) -> list[float]:
    """Each label's decision threshold, in label order: the calibrated one where chosen, else 0.5."""
    chosen = ((calibration or {}).get(task) or {}).get("thresholds") or {}
    return [float(chosen.get(label, DEFAULT_THRESHOLD)) for label in labels]


__all__ = ["DEFAULT_THRESHOLD", "checked_calibration", "label_thresholds", "task_temperature"]
