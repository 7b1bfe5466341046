"""`ImagePredictor`: a saved model loaded once, answering uploaded photos as the catalogue tagger does.

Uploads are checked before they cost anything: `measure` reads the pixel count from the image's header, and only
then `prepare` decodes the photo (JPEGs in draft mode at the model's size) and transforms it with the model's own
image processor settings; a batch of photos runs in one forward, and its answers are `inference/answers.py`'s,
one dict a photo.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from ..data.images import DECODE_ERRORS
from ..inference.answers import answer_columns, answers_by_row
from ..inference.batches import logits_to_host
from ..inference.fingerprints import model_fingerprint
from ..inference.tagger import Tagger
from ..models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature
from .admission import ServingRefusal


class ImagePredictor:
    def __init__(
        self,
        model: str,
        *,
        top_k: int = 3,
        thresholds: dict[str, float] | None = None,
        review_cuts: dict[str, float] | None = None,
        device: str | None = None,
        allow_pickled_weights: bool = False,
        engine: str = "torch",
        dtype: str = "auto",
    ):
        self.tagger = Tagger(
            model, device=device, allow_pickled_weights=allow_pickled_weights, engine=engine, dtype=dtype
        )
        self.top_k, self.thresholds, self.review_cuts = top_k, dict(thresholds or {}), dict(review_cuts or {})
        self.metadata = _metadata(model, self.tagger, self.thresholds)

    @staticmethod
    def measure(data: bytes, *, max_pixels: int, name: str) -> int:
        """The photo's pixel count, from its header alone; `ServingRefusal` for a photo too large or not an image."""
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
        except UnidentifiedImageError:  # PIL's message names its BytesIO, not the upload
            raise ServingRefusal(422, f"{name}: not an image format this server reads") from None
        except DECODE_ERRORS as error:
            raise ServingRefusal(422, f"{name}: cannot decode the image ({type(error).__name__}: {error})") from None
        if width * height > max_pixels:
            raise ServingRefusal(
                413,
                f"{name}: {width} x {height} pixels ({width * height / 1e6:.1f} MP) is more than the server's "
                f"limit of {max_pixels / 1e6:g} MP a photo (--max_pixels); send a smaller photo",
            )
        return width * height

    def prepare(self, data: bytes, *, name: str) -> torch.Tensor:
        """One upload's pixels, as the model takes them (after `measure`); `ServingRefusal` for a broken photo."""
        transform = self.tagger.transform
        try:
            image = transform.decode(data)
        except DECODE_ERRORS as error:
            raise ServingRefusal(422, f"{name}: cannot decode the image ({type(error).__name__}: {error})") from None
        return transform.to_tensor([transform.resize(image)])[0]

    @torch.no_grad()
    def answer(self, pixels: list[torch.Tensor]) -> list[dict[str, Any]]:
        """The answers for a batch of prepared photos, in one forward and one copy to the host."""
        tagger = self.tagger
        batch = torch.stack(pixels).to(tagger.device, non_blocking=True)
        with tagger.autocast():
            logits = tagger.model(pixel_values=batch).logits
        names = [spec.name for spec in tagger.specs]
        columns = answer_columns(
            tagger.specs,
            logits_to_host(logits, names, len(pixels)),
            top_k=self.top_k,
            thresholds=self.thresholds,
            calibration=tagger.calibration,
            review_cuts=self.review_cuts,
        )
        return answers_by_row(tagger.specs, columns)


def _metadata(model: str, tagger: Tagger, thresholds: dict[str, float]) -> dict[str, Any]:
    folder = Path(model)
    # A Hub download lies in .../snapshots/<commit>: that commit is the revision; a local folder has its weights' hash.
    revision = folder.name if folder.parent.name == "snapshots" else f"sha256:{model_fingerprint(folder)[:16]}"
    height, width = tagger.transform.size
    return {
        "model": folder.parent.parent.name.removeprefix("models--").replace("--", "/")
        if folder.parent.name == "snapshots"
        else folder.resolve().name,
        "revision": revision,
        "image_size": [height, width],
        "tasks": [
            {
                "name": spec.name,
                "type": spec.type,
                **({"labels": spec.labels} if spec.type != "regression" else {"outputs": spec.num_outputs}),
                **({"thresholds": _thresholds(tagger, spec, thresholds)} if spec.type == "multilabel" else {}),
                **(
                    {"temperature": task_temperature(tagger.calibration, spec.name)}
                    if spec.type != "regression"
                    else {}
                ),
            }
            for spec in tagger.specs
        ],
    }


def _thresholds(tagger: Tagger, spec, asked: dict[str, float]) -> dict[str, float]:
    """Each label's threshold: the one asked for the task, else its calibrated one, else 0.5."""
    if spec.name in asked:
        return dict.fromkeys(spec.labels, asked[spec.name])
    return dict(zip(spec.labels, label_thresholds(tagger.calibration, spec.name, spec.labels), strict=True))


__all__ = ["ImagePredictor"]
