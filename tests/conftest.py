import gc
import os
from pathlib import Path

# Set before transformers / datasets are imported anywhere: tests never reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(Path(__file__).resolve().parent.parent / ".cache" / "huggingface"))

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import ViTConfig  # noqa: E402

from mtl_hf import MultiTaskViTConfig  # noqa: E402


def pytest_collection_finish(session):
    """Leaves what collection loaded (torch, transformers, datasets, every test module) out of the garbage
    collector's passes. Trainer.train() begins with accelerate's free_memory(), a full gc.collect(), which in a
    worker holding all that took 0.57 s a call: a tenth of the trainer tests' time. What tests create is still
    collected."""
    gc.freeze()


SHOP_TASKS = [
    {"name": "category", "type": "classification", "labels": ["shirt", "shoe", "bag"]},
    {"name": "tags", "type": "multilabel", "labels": ["red", "striped", "leather", "sale"]},
    {"name": "price", "type": "regression", "num_outputs": 1},
]


SMALLEST_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
"""The smallest ViT the tests train: a recipe's `backbone_config` (model_type vit)."""


def tiny_vit_config(**overrides) -> ViTConfig:
    values = dict(
        image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    values.update(overrides)
    return ViTConfig(**values)


@pytest.fixture
def shop_config() -> MultiTaskViTConfig:
    return MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=[dict(task) for task in SHOP_TASKS])


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
