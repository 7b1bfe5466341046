"""Decoding images: one implementation, in the remote-code file that saved models carry
(`models/mtl_vit/images_mtl_vit.py`), so that a model loaded without mtl_hf decodes photos as training did."""

from ..models.mtl_vit.images_mtl_vit import DECODE_ERRORS, decode_image, open_image, to_rgb

__all__ = ["DECODE_ERRORS", "decode_image", "open_image", "to_rgb"]
