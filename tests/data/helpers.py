"""Small in-memory datasets for the data tests: cheap to build, each row identifiable."""

import io

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from mtl_hf.data import TaskSource


def png_bytes(seed: int = 0, size: int = 8, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def uid_dataset(num_rows: int, *, offset: int = 0, num_classes: int = 3, task: str = "kind") -> Dataset:
    """Rows with an image, a class column `task` and a unique float `uid` (offset + row index)."""
    image = {"bytes": png_bytes(), "path": None}
    features = Features(
        {
            "image": ImageFeature(),
            task: ClassLabel(names=[f"c{i}" for i in range(num_classes)]),
            "uid": Value("float32"),
        }
    )
    return Dataset.from_dict(
        {
            "image": [image] * num_rows,
            task: [i % num_classes for i in range(num_rows)],
            "uid": [float(offset + i) for i in range(num_rows)],
        },
        features=features,
    )


def uid_source(name: str, num_rows: int, *, offset: int = 0, **kwargs) -> TaskSource:
    """A source with two tasks: `<name>_kind` (classification) and `<name>_uid` (the row's uid)."""
    dataset = uid_dataset(num_rows, offset=offset, task=f"{name}_kind")
    return TaskSource(dataset, {f"{name}_kind": f"{name}_kind", f"{name}_uid": "uid"}, name=name, **kwargs)


def served_uids(batch) -> list[float]:
    """The uids of the rows of a MixtureBatch."""
    return [value[0] for example in batch.examples for name, value in example.labels.items() if name.endswith("_uid")]
