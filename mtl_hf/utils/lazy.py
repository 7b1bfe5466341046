"""Public names of a package imported on first use, as transformers does: `import mtl_hf` stays light (no
Trainer, datasets, matplotlib or Spark) while `from mtl_hf import MultiTaskTrainer` keeps working."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, attributes: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The `__getattr__` and `__dir__` of `package`, where `attributes` maps each public name to the module
    (relative to `package`) that defines it."""

    def __getattr__(name: str):
        module = attributes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(attributes))

    return __getattr__, __dir__


__all__ = ["lazy_attributes"]
