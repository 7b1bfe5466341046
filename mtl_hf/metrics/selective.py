"""A review queue at a target precision: per task, the confidence below which an answer goes to a person, chosen
on validation rows so that the answers let through are right at least as often as asked.

An answer's confidence: the calibrated score of the best label (classification); for a multilabel task, the
product over its labels of the probability that each label's decision is right (s where s reaches the label's
threshold, else 1 - s): the chance that the whole set of labels is right. "Right" on a validation row is the same
thing: the best label is the target; every known label decided as labelled.

The cut: the lowest confidence at which the answers at or above it keep precision >= the target, chosen as in
Learn then Test (Angelopoulos et al. 2021): GRID candidate cuts, at 1/GRID, 2/GRID, ... of the validation rows by
confidence (set by the confidences alone, not by which answers were right), each tested with the Clopper-Pearson
lower bound of its precision at level delta / GRID (a Bonferroni correction), and the lowest cut that passes kept.
The precision promised then holds on new rows like the validation rows with probability at least 1 - delta (over
the draw of the validation rows). Fixed-sequence testing, the other common choice, stops at the first cut that
fails, and the most confident cuts, a handful of rows each, fail on one wrong answer. A plain cut (the lowest where
the validation precision reaches the target) is there for comparison: it chooses on the same noise it is scored on
(bench/results/review_queue.md measures what that costs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import beta

from ..errors import UserError
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS

CURVE_POINTS = 512
"""The most cuts a stored curve keeps (evenly spaced over the validation rows, by confidence)."""
RISK_LEVEL = 0.1
"""delta: the chance, over the validation rows drawn, that the promised precision does not hold."""
GRID = 20
"""Candidate cuts tested, at every 1/GRID of the validation rows by confidence."""


def answer_confidence(spec: TaskSpec, scores: np.ndarray, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Each row's confidence in its whole answer (see the module), from calibrated scores (rows, outputs)."""
    if spec.type == "classification":
        return scores.max(-1)
    cuts = np.asarray(thresholds if thresholds is not None else [0.5] * scores.shape[1])
    return np.where(scores >= cuts, scores, 1.0 - scores).prod(-1)


def answer_right(spec: TaskSpec, scores: np.ndarray, targets: np.ndarray, thresholds=None) -> np.ndarray:
    """Per labelled row, whether its answer is right; rows without a target (classification) or without any known
    label (multilabel) are NaN."""
    if spec.type == "classification":
        right = (scores.argmax(-1) == targets).astype(float)
        return np.where(targets == MISSING_CLASS, np.nan, right)
    cuts = np.asarray(thresholds if thresholds is not None else [0.5] * scores.shape[1])
    known = targets != MISSING_CLASS
    decided = (scores >= cuts) == (targets == 1)
    right = np.where(known, decided, True).all(-1).astype(float)
    return np.where(known.any(-1), right, np.nan)


def review_curve(confidence: np.ndarray, right: np.ndarray) -> dict[str, list]:
    """The curve a config stores: at each cut (confidence, descending), the labelled rows at or above it and how many
    of them were right; at most CURVE_POINTS cuts, each exact."""
    labelled = ~np.isnan(right)
    confidence, right = confidence[labelled], right[labelled]
    order = np.argsort(-confidence, kind="stable")
    confidence, right = confidence[order], right[order]
    last = np.flatnonzero(np.append(confidence[1:] != confidence[:-1], True))  # a cut accepts all its equals
    if len(last) > CURVE_POINTS:
        last = last[np.unique(np.linspace(0, len(last) - 1, CURVE_POINTS).round().astype(int))]
    return {
        "confidence": [round(float(c), 7) for c in confidence[last]],
        "accepted": [int(n) for n in last + 1],
        "right": [int(k) for k in np.cumsum(right)[last]],
        "rows": int(len(right)),
    }


def let_through(confidence: np.ndarray, right: np.ndarray, cut: float) -> tuple[float, float]:
    """(the share of labelled answers at or above `cut`, their precision; NaN where none is), on rows other than the
    validation rows the cut was chosen on: what the promise delivered."""
    labelled = ~np.isnan(right)
    through = labelled & (confidence >= cut)
    precision = float(right[through].mean()) if through.any() else float("nan")
    return float(through.sum() / max(labelled.sum(), 1)), precision


def precision_lower_bound(right: np.ndarray, accepted: np.ndarray, level: float = RISK_LEVEL) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of precision at confidence 1 - level."""
    right, accepted = np.asarray(right, float), np.asarray(accepted, float)
    bound = beta.ppf(level, right, accepted - right + 1)
    return np.where(right > 0, bound, 0.0)


def review_cut(curve: dict, target: float, *, rule: str = "bound", level: float = RISK_LEVEL) -> dict[str, float]:
    """The cut for `target` precision on `curve` (`rule` "bound": Learn then Test, see the module; "plain": the
    lowest cut whose validation precision reaches it): `{"cut", "coverage", "precision", "bound"}` on the validation
    rows. UserError where no cut reaches the target, naming the best there is."""
    if not 0.0 < target < 1.0:
        raise UserError(f"a target precision is a share in (0, 1), e.g. 0.98; got {target}")
    accepted, right = np.asarray(curve["accepted"], float), np.asarray(curve["right"], float)
    precision = right / accepted
    if rule == "bound":
        # The candidates: the cut with the most rows within each k/GRID of them (none twice).
        candidates = np.unique(np.searchsorted(accepted, np.arange(1, GRID + 1) / GRID * curve["rows"], "right") - 1)
        candidates = candidates[candidates >= 0]
        tested_level = level / len(candidates)
        bound = np.full(len(accepted), -np.inf)
        bound[candidates] = precision_lower_bound(right[candidates], accepted[candidates], tested_level)
        valid = np.flatnonzero(bound >= target)
    else:
        tested_level = level
        bound = precision_lower_bound(right, accepted, level)
        valid = np.flatnonzero(precision >= target)
    if not len(valid):
        shown = bound if rule == "bound" else precision
        best = int(np.argmax(shown))
        how = f"lower bound ({1 - level:.0%} confidence over {GRID} cuts)" if rule == "bound" else "precision"
        needed = int(np.ceil(np.log(tested_level) / np.log(target)))
        raise UserError(
            f"no confidence cut reaches precision {target} on the {curve['rows']} validation rows: the best {how} is "
            f"{shown[best]:.3f} (observed precision {precision[best]:.3f} on {int(accepted[best])} rows)"
            + (f"; promising {target} needs at least {needed} right answers in a row" if rule == "bound" else "")
        )
    pick = int(valid[-1])
    return {
        "cut": float(curve["confidence"][pick]),
        "coverage": float(accepted[pick] / curve["rows"]),
        "precision": float(precision[pick]),
        "bound": float(bound[pick]),
    }


__all__ = [
    "CURVE_POINTS",
    "GRID",
    "RISK_LEVEL",
    "answer_confidence",
    "answer_right",
    "let_through",
    "precision_lower_bound",
    "review_curve",
    "review_cut",
]
