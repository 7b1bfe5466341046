"""Models: `mtl_vit`, a vision backbone with one head per task."""

from .mtl_vit import MultiTaskViTConfig, MultiTaskViTModel

__all__ = ["MultiTaskViTConfig", "MultiTaskViTModel"]
