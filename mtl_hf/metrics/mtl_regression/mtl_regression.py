"""MSE, MAE and R^2 of real-valued predictions, skipping missing targets (NaN)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "MSE, MAE and R^2 for a regression task (averaged over outputs); NaN references are skipped."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): predicted values, one list per example.
    references (`list[list[float]]`): true values, NaN where missing.
Returns:
    mse, mae, r2 (`float`): over the present entries, r2 averaged over the outputs; count (`int`).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MtlRegression(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        predicted = np.asarray(predictions, dtype=np.float64)
        targets = np.asarray(references, dtype=np.float64)
        present = ~np.isnan(targets)
        if not present.any():
            return {"mse": float("nan"), "mae": float("nan"), "r2": float("nan"), "count": 0}
        errors = np.where(present, predicted - np.nan_to_num(targets), 0.0)
        count = present.sum()
        r2_per_output = []
        for k in range(targets.shape[1]):
            column = targets[present[:, k], k]
            if len(column) < 2:
                continue
            residual = ((predicted[present[:, k], k] - column) ** 2).sum()
            total = ((column - column.mean()) ** 2).sum()
            r2_per_output.append(1.0 - residual / total if total > 0 else float("nan"))
        return {
            "mse": float((errors**2).sum() / count),
            "mae": float(np.abs(errors).sum() / count),
            "r2": float(np.mean(r2_per_output)) if r2_per_output else float("nan"),
            "count": int(count),
        }
