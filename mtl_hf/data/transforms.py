"""Image transforms in PIL + torch (no torchvision), matching `ViTImageProcessor`.

The eval transform does what the saved image processor does downstream (resize to the model's
size, rescale to [0, 1], normalise with its mean and std), so a model sees at inference exactly
the preprocessing it saw in evaluation. The train transform swaps the resize for a random resized
crop and adds a horizontal flip. Transforms hold no state beyond their settings: they pickle into
DataLoader workers and draw their randomness from Python's `random`, which the DataLoader seeds
differently in each worker (and `transformers.set_seed` seeds in the main process).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .images import decode_image

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ImageTransforms:
    r"""
    Turns an image into the model's `pixel_values` tensor `(3, height, width)`.

    Args:
        size (`tuple[int, int]`): output (height, width).
        mean (`tuple[float, ...]`), std (`tuple[float, ...]`): per-channel normalisation.
        train (`bool`, defaults to `False`): random resized crop and flip (train) or plain resize (eval).
        crop_scale (`tuple[float, float]`, defaults to `(0.5, 1.0)`): range of the crop's share of the
            image area in training.
        crop_ratio (`tuple[float, float]`, defaults to `(3/4, 4/3)`): range of the crop's aspect ratio.
        flip_probability (`float`, defaults to 0.5): chance of a horizontal flip in training.
        resample (`int`, defaults to bilinear): the PIL resampling filter.
        draft_decoding (`bool`, defaults to `True`): decode JPEGs at a reduced scale (1/2, 1/4, 1/8)
            when that still leaves at least `size` pixels in every crop the transform can take: a
            800-px photo bound for 224 px decodes at 400 px, and the whole transform runs about
            twice as fast. The result differs from a full decode by 0.27 grey levels on average
            (tested; see bench/jpeg_decode.py). `False` decodes every pixel, as `ViTImageProcessor` does.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_STANDARD_MEAN
    std: tuple[float, ...] = IMAGENET_STANDARD_STD
    train: bool = False
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    resample: int = Image.Resampling.BILINEAR
    draft_decoding: bool = True

    @classmethod
    def from_image_processor(cls, processor: Any, *, train: bool = False, **overrides) -> ImageTransforms:
        """The transform that matches a `ViTImageProcessor`-like processor's size, mean, std and filter."""
        size = processor.size
        if "height" in size and "width" in size:
            height, width = size["height"], size["width"]
        elif "shortest_edge" in size:
            height = width = size["shortest_edge"]
        else:
            raise UserError(f"image processor size {size} has no height/width or shortest_edge")
        settings = dict(
            size=(height, width),
            mean=tuple(processor.image_mean if processor.do_normalize else (0.0, 0.0, 0.0)),
            std=tuple(processor.image_std if processor.do_normalize else (1.0, 1.0, 1.0)),
            train=train,
            resample=int(getattr(processor, "resample", Image.Resampling.BILINEAR)),
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def for_training(cls, processor: Any, image_size) -> ImageTransforms:
        """The training transform of the image processor, or else of the backbone's image size."""
        if processor is not None:
            return cls.from_image_processor(processor, train=True)
        return cls(size=image_size, train=True)

    def image_processor(self):
        """A `ViTImageProcessor` with this transform's eval settings, to save beside the model."""
        from transformers import ViTImageProcessorPil

        height, width = self.size
        return ViTImageProcessorPil(
            size={"height": height, "width": width},
            image_mean=list(self.mean),
            image_std=list(self.std),
            resample=self.resample,
        )

    def eval(self) -> ImageTransforms:
        return ImageTransforms(**{**self.__dict__, "train": False})

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.to_tensor([self.resize(image)])[0]

    def decode(self, value: Any) -> Image.Image:
        """`decode_image(value)`, decoding a JPEG only at the scale this transform needs (see `draft_decoding`)."""
        return decode_image(value, draft=self.draft_size if self.draft_decoding else None)

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest image size whose every crop (train) or whole frame (eval) still holds `size` pixels."""
        out_height, out_width = self.size
        if not self.train:
            return out_width, out_height
        # The smallest crop covers crop_scale[0] of the area, at the extreme aspect ratios.
        smallest_crop_width = math.sqrt(self.crop_scale[0] * width * height * self.crop_ratio[0])
        smallest_crop_height = math.sqrt(self.crop_scale[0] * width * height / self.crop_ratio[1])
        reduction = max(1.0, min(smallest_crop_width / out_width, smallest_crop_height / out_height))
        return math.ceil(width / reduction), math.ceil(height / reduction)

    def resize(self, image: Image.Image) -> Image.Image:
        """The geometric part: random resized crop and flip (train) or resize (eval) to `size`."""
        height, width = self.size
        if self.train:
            box = self._random_crop_box(image.width, image.height)
            image = image.resize((width, height), self.resample, box=box)
            if random.random() < self.flip_probability:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif image.size != (width, height):
            image = image.resize((width, height), self.resample)
        return image

    def to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        """Stacks resized RGB images into a normalised float batch `(N, 3, height, width)`."""
        return self.normalize(self.to_bytes(images))

    def to_bytes(self, images: list[Image.Image]) -> torch.Tensor:
        """Stacks resized RGB images into a uint8 batch `(N, 3, height, width)`, not yet normalised: a quarter of
        the bytes of the float batch, for DataLoader workers to send (`normalize` finishes it where it is used)."""
        pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.uint8) for image in images]))
        # Channels first while still bytes: a quarter of the memory traffic of permuting floats, and
        # a contiguous batch (permuting after .float() kept channels-last strides).
        return pixels.permute(0, 3, 1, 2).contiguous()

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """A uint8 batch (`to_bytes`) as the model takes it, (x / 255 - mean) / std in float32, on the batch's own
        device; a float batch (already normalised) as it is."""
        if pixels.dtype != torch.uint8:
            return pixels
        # (x / 255 - mean) / std in one multiply-add per element
        std = torch.tensor(self.std, dtype=torch.float32, device=pixels.device)
        scale = 1.0 / (255.0 * std)
        shift = -torch.tensor(self.mean, dtype=torch.float32, device=pixels.device) / std
        return pixels.float().mul_(scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))

    def _random_crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        for _ in range(10):
            target_area = area * random.uniform(*self.crop_scale)
            aspect = math.exp(random.uniform(*log_ratio))
            crop_w = round(math.sqrt(target_area * aspect))
            crop_h = round(math.sqrt(target_area / aspect))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                left = random.randint(0, width - crop_w)
                top = random.randint(0, height - crop_h)
                return left, top, left + crop_w, top + crop_h
        # No crop fitted: the largest centred crop within the ratio range.
        ratio = width / height
        if ratio < self.crop_ratio[0]:
            crop_w, crop_h = width, round(width / self.crop_ratio[0])
        elif ratio > self.crop_ratio[1]:
            crop_w, crop_h = round(height * self.crop_ratio[1]), height
        else:
            crop_w, crop_h = width, height
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
        return left, top, left + crop_w, top + crop_h


__all__ = ["IMAGENET_STANDARD_MEAN", "IMAGENET_STANDARD_STD", "ImageTransforms"]
