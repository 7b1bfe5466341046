"""The shared backbone: building it from its config, the vector each head reads (pooling), its width and image
size, and LoRA adapters in it. Part of the remote code that travels with every saved model (it imports only its
siblings, torch and transformers; peft only inside a try block, where LoRA is asked for)."""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoModel, PreTrainedModel

from .configuration_mtl_vit import backbone_hidden_size
from .tasks_mtl_vit import TaskSpec

# The layers LoRA adapts by default, by the first set a backbone has: attention query and value projections
# (transformers' names, then older ones, then timm's fused qkv), or a ConvNeXt block's pointwise layers.
LORA_DEFAULT_TARGETS = (("q_proj", "v_proj"), ("query", "value"), ("qkv",), ("pwconv1", "pwconv2"))


def linear_layer_names(backbone: nn.Module) -> set[str]:
    """The last names of the backbone's linear layers (`q_proj`, `fc1`, ...), as adapters' target_modules name them."""
    return {name.rpartition(".")[2] for name, module in backbone.named_modules() if isinstance(module, nn.Linear)}


def default_lora_targets(backbone: nn.Module) -> list[str]:
    names = linear_layer_names(backbone)
    for targets in LORA_DEFAULT_TARGETS:
        if set(targets) <= names:
            return list(targets)
    raise ValueError(
        f"no default LoRA targets in {type(backbone).__name__}; name its linear layers in target_modules, among "
        f"{sorted(names)}"
    )


def inject_lora(backbone: nn.Module, lora: dict) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ImportError(
            "this model has LoRA adapters (config.lora), which need peft: pip install 'mtl_hf[peft]' (or peft); "
            "or load a merged copy (MultiTaskViTModel.merge_lora, mtl-hf merge), which needs no peft"
        ) from None
    linear = linear_layer_names(backbone)
    unmatched = [target for target in lora["target_modules"] if target not in linear]
    if unmatched:
        raise ValueError(
            f"LoRA target_modules {unmatched} match no linear layer of {type(backbone).__name__}; its linear "
            f"layers are {sorted(linear)}"
        )
    config = LoraConfig(
        r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=lora["target_modules"]
    )
    inject_adapter_in_model(config, backbone)


# Backbones whose pooled output is part of what they were pretrained with, beyond their tokens: CLIP's
# post-layernorm of the class token, SigLIP's attention-pooling head, ConvNeXt's final layernorm of the mean, a
# timm model's own head. Pooling their tokens instead would leave those layers untrained and unused.
POOLER_BACKBONES = ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model", "convnext", "timm_wrapper")


def default_pooling(backbone: nn.Module) -> str:
    if backbone.config.model_type in POOLER_BACKBONES:
        return "pooler"
    return "cls" if has_class_token(backbone) else "mean"


def check_pooling(spec: TaskSpec, backbone: nn.Module) -> None:
    if spec.pooling == "pooler" and backbone.config.model_type not in POOLER_BACKBONES:
        raise ValueError(
            f"task {spec.name!r}: pooling 'pooler' takes a pooled output that {type(backbone).__name__} does not "
            f"compute (backbones with one: {', '.join(POOLER_BACKBONES)}); use 'cls' or 'mean'"
        )


def feature_size(backbone_config, backbone: nn.Module) -> int:
    """Width of the vectors the heads read: the config's, or else the built backbone's (a timm model's)."""
    try:
        return backbone_hidden_size(backbone_config)
    except ValueError:
        model = getattr(backbone, "timm_model", backbone)  # transformers' timm wrapper holds the timm model
        width = getattr(model, "num_features", None)
        if isinstance(width, int):
            return width
        raise


def has_class_token(backbone: nn.Module) -> bool:
    # ViT, DeiT, DINOv2, BEiT keep a learned `cls_token` in their embeddings, CLIP a `class_embedding`;
    # Swin, ConvNeXt and the like have none.
    embeddings = getattr(backbone, "embeddings", None)
    return any(getattr(embeddings, name, None) is not None for name in ("cls_token", "class_embedding"))


def with_pooling(spec: dict, default: str) -> dict:
    return spec if spec.get("pooling") is not None else {**spec, "pooling": default}


def as_token_sequence(last_hidden_state: torch.Tensor) -> torch.Tensor:
    # Convolutional backbones return a (B, C, H, W) map; their positions play the part of tokens.
    if last_hidden_state.ndim == 4:
        return last_hidden_state.flatten(2).transpose(1, 2)
    return last_hidden_state


def pool(tokens: torch.Tensor, mode: str, backbone_output) -> torch.Tensor:
    if mode == "cls":
        return tokens[:, 0]
    if mode == "pooler":
        return backbone_output.pooler_output.flatten(1)
    return tokens.mean(dim=1)


def backbone_from_config(backbone_config) -> PreTrainedModel:
    # The backbone's own pooler would be an unused parameter (the heads pool the tokens
    # themselves), which costs memory and breaks DDP without find_unused_parameters.
    kwargs = {"add_pooling_layer": False} if takes_pooling_flag(type(backbone_config)) else {}
    return AutoModel.from_config(backbone_config, **kwargs)


def takes_pooling_flag(config_class) -> bool:
    # MODEL_MAPPING: transformers' public config class -> AutoModel class map (AutoModel's own).
    model_class = MODEL_MAPPING.get(config_class, None)
    return model_class is not None and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


def merge_lora_layers(backbone: nn.Module) -> None:
    """Folds peft's LoRA layers into their base layers, which take their place; the backbone trains again."""
    # peft's adapted layers, found by what they do rather than by importing peft here: transformers checks
    # that every module these files import outside a try block is installed before loading them as remote code.
    for name, module in list(backbone.named_modules()):
        if hasattr(module, "merge") and hasattr(module, "get_base_layer"):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent_name), child, module.get_base_layer())
    backbone.requires_grad_(True)


def image_size(backbone_config, backbone: nn.Module) -> tuple[int, int]:
    """The (height, width) of the images `backbone` was built for: its config's, or a timm model's own."""
    size = getattr(backbone_config, "image_size", None)
    if size is None:
        timm_model = getattr(backbone, "timm_model", None)
        size = getattr(getattr(timm_model, "patch_embed", None), "img_size", None)
        if size is None and timm_model is not None:
            size = timm_model.pretrained_cfg["input_size"][1:]
    if size is None:
        raise ValueError(f"the backbone's config ({type(backbone_config).__name__}) gives no image size")
    return tuple(size) if isinstance(size, (list, tuple)) else (size, size)


__all__ = [
    "LORA_DEFAULT_TARGETS",
    "POOLER_BACKBONES",
    "as_token_sequence",
    "backbone_from_config",
    "check_pooling",
    "default_lora_targets",
    "default_pooling",
    "feature_size",
    "image_size",
    "inject_lora",
    "linear_layer_names",
    "merge_lora_layers",
    "pool",
    "takes_pooling_flag",
    "with_pooling",
]
