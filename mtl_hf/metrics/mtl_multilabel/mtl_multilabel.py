"""Micro-F1, macro-F1 and mean average precision of multilabel scores, skipping missing entries (-100)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score

_DESCRIPTION = "Micro/macro F1 at a threshold and mAP for a multilabel task; reference entries of -100 are skipped."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): a score per label (probabilities, or logits with `threshold=0`).
    references (`list[list[float]]`): 1/0 per label, -100 where the entry is missing.
    threshold (`float`, optional, defaults to 0.5): scores above it count as predicted labels.
Returns:
    micro_f1, macro_f1, mAP (`float`): mAP averages the average precision of the labels that have
    at least one positive; count (`int`): labelled entries.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MtlMultilabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.5):
        scores = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references, dtype=np.float64)
        present = targets != -100
        predicted = scores > threshold
        positive = (targets == 1) & present
        true_pos = (predicted & positive).sum(axis=0)
        false_pos = (predicted & ~positive & present).sum(axis=0)
        false_neg = (~predicted & positive).sum(axis=0)
        micro_denominator = 2 * true_pos.sum() + false_pos.sum() + false_neg.sum()
        micro_f1 = 2 * true_pos.sum() / micro_denominator if micro_denominator else 0.0
        per_label = np.divide(
            2 * true_pos,
            2 * true_pos + false_pos + false_neg,
            out=np.zeros(len(true_pos)),
            where=(2 * true_pos + false_pos + false_neg) > 0,
        )
        precisions = [
            average_precision_score(positive[present[:, k], k], scores[present[:, k], k])
            for k in range(targets.shape[1])
            if positive[:, k].any()
        ]
        return {
            "micro_f1": float(micro_f1),
            "macro_f1": float(per_label.mean()),
            "mAP": float(np.mean(precisions)) if precisions else float("nan"),
            "count": int(present.sum()),
        }
