"""Images as datasets hold them (PIL images, `{"bytes", "path"}`, bytes, paths, arrays) -> RGB PIL images.

Remote code: saved models carry this file with the pipeline (`pipeline_mtl_vit.py`), so that photos are decoded
where mtl_hf is not installed exactly as in training. It imports numpy and Pillow only (fsspec for a URL, when one
is given); mtl_hf's data path imports it as `mtl_hf.data.images`.

Decoding is where a product photo can turn out broken (a truncated download, an error page saved as
`.jpg`, a decompression bomb): `DECODE_ERRORS` are the exceptions PIL and the array checks raise for such
data, so that callers can tell a broken photo from a bug in the code that handles a good one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
"""What decoding raises for data that is not a decodable image: PIL's OSError (truncated, unidentified),
SyntaxError (some format plugins), EOFError, DecompressionBombError, and ValueError (an array of a shape
no image has, a missing image)."""


def decode_image(value: Any, *, draft: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """An RGB PIL image from what a dataset holds: a PIL image, `{"bytes", "path"}`, bytes, a path or an array.

    `draft`, given a JPEG's (width, height), returns the smallest (width, height) the caller needs:
    the JPEG is then decoded at 1/2, 1/4 or 1/8 scale where that still covers it (PIL's draft mode,
    which skips most of the decoding work; see bench/jpeg_decode.py).
    """
    image = open_image(value)
    if draft is not None and image.format == "JPEG":
        image.draft(None, draft(*image.size))
    # PIL reads pixels lazily; loading here makes a truncated or corrupt file fail where it is named.
    image.load()
    return to_rgb(image)


def open_image(value: Any) -> Image.Image:
    """A PIL image, not yet decoded, from a PIL image, `{"bytes", "path"}` (with `"storage_options"` for a URL
    path), bytes, a path, a URL (`s3://`, `https://`: read through fsspec) or an array."""
    options = {}
    if isinstance(value, dict):
        options = value.get("storage_options") or {}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str) and "://" in value:
        try:  # in a try block, so that transformers does not ask for fsspec to load this file as remote code
            import fsspec
        except ImportError as error:
            raise ValueError(f"reading the image at {value} needs fsspec (pip install fsspec)") from error

        with fsspec.open(value, "rb", **options) as file:  # a missing object raises FileNotFoundError, an OSError
            return Image.open(io.BytesIO(file.read()))
    if isinstance(value, (str, Path)):
        return Image.open(value)
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (np.ndarray, list)):
        return _image_from_array(np.asarray(value))
    if value is None:
        raise ValueError("the image is missing (None)")
    raise TypeError(f"cannot read an image from a {type(value).__name__}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Grey, palette, CMYK, 16-bit ... to RGB; transparency is laid over white, as a product page shows it."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray((array / max(array.max(), 1) * 255).astype(np.uint8))
    return image.convert("RGB")


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first to channels-last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"an image array needs shape (H, W), (H, W, C) or (C, H, W), got {array.shape}")
    if array.ndim == 3 and array.shape[-1] not in (2, 3, 4):
        raise ValueError(
            f"an image array needs 1, 2 (grey + alpha), 3 or 4 channels, got {array.shape[-1]} (shape {array.shape})"
        )
    if array.dtype != np.uint8:
        scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array.astype(np.float64)) * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(array)


__all__ = ["DECODE_ERRORS", "decode_image", "open_image", "to_rgb"]
