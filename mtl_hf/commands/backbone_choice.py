"""Which backbone `mtl-hf init` starts a recipe from, decided by the training rows per label.

The rule (docs/training.md, "Which backbone init chooses"):
- the rows per label that decide are the smallest, over the classification and multilabel tasks, of each task's
  median training rows per label (a regression task has no labels; its rows are the table's);
- at SCRATCH_ROWS_PER_LABEL or more, a small ViT trained from scratch: it learns from that much (though a
  pretrained start still scored higher there), and trains in minutes on a CPU;
- below, a pretrained DINOv2 from the Hub: ViT-S/14 (`facebook/dinov2-small`, 22M parameters) on a machine
  without a GPU, ViT-B/14 (`facebook/dinov2-base`, 86M) with one; fine-tuned whole with layer-wise learning-rate
  decay, or, below LP_FT_ROWS_PER_LABEL, linear probing then fine-tuning (LP-FT: the heads learn on the frozen
  backbone first, so that their random start does not wreck the pretrained features).

The threshold comes from bench/learning_curve.py (bench/results/learning_curve.md; a ViT of init's recipe,
trained as init's recipes train, from random weights or from the same architecture pretrained offline on drawn
figures): averaged over the labelled tasks, the pretrained start's gain over chance was ahead at every size
measured, by 0.06-0.37 on real scans (4 to 143 rows per label) and 0.04-0.38 on drawn shop photos (4 to 1,024);
at 4 rows per label the from-scratch start was near chance (0.04 and -0.12) where the pretrained one was not
(0.25, 0.24). No size measured makes from-scratch as good; at SCRATCH_ROWS_PER_LABEL (the largest measured) it
reaches useful scores (0.67 mean gain, 1.00 on colour) in minutes on a CPU, while DINOv2-S at 224 px costs
about 80 times its arithmetic per photo (counting the matrix products: 6.1 G multiply-adds against 0.08 G for
init's 64 px ViT), so init proposes it from that size on for its cost and says so; `--backbone
facebook/dinov2-small` chooses the better start whatever the size.
DINOv2 because its frozen features are the strongest published for linear probing (its paper: ViT-S/14 81.1%
ImageNet top-1 with a linear head), which is what few rows per label lean on, under the Apache-2.0 licence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCRATCH_ROWS_PER_LABEL = 1024
"""From this many training rows per label (see the module's docstring) a from-scratch model is proposed."""
LP_FT_ROWS_PER_LABEL = 16
"""Below this many, the pretrained backbone is frozen for the first LP_SHARE of the steps (LP-FT)."""
LP_SHARE = 0.2
PRETRAINED = {"small": "facebook/dinov2-small", "base": "facebook/dinov2-base"}
PARAMETERS = {"small": "22M", "base": "86M"}
LEARNING_RATE = {"small": 1e-4, "base": 5e-5}
"""The backbone's peak learning rate when fine-tuned whole (AdamW, batch 32, cosine): the larger the model, the
smaller the step."""
LAYER_DECAY = {"small": 0.75, "base": 0.65}
"""Layer-wise decay: block i of L trains at learning_rate * decay ** (L - i); the deeper model decays faster."""
HEAD_LEARNING_RATE = 1e-3
"""The new heads start from random weights, so they take a larger step than the pretrained backbone."""


@dataclass(frozen=True)
class RowsPerLabel:
    task: str
    fewest: int
    median: float


@dataclass(frozen=True)
class BackboneChoice:
    """What the recipe starts from, and why."""

    start: str
    """"scratch" or "pretrained"."""
    name: str | None = None
    """The Hub id or local folder of a pretrained backbone."""
    size: str | None = None
    """"small", or "base" for a ViT-B or larger (its learning rate and layer decay are lower)."""
    lp_ft: bool = False
    reason: str = ""

    @property
    def learning_rate(self) -> float:
        return LEARNING_RATE[self.size]

    @property
    def layer_decay(self) -> float:
        return LAYER_DECAY[self.size]


def size_of(name: str) -> str:
    """ "base" for a checkpoint whose name says base, large, huge or giant (vit-base-patch16-224, dinov2-large),
    else "small"."""
    return "base" if re.search(r"(^|[-_/])(base|large|huge|giant)([-_]|$)", name.lower()) else "small"


def rows_per_label(task_surveys) -> list[RowsPerLabel]:
    """Per classification or multilabel task: its fewest and median training rows per label."""
    found = []
    for task in task_surveys:
        if task.spec.type != "regression":
            fewest, median = task.rows_per_label()
            found.append(RowsPerLabel(task.spec.name, fewest, median))
    return found


def deciding(per_label: list[RowsPerLabel]) -> RowsPerLabel | None:
    """The task with the smallest median rows per label: the one the rule decides by."""
    return min(per_label, key=lambda rows: rows.median, default=None)


def choose_backbone(per_label: list[RowsPerLabel], requested: str, *, gpu: bool) -> BackboneChoice:
    """`requested`: "auto" (the rule), "scratch", or a Hub id or local folder of a pretrained backbone."""
    decider = deciding(per_label)
    few = decider is not None and decider.median < LP_FT_ROWS_PER_LABEL
    if decider is None:
        measured = "no task has labels to count"
    else:
        measured = f"{decider.task!r} has a median of {decider.median:g} training rows per label"
    if requested == "scratch":
        return BackboneChoice("scratch", reason=f"--backbone scratch ({measured})")
    if requested != "auto":
        return BackboneChoice(
            "pretrained", requested, size_of(requested), lp_ft=few, reason=f"--backbone {requested} ({measured})"
        )
    if decider is None or decider.median >= SCRATCH_ROWS_PER_LABEL:
        return BackboneChoice(
            "scratch",
            reason=f"{measured}, at least {SCRATCH_ROWS_PER_LABEL}: enough to learn from scratch, quickly on a CPU "
            "(a pretrained start still scores higher: --backbone facebook/dinov2-small)",
        )
    size = "base" if gpu else "small"
    hardware = "a GPU" if gpu else "no GPU"
    return BackboneChoice(
        "pretrained",
        PRETRAINED[size],
        size,
        lp_ft=few,
        reason=f"{measured}, under {SCRATCH_ROWS_PER_LABEL}: a pretrained backbone, DINOv2's {size} one "
        f"({PARAMETERS[size]} parameters, this machine has {hardware})"
        + (f"; under {LP_FT_ROWS_PER_LABEL} per label: linear probing first (LP-FT)" if few else ""),
    )


__all__ = [
    "HEAD_LEARNING_RATE",
    "LP_FT_ROWS_PER_LABEL",
    "PRETRAINED",
    "SCRATCH_ROWS_PER_LABEL",
    "BackboneChoice",
    "RowsPerLabel",
    "choose_backbone",
    "deciding",
    "rows_per_label",
    "size_of",
]
