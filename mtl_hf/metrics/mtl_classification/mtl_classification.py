"""Accuracy and macro-F1 of single-label predictions (class ids), skipping missing targets (-100)."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score

_DESCRIPTION = "Accuracy and macro-F1 for a classification task; references equal to -100 are missing and skipped."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted class ids.
    references (`list[int]`): true class ids, -100 where the label is missing.
    num_labels (`int`, optional): the number of classes, so that macro-F1 averages over all of them.
Returns:
    accuracy (`float`), macro_f1 (`float`), count (`int`): the number of labelled examples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MtlClassification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        present = references != -100
        if not present.any():
            return {"accuracy": float("nan"), "macro_f1": float("nan"), "count": 0}
        labels = list(range(num_labels)) if num_labels else None
        return {
            "accuracy": float((predictions[present] == references[present]).mean()),
            "macro_f1": float(
                f1_score(references[present], predictions[present], labels=labels, average="macro", zero_division=0)
            ),
            "count": int(present.sum()),
        }
