"""Models: `mtl_vit`, a vision backbone with one head per task (its names load on first use)."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_attributes

_ATTRIBUTES = {"MultiTaskViTConfig": ".mtl_vit", "MultiTaskViTModel": ".mtl_vit"}

if TYPE_CHECKING:
    from .mtl_vit import MultiTaskViTConfig, MultiTaskViTModel

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)

__all__ = ["MultiTaskViTConfig", "MultiTaskViTModel"]
