"""The interfaces of transformers that mtl_hf uses without their being top-level API (docs/architecture.md lists
them, each with its reason): each test fails if upstream changes the one it names."""

import inspect

import torch
from transformers import MODEL_MAPPING, AutoConfig, PreTrainedModel, Trainer, ViTConfig, ViTModel

from mtl_hf import MultiTaskViTConfig
from tests.training_helpers import arguments, new_model, shop_source


def test_model_mapping_gives_the_backbone_class_and_its_pooling_flag():
    assert MODEL_MAPPING[ViTConfig] is ViTModel
    assert "add_pooling_layer" in inspect.signature(ViTModel.__init__).parameters
    assert MODEL_MAPPING.get(MultiTaskViTConfig, None) is not None  # `import mtl_hf` registered it


def test_the_classic_config_init_and_sub_configs_are_kept():
    """transformers 5.20+ turn configs into dataclasses but keep a subclass's own `__init__` (what lets one
    configuration file load on every 5.x), and `sub_configs` still names the nested config."""
    assert "__init__" in MultiTaskViTConfig.__dict__
    assert MultiTaskViTConfig.sub_configs == {"backbone_config": AutoConfig}
    config = MultiTaskViTConfig(tasks=[{"name": "size", "type": "regression"}], output_hidden_states=True)
    assert isinstance(config.backbone_config, ViTConfig) and config.output_hidden_states is True
    again = MultiTaskViTConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict() and isinstance(again.backbone_config, ViTConfig)


def test_the_model_file_conventions_exist():
    from transformers import initialization
    from transformers.utils.generic import can_return_tuple

    assert callable(can_return_tuple) and callable(initialization.trunc_normal_) and callable(initialization.zeros_)
    assert "save_original_format" in inspect.signature(PreTrainedModel.save_pretrained).parameters


def test_trainer_private_methods_behave_as_used(tmp_path):
    from mtl_hf import MultiTaskTrainer

    assert "_internal_call" in inspect.signature(Trainer.save_model).parameters
    assert "resume_from_checkpoint" in inspect.signature(Trainer._load_from_checkpoint).parameters
    source = shop_source(rows=8)
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source)
    batch = {"pixel_values": torch.zeros(2, 3, 32, 32), "labels": {"size": torch.zeros(2)}}
    moved = trainer._prepare_inputs(batch)
    assert moved["pixel_values"].device == trainer.args.device and moved["labels"]["size"].device == trainer.args.device
