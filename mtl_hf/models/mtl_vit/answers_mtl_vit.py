"""One photo's answers, as every client gets them: the pipeline (and so `handler.py` on an Inference Endpoint and
`mtl-hf predict IMAGE --json`) and `mtl-hf serve` answer with this object, and `mtl-hf predict --output` writes the
same fields as Parquet columns (docs/answers.md).

    {
      "schema_version": 1,
      "answers": {
        "category": {"label": "shoe", "scores": [{"label": "shoe", "score": 0.97}, ...]},   # classification
        "tags": {"labels": ["sale"], "scores": [{"label": "sale", "score": 0.81}, ...]},    # multilabel
        "size": {"value": 0.62}                                                            # regression
      },
      "needs_review": false
    }

- classification: `label`, the best label; `scores`, the `top_k` best labels with their scores, best first;
- multilabel: `labels`, every label whose score reaches its threshold, best first; `scores` as above;
- regression: `value`, in the targets' units (a list for a task with several outputs);
- `needs_review`, per task and for the photo, only where a review cut was asked (`--review_precision`).

Scores are the calibrated ones where the model has a calibration. Fields may be added within a version; a field
that changes meaning or goes away takes a new `schema_version`.

Remote code: travels with a saved model beside `pipeline_mtl_vit.py`, and imports only the standard library.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
PARQUET_VERSION_KEY = b"mtl_hf.answer_schema_version"
"""The key of the Parquet files' schema metadata that holds `SCHEMA_VERSION`."""


def photo_answer(answers: dict[str, dict[str, Any]], needs_review: bool | None = None) -> dict[str, Any]:
    """One photo's answer object from its per-task answers (and whether a review cut marks it)."""
    answer: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "answers": answers}
    if needs_review is not None:
        answer["needs_review"] = needs_review
    return answer


__all__ = ["PARQUET_VERSION_KEY", "SCHEMA_VERSION", "photo_answer"]
