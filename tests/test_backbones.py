"""Each supported backbone family, saved to a local folder the way a downloaded checkpoint arrives: loads with
`from_backbone`, pools as the backbone does (recorded in config.json), trains a step, saves, and reloads with
mtl_hf and without it (remote code)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    CLIPVisionConfig,
    ConvNextConfig,
    DeiTConfig,
    Dinov2Config,
    SiglipVisionConfig,
    SwinConfig,
    TimmWrapperConfig,
)

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments, parameters, shop_source

LOADER = Path(__file__).resolve().parent / "hub" / "load_without_mtl_hf.py"
TOWER = dict(
    image_size=32, patch_size=4, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
)

BACKBONES = {
    "vit": (tiny_vit_config(), "cls"),
    "deit": (DeiTConfig(**TOWER), "cls"),
    "dinov2": (Dinov2Config(**TOWER), "cls"),
    "clip_vision": (CLIPVisionConfig(**TOWER, projection_dim=16), "pooler"),
    "siglip_vision": (SiglipVisionConfig(**TOWER), "pooler"),
    "swin": (
        SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
        "mean",
    ),
    "convnext": (ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32), "pooler"),
    "timm_vit": (
        TimmWrapperConfig(
            architecture="vit_tiny_patch16_224",
            model_args={"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2},
        ),
        "pooler",
    ),
}
TIMM = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None or importlib.util.find_spec("torchvision") is None,
    reason="transformers' timm wrapper needs timm, and timm needs torchvision, which has no build for the torch this "
    "project pins (see the note in pyproject.toml's timm extra)",
)
CASES = [pytest.param(name, marks=TIMM) if name.startswith("timm") else name for name in BACKBONES]
TASKS = ["category", "tags", "size"]


def pooled_by_the_backbone(backbone, pixel_values, mode):
    output = backbone(pixel_values=pixel_values)
    if mode == "pooler":
        return output.pooler_output.flatten(1)
    hidden = output.last_hidden_state
    tokens = hidden.flatten(2).transpose(1, 2) if hidden.ndim == 4 else hidden
    return tokens[:, 0] if mode == "cls" else tokens.mean(dim=1)


@pytest.mark.parametrize("name", CASES)
def test_a_backbone_from_a_local_folder_trains_saves_and_reloads(tmp_path, name, pixel_values):
    config, pooling = BACKBONES[name]
    torch.manual_seed(0)
    pretrained = AutoModel.from_config(config)
    pretrained.save_pretrained(tmp_path / "backbone")
    source = shop_source(rows=32, tasks=TASKS)
    model = MultiTaskViTModel.from_backbone(str(tmp_path / "backbone"), tasks=source.task_specs)

    # the pretrained weights, exactly; the pooling recorded per task
    got = model.backbone.state_dict()
    assert all(torch.equal(got[key], value) for key, value in pretrained.state_dict().items() if key in got)
    assert [spec.pooling for spec in model.config.task_specs] == [pooling] * 3
    model.eval()
    with torch.no_grad():
        expected = model.heads["size"](pooled_by_the_backbone(model.backbone, pixel_values, pooling))
        torch.testing.assert_close(model(pixel_values).logits["size"], model.heads["size"].in_target_units(expected))

    before = parameters(model)
    trainer = MultiTaskTrainer(model, arguments(tmp_path / "run", max_steps=1), train_dataset=source)
    trainer.train()
    moved = [key for key, value in parameters(model).items() if not torch.equal(value, before[key])]
    assert any(key.startswith("backbone.") for key in moved) and any(key.startswith("heads.") for key in moved)
    if pooling == "pooler":  # the layers that make the pooled output train with the rest
        unmoved = [key for key in before if key.startswith("backbone.") and key not in moved]
        assert not unmoved, unmoved

    folder = tmp_path / "model"
    trainer.save_model(str(folder))
    saved = json.loads((folder / "config.json").read_text())
    assert [task["pooling"] for task in saved["tasks"]] == [pooling] * 3
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values).logits
        reloaded = AutoModel.from_pretrained(folder).eval()
        for task, value in reloaded(pixel_values).logits.items():
            torch.testing.assert_close(value, logits[task])

    torch.save(pixel_values, tmp_path / "inputs.pt")
    result = subprocess.run(
        [sys.executable, str(LOADER), str(folder), str(tmp_path / "inputs.pt"), "--trust"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mtl_hf_importable"] is False, report
    for task, value in report["logits"].items():
        torch.testing.assert_close(torch.tensor(value), logits[task], rtol=1e-5, atol=1e-6)


def test_pooler_is_refused_where_the_backbone_computes_none():
    tasks = [{"name": "a", "type": "classification", "labels": ["x", "y"], "pooling": "pooler"}]
    with pytest.raises(ValueError, match="pooling 'pooler' takes a pooled output that ViTModel does not compute"):
        MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=tasks))
    # a task may still choose the tokens of a backbone that has a pooler
    clip = CLIPVisionConfig(**TOWER, projection_dim=16)
    tasks = [{"name": "a", "type": "classification", "labels": ["x", "y"], "pooling": "cls"}]
    assert (
        MultiTaskViTModel(MultiTaskViTConfig(backbone_config=clip, tasks=tasks)).config.get_task("a").pooling == "cls"
    )


@pytest.mark.parametrize("name", ["clip_vision", "siglip_vision"])
def test_a_recipe_fine_tunes_a_local_backbone_folder(tmp_path, name):
    """The README's fine-tuning recipe: a backbone folder as downloaded (weights, no processor file), LP-FT with
    layer-wise decay and per-task loss options."""
    from mtl_hf.commands.recipe import parse_recipe
    from mtl_hf.commands.train import run

    config, pooling = BACKBONES[name]
    AutoModel.from_config(config).save_pretrained(tmp_path / "backbone")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "dataset: builtin:shop\n"
        "dataset_options: {num_rows: 64, eval_rows: 32, image_size: 32}\n"
        "tasks:\n"
        "  category: {column: category, class_weights: balanced, label_smoothing: 0.1}\n"
        "  tags: tags\n"
        "  size: {column: size, loss: huber}\n"
        f"backbone: {tmp_path / 'backbone'}\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "max_steps: 4\n"
        "per_device_train_batch_size: 16\n"
        "learning_rate: 0.001\n"
        "freeze_backbone: true\n"
        "unfreeze_backbone_at_step: 2\n"
        "layer_decay: 0.75\n"
        "head_learning_rate: 0.01\n"
        "use_cpu: true\n"
        "report_to: none\n"
        "save_strategy: 'no'\n"
        "disable_tqdm: true\n"
        "dataloader_num_workers: 0\n"
    )
    run(*parse_recipe([str(recipe)]))
    model = AutoModel.from_pretrained(tmp_path / "out")
    specs = {spec.name: spec for spec in model.config.task_specs}
    assert {spec.pooling for spec in specs.values()} == {pooling}
    assert specs["category"].class_weights == "balanced" and sum(specs["category"].label_counts["counts"]) > 0
    assert specs["category"].label_smoothing == 0.1 and specs["size"].loss == "huber"
    trained = model.backbone.state_dict()
    original = AutoModel.from_pretrained(tmp_path / "backbone").state_dict()
    assert any(not torch.equal(trained[key], value) for key, value in original.items() if key in trained)
