"""The `digits` dataset: scikit-learn's 1,797 real handwritten digits (8x8 grey), with three tasks.

- `digit`: which digit (ClassLabel, 10 names) - classification;
- `traits`: even / prime / above_four (list of ClassLabel) - multilabel;
- `ink`: how much ink the scan holds - its mean intensity as a z-score over the 1,797 digits
  (mean 0, standard deviation 1) - regression.

It ships with scikit-learn, so it needs no download.
"""

from __future__ import annotations

import io

import numpy as np
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

DIGIT_NAMES = [str(d) for d in range(10)]
TRAIT_NAMES = ["even", "prime", "above_four"]
DIGITS_FEATURES = Features(
    {
        "image": ImageFeature(),
        "digit": ClassLabel(names=DIGIT_NAMES),
        "traits": List(ClassLabel(names=TRAIT_NAMES)),
        "ink": Value("float32"),
    }
)


def digit_traits(digit: int) -> list[int]:
    traits = [digit % 2 == 0, digit in (2, 3, 5, 7), digit > 4]
    return [i for i, has in enumerate(traits) if has]


def load_digits_dataset() -> Dataset:
    """All 1,797 digits as a `Dataset` with an 8x8 grey PNG `image` and the three task columns."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = []
    for pixels in grey:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
    intensity = digits.images.mean(axis=(1, 2))
    ink = ((intensity - intensity.mean()) / intensity.std()).astype(np.float32)
    return Dataset.from_dict(
        {
            "image": images,
            "digit": digits.target.tolist(),
            "traits": [digit_traits(int(d)) for d in digits.target],
            "ink": ink.tolist(),
        },
        features=DIGITS_FEATURES,
    )


__all__ = ["DIGITS_FEATURES", "DIGIT_NAMES", "TRAIT_NAMES", "load_digits_dataset"]
