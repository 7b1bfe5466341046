"""`MultiTaskImageClassificationPipeline`: every task's answer for each image, from one forward pass.

Remote code: saved models carry this file (and `images_mtl_vit.py`) and name it in config.json's
`custom_pipelines`, so that `pipeline(model=..., trust_remote_code=True)` runs it where mtl_hf is not installed.
Where it is, the class is registered with transformers as `"multi-task-image-classification"`:

    >>> from transformers import pipeline
    >>> classify = pipeline("multi-task-image-classification", model="path/or/hub-id")
    >>> classify("photo.jpg")
    {"category": [{"label": "shoe", "score": 0.97}, ...], "tags": [{"label": "sale", "score": 0.81}],
     "size": [{"label": "size", "value": 0.62}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

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
    Runs a `MultiTaskViTModel` on images and answers, for each image, a dict task -> result:

    - classification: the `top_k` labels with their softmax scores, best first;
    - multilabel: the labels whose sigmoid score reaches its threshold, best first (at most `top_k`);
    - regression: one `{"label", "value"}` per output (the label is the task's name, with the
      output's index when it has several).

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
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, top_k=None, threshold=None, tasks=None, timeout=None):
        preprocess, postprocess = {}, {}
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

    def postprocess(self, model_outputs, top_k: int = 5, threshold: float | None = None, tasks=None) -> dict[str, Any]:
        results = {}
        calibration = getattr(self.model.config, "calibration", None)
        for spec in self.model.config.task_specs:
            if tasks is not None and spec.name not in tasks:
                continue
            logits = model_outputs[spec.name][0].float()
            if spec.type == "regression":
                values = logits.tolist()
                names = [spec.name] if len(values) == 1 else [f"{spec.name}_{i}" for i in range(len(values))]
                results[spec.name] = [{"label": n, "value": v} for n, v in zip(names, values, strict=True)]
                continue
            logits = logits / task_temperature(calibration, spec.name)
            if spec.type == "classification":
                scores = torch.softmax(logits, dim=-1)
                keep = torch.ones_like(scores, dtype=torch.bool)
            else:
                scores = torch.sigmoid(logits)
                cuts = [threshold] * len(spec.labels) if threshold is not None else None
                keep = scores >= torch.tensor(cuts or label_thresholds(calibration, spec.name, spec.labels))
            order = [i for i in torch.argsort(scores, descending=True).tolist() if keep[i]][:top_k]
            results[spec.name] = [{"label": spec.labels[i], "score": float(scores[i])} for i in order]
        return results


__all__ = ["REMOTE_PIPELINE", "REMOTE_PIPELINE_TASK", "MultiTaskImageClassificationPipeline"]
