"""Datasets that ship with mtl_hf, usable offline: `builtin:shop` (procedural product photos, any size),
`builtin:digits` (scikit-learn's 1,797 real handwritten digits) and `builtin:shapes` (drawn figures: a
pretraining corpus unlike the other two), each with training and evaluation rows."""

from __future__ import annotations

from typing import Any

from ...errors import UserError

BUILTIN_PREFIX = "builtin:"
BUILTIN_DATASETS = ("shop", "digits", "shapes")


def is_builtin(dataset: Any) -> bool:
    return isinstance(dataset, str) and dataset.startswith(BUILTIN_PREFIX)


def builtin_names() -> str:
    return ", ".join(BUILTIN_PREFIX + name for name in BUILTIN_DATASETS)


def load_builtin(dataset: str, options: dict[str, Any] | None = None, *, seed: int = 0):
    """The training and evaluation rows of a built-in dataset (`builtin:shop`, `builtin:digits`, `builtin:shapes`)."""
    kind = dataset.removeprefix(BUILTIN_PREFIX)
    options = dict(options or {})
    if kind == "shop":
        from .shop import load_shop_dataset

        eval_rows = options.pop("eval_rows", 1000)
        num_rows = options.pop("num_rows", 4000)
        try:
            train = load_shop_dataset(num_rows, **options)
        except TypeError as error:  # an option load_shop_dataset does not take
            raise UserError(
                f"builtin:shop: {error}; its dataset_options are num_rows, eval_rows, seed, missing_rate, image_size"
            ) from None
        # Evaluation rows come from further along the same endless sequence: new images, same distribution.
        evaluation = load_shop_dataset(eval_rows, start=num_rows, **options) if eval_rows else None
        return train, evaluation
    if kind == "shapes":
        from .shapes import load_shapes_dataset

        eval_rows = options.pop("eval_rows", 1000)
        num_rows = options.pop("num_rows", 20_000)
        unknown = sorted(set(options) - {"seed", "image_size"})
        if unknown:
            raise UserError(
                f"builtin:shapes takes no option(s) {unknown}; its dataset_options are num_rows, eval_rows, seed, "
                "image_size"
            )
        train = load_shapes_dataset(num_rows, **options)
        evaluation = load_shapes_dataset(eval_rows, start=num_rows, **options) if eval_rows else None
        return train, evaluation
    if kind == "digits":
        from .digits import load_digits_dataset

        if options:
            raise UserError(f"builtin:digits takes no dataset_options, got {sorted(options)}")
        splits = load_digits_dataset().train_test_split(test_size=0.2, seed=seed, stratify_by_column="digit")
        return splits["train"], splits["test"]
    raise UserError(f"unknown built-in dataset {dataset!r}; built-in datasets are {builtin_names()}")


def builtin_description(dataset: str, options: dict[str, Any] | None = None) -> str:
    """What a built-in dataset's rows are, for the model card."""
    if dataset.removeprefix(BUILTIN_PREFIX) == "shapes":
        size = (options or {}).get("image_size", 32)
        return f"geometric figures drawn by mtl_hf at {size} px (a pretraining corpus), not photographs"
    if dataset.removeprefix(BUILTIN_PREFIX) == "shop":
        size = (options or {}).get("image_size", 32)
        return (
            f"synthetic product photos drawn by mtl_hf at {size} px (shapes, colours, patterns, corner badges), "
            "not real photographs"
        )
    return "scikit-learn's 1,797 handwritten 8x8 digit scans, upscaled"


__all__ = ["BUILTIN_DATASETS", "BUILTIN_PREFIX", "builtin_description", "builtin_names", "is_builtin", "load_builtin"]
