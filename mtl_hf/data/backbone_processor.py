"""A backbone's image processor: its own where it has one, else one built from its config.

`ViTModel.save_pretrained` writes no `preprocessor_config.json`, so a backbone folder often comes without the
processor that says how its photos were resized and normalised. Its config gives the size; the normalisation
follows its family's convention (the processors the Hub ships for that family), stated in a one-line notice.
A family without a known convention is a one-line error: guessing it would skew every photo the model sees.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from .transforms import ImageTransforms

logger = logging.getLogger(__name__)

PROCESSOR_FILE = "preprocessor_config.json"
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
FAMILY_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "vit": _HALF,
    "beit": _HALF,
    "data2vec-vision": _HALF,
    "deit": _IMAGENET,
    "dinov2": _IMAGENET,
    "dinov2_with_registers": _IMAGENET,
    "swin": _IMAGENET,
    "swinv2": _IMAGENET,
    "convnext": _IMAGENET,
    "convnextv2": _IMAGENET,
    "clip_vision_model": _CLIP,
    "siglip_vision_model": _HALF,
    "siglip2_vision_model": _HALF,
}
"""model_type -> (mean, std) of the processors published with that family's checkpoints."""


def backbone_image_processor(name: str, backbone_config: Any, *, cache_dir: str | None = None, kind: str = "backbone"):
    """The image processor saved with the backbone (or, `kind="model"`, the multi-task model) `name`, or one built
    from `backbone_config` (with a notice)."""
    from transformers import AutoImageProcessor

    if Path(name).is_dir() and not (Path(name) / PROCESSOR_FILE).is_file():
        return processor_from_config(name, backbone_config, kind=kind)
    try:
        return AutoImageProcessor.from_pretrained(name, cache_dir=cache_dir)
    except OSError as error:
        if PROCESSOR_FILE not in str(error):
            raise
        return processor_from_config(name, backbone_config, kind=kind)


def model_image_processor(model: str, config: Any):
    """The image processor saved with a multi-task model, or the one its backbone's config implies (a one-line
    notice): a model saved by `save_pretrained` alone before mtl_hf wrote one there."""
    return backbone_image_processor(model, config.backbone_config, kind="model")


def processor_from_config(name: str, backbone_config: Any, *, kind: str = "backbone", notice: bool = True):
    """A processor for the backbone (or model) `name` from its config's image size and its family's mean and std;
    `notice=False` checks that there is one without saying so."""
    family = backbone_config.model_type
    size = getattr(backbone_config, "image_size", None)
    if family not in FAMILY_NORMALISATION or not size:
        lacking = "its image size" if family in FAMILY_NORMALISATION else f"the convention of model_type {family!r}"
        raise UserError(
            f"{kind} {name} has no {PROCESSOR_FILE}, and mtl_hf does not know {lacking}: save its image "
            "processor beside it (AutoImageProcessor.from_pretrained(<where it came from>).save_pretrained(folder))"
        )
    height, width = size if isinstance(size, (list, tuple)) else (size, size)
    mean, std = FAMILY_NORMALISATION[family]
    if notice:
        logger.warning(
            f"{kind} {name} has no {PROCESSOR_FILE}: photos are resized to {height}x{width} (its config's image_size) "
            f"and normalised with mean {list(mean)} and std {list(std)} (the {family} convention); save an image "
            "processor beside it to choose otherwise"
        )
    return ImageTransforms(size=(height, width), mean=mean, std=std).image_processor()


__all__ = [
    "FAMILY_NORMALISATION",
    "PROCESSOR_FILE",
    "backbone_image_processor",
    "model_image_processor",
    "processor_from_config",
]
