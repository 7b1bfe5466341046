"""`MultiTaskCollator`: a step's rows -> `{"pixel_values", "labels": {task: tensor}, "tasks"?}`."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Sequence

import torch

from ..errors import BadImageError, UserError
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS, check_target_values
from .images import DECODE_ERRORS
from .mixture import MixtureBatch
from .sources import RawExample
from .transforms import ImageTransforms

logger = logging.getLogger(__name__)


class MultiTaskCollator:
    r"""
    Decodes, transforms and stacks a batch of rows, with the model's missing-target conventions.

    Args:
        task_specs (`list[TaskSpec]`): every task of the mixture (`TaskMixture.task_specs`).
        transform (`ImageTransforms`): the image transform (train or eval variant).
        with_rows (`bool`, *optional*, defaults to `False`): add `"rows"` ("source:row" of each example,
            for reports) to the batch; it is not a model input.
        for_inference (`bool`, *optional*, defaults to `False`): add `"kept"` (the place in the batch of each
            example whose image was decoded) and `"skipped_rows"` (`(row, error type, message)` of each one left
            out), and
            give a batch whose images all failed `pixel_values=None` instead of an error: inference reports
            broken photos and carries on.
        uint8_pixels (`bool`, *optional*, defaults to `False`): give `pixel_values` as uint8 bytes
            (`ImageTransforms.to_bytes`), a quarter of what a DataLoader worker sends of float32; whoever takes the
            batch normalises it (`ImageTransforms.normalize`: `MultiTaskTrainer` on the device, the tagger).

    An image that cannot be decoded raises an error naming its source, row and file, unless its
    source's `bad_image_policy` is `"skip"`: then the row is left out, and the batch's
    `"image_counts"` (`{"served": {source: rows}, "skipped": {source: rows}, "broken_rows": {source: [row, ...]}}`)
    says so.

    A homogeneous batch gets targets for the tasks it serves and a `"tasks"` entry naming them,
    which the model's `forward(tasks=...)` takes to run only those heads. A mixed batch gets
    targets for every task, missing where a row's source does not label the task, so every head
    runs and sends gradient (zero where nothing is labelled) on every step.
    """

    def __init__(
        self,
        task_specs: Sequence[TaskSpec],
        transform: ImageTransforms,
        *,
        with_rows: bool = False,
        for_inference: bool = False,
        uint8_pixels: bool = False,
    ):
        self.task_specs = {spec.name: spec for spec in task_specs}
        self.transform = transform
        self.with_rows = with_rows
        self.for_inference = for_inference
        self.uint8_pixels = uint8_pixels

    def __call__(self, batch: MixtureBatch | Sequence[RawExample]) -> dict:
        examples, tasks = (batch.examples, batch.tasks) if isinstance(batch, MixtureBatch) else (list(batch), None)
        if not examples:
            raise ValueError("cannot collate an empty batch")  # the mixture never makes one
        images, kept, kept_places, skipped, reasons, broken = [], [], [], Counter(), [], {}
        for place, example in enumerate(examples):
            try:
                images.append(self._image(example))
                kept.append(example)
                kept_places.append(place)
            except BadImageError as error:
                if not example.skip_if_undecodable:
                    raise
                skipped[example.source] += 1
                broken.setdefault(example.source, []).append(example.row)
                cause = type(error.__cause__).__name__ if error.__cause__ is not None else type(error).__name__
                reasons.append((example.row, cause, str(error)))
                logger.debug("skipping %s", error)
        served = Counter(example.source for example in examples)
        counts = {"served": dict(served), "skipped": dict(skipped), "broken_rows": broken}
        if self.for_inference and not kept:
            return {"pixel_values": None, "labels": {}, "kept": [], "skipped_rows": reasons, "image_counts": counts}
        if not kept:
            raise UserError(
                f"no image of this batch of {len(examples)} rows could be decoded "
                f"(sources {dict(served)}); the data behind them is broken"
            )
        heads = tasks if tasks is not None else tuple(self.task_specs)
        labels = {name: self._targets(self.task_specs[name], kept) for name in heads}
        pixels = self.transform.to_bytes(images) if self.uint8_pixels else self.transform.to_tensor(images)
        collated = {"pixel_values": pixels, "labels": labels}
        if tasks is not None:
            collated["tasks"] = list(tasks)
        if self.with_rows:
            collated["rows"] = [f"{example.source}:{example.row}" for example in kept]
        if any(example.skip_if_undecodable for example in examples):
            collated["image_counts"] = counts
        if self.for_inference:
            collated["kept"], collated["skipped_rows"] = kept_places, reasons
        return collated

    def _image(self, example: RawExample):
        try:
            image = self.transform.decode(example.image)
        except DECODE_ERRORS as error:
            path = example.image.get("path") if isinstance(example.image, dict) else example.image
            file = f" (file {path})" if isinstance(path, (str, os.PathLike)) else ""
            raise BadImageError(
                f"source {example.source!r}, row {example.row}{file}: cannot decode the image "
                f"({type(error).__name__}: {error})"
            ) from error
        # Outside the `try`: an error in the transform is a bug to see, never a photo to skip.
        return self.transform.resize(image)

    @staticmethod
    def _targets(spec: TaskSpec, examples: Sequence[RawExample]) -> torch.Tensor:
        if spec.type == "classification":
            targets = torch.tensor([e.labels.get(spec.name, MISSING_CLASS) for e in examples], dtype=torch.long)
        else:
            missing = [float(MISSING_CLASS) if spec.type == "multilabel" else math.nan] * spec.num_outputs
            targets = torch.tensor([e.labels.get(spec.name, missing) for e in examples], dtype=torch.float32)
        # Here, on the host, rather than in the model's forward, where reading values would stall the accelerator.
        check_target_values(spec, targets)
        return targets


__all__ = ["MultiTaskCollator"]
