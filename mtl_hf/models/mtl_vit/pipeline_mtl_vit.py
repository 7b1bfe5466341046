"""`MultiTaskImageClassificationPipeline`: every task's answer for each image, from one forward pass.

Remote code: saved models carry this file (and `images_mtl_vit.py`) and name it in config.json's
`custom_pipelines`, so that `pipeline(model=..., trust_remote_code=True)` runs it where mtl_hf is not installed.
Where it is, the class is registered with transformers as `"multi-task-image-classification"`:

    >>> from transformers import pipeline
    >>> classify = pipeline("multi-task-image-classification", model="path/or/hub-id")
    >>> classify("photo.jpg")
    {"schema_version": 1,
     "answers": {"category": {"label": "shoe", "scores": [{"label": "shoe", "score": 0.97}, ...]},
                 "tags": {"labels": ["sale"], "scores": [{"label": "sale", "score": 0.81}, ...]},
                 "size": {"value": 0.62}}}

The answer object is the one `mtl-hf serve` answers with (`answers_mtl_vit.py`). The shape of earlier releases,
task -> [{"label", "score"} or {"label", "value"}, ...], is kept for one release behind `legacy_answers=True`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .answers_mtl_vit import photo_answer
from .calibration_mtl_vit import label_thresholds, task_temperature
from .images_mtl_vit import DECODE_ERRORS, decode_image

# The entry of config.json's `custom_pipelines`. Not "multi-task-image-classification": transformers sends a task
# named there to the remote class and asks for trust_remote_code even where mtl_hf registered the task itself.
REMOTE_PIPELINE_TASK = "mtl-vit-image-classification"
REMOTE_PIPELINE = {
    "impl": "pipeline_mtl_vit.MultiTaskImageClassificationPipeline",
    "pt": ["AutoModel"],
    "tf": [],
    "type": "image",
}


class MultiTaskImageClassificationPipeline(Pipeline):
    r"""
    Runs a `MultiTaskViTModel` on images and answers, for each image, the answer object of
    `answers_mtl_vit.py`; per task:

    - classification: `label`, the best label; `scores`, the `top_k` labels with their softmax scores, best first;
    - multilabel: `labels`, the labels whose sigmoid score reaches its threshold, best first; `scores` as above;
    - regression: `value` (a list for a task with several outputs).

    Images may be PIL images, local file paths, URLs or numpy arrays (`(H, W)`, `(H, W, C)` or
    `(C, H, W)`); a list of images gives a list of results and is run in batches of `batch_size`.
    The model's saved image processor prepares them, as in training. Where the model is calibrated
    (`config.calibration`), the scores are those of its temperatures and each multilabel label has its own
    threshold, chosen on validation rows.

    Call arguments:
        top_k (`int`, defaults to 5): the most labels returned per classification / multilabel task.
        threshold (`float`, *optional*): the score from which every multilabel label is returned (defaults to each
            label's calibrated threshold, 0.5 where it has none).
        tasks (`list[str]`, *optional*): answer these tasks only (all by default).
        timeout (`float`, *optional*): the most seconds to wait for an image URL.
        legacy_answers (`bool`, defaults to False): answer in the shape of earlier releases, task -> list of
            `{"label", "score"}` (the top_k labels; for multilabel the labels over the threshold, at most top_k) or
            `{"label", "value"}` per regression output. Deprecated: it goes in the next release.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, top_k=None, threshold=None, tasks=None, timeout=None, legacy_answers=None):
        preprocess, postprocess = {}, {}
        if legacy_answers:
            warnings.warn(
                "legacy_answers=True: the task -> list answer shape goes in the next release; read the answer object "
                "instead (answer['answers'][task]: label / labels / value, and scores)",
                FutureWarning,
                stacklevel=3,
            )
            postprocess["legacy_answers"] = True
        if timeout is not None:
            preprocess["timeout"] = timeout
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
            postprocess["top_k"] = top_k
        if threshold is not None:
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold must be in [0, 1] (as predict's --threshold), got {threshold!r}")
            postprocess["threshold"] = threshold
        if tasks is not None:
            tasks = [tasks] if isinstance(tasks, str) else list(tasks)
            known = self.model.config.task_names
            unknown = [task for task in tasks if task not in known]
            if unknown:
                raise ValueError(f"unknown task(s) {unknown}; this model's tasks are {known}")
            postprocess["tasks"] = tasks
        # The forward runs only the asked heads: a model with a task adapter then runs one backbone pass, not two.
        return preprocess, {"tasks": tasks} if tasks is not None else {}, postprocess

    def preprocess(self, image, timeout=None):
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            from transformers.image_utils import load_image

            image = load_image(image, timeout=timeout)
        elif isinstance(image, (str, Path)) and not Path(image).is_file():
            raise FileNotFoundError(f"no image file at {image!s}")
        elif not isinstance(image, (str, Path, np.ndarray)) and not hasattr(image, "convert"):
            raise TypeError(f"expected a PIL image, a file path, a URL or a numpy array, got {type(image).__name__}")
        try:
            decoded = decode_image(image)
        except DECODE_ERRORS as error:
            where = f"{image}: " if isinstance(image, (str, Path)) else ""
            raise ValueError(f"{where}cannot decode the image ({type(error).__name__}: {error})") from error
        inputs = self.image_processor(images=decoded, return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"].to(self.dtype)}

    def _forward(self, model_inputs, tasks=None):
        outputs = self.model(pixel_values=model_inputs["pixel_values"], tasks=tasks)
        # Flat task -> logits, so that batches split back into images the way Pipeline does it.
        return dict(outputs.logits)

    def postprocess(
        self, model_outputs, top_k: int = 5, threshold: float | None = None, tasks=None, legacy_answers: bool = False
    ) -> dict[str, Any]:
        answers, legacy = {}, {}
        calibration = getattr(self.model.config, "calibration", None)
        for spec in self.model.config.task_specs:
            if tasks is not None and spec.name not in tasks:
                continue
            logits = model_outputs[spec.name][0].float()
            if spec.type == "regression":
                values = logits.tolist()
                answers[spec.name] = {"value": values[0] if len(values) == 1 else values}
                names = [spec.name] if len(values) == 1 else [f"{spec.name}_{i}" for i in range(len(values))]
                legacy[spec.name] = [{"label": n, "value": v} for n, v in zip(names, values, strict=True)]
                continue
            logits = logits / task_temperature(calibration, spec.name)
            order = torch.argsort(logits, descending=True, stable=True).tolist()
            if spec.type == "classification":
                scores = torch.softmax(logits, dim=-1)
                chosen = order
                answers[spec.name] = {"label": spec.labels[order[0]]}
            else:
                scores = torch.sigmoid(logits)
                cuts = [threshold] * len(spec.labels) if threshold is not None else None
                keep = scores >= torch.tensor(cuts or label_thresholds(calibration, spec.name, spec.labels))
                chosen = [i for i in order if keep[i]]
                answers[spec.name] = {"labels": [spec.labels[i] for i in chosen]}
            answers[spec.name]["scores"] = [{"label": spec.labels[i], "score": float(scores[i])} for i in order[:top_k]]
            legacy[spec.name] = [{"label": spec.labels[i], "score": float(scores[i])} for i in chosen[:top_k]]
        return legacy if legacy_answers else photo_answer(answers)


__all__ = ["REMOTE_PIPELINE", "REMOTE_PIPELINE_TASK", "MultiTaskImageClassificationPipeline"]
