"""LoRA adapters in the backbone (peft): what trains, saving and reloading, merging into a plain model, resuming,
gradient methods, and the one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from mtl_hf import MultiTaskTrainer, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.errors import UserError
from tests.training_helpers import StopAt, arguments, assert_same_parameters, new_model, parameters, shop_source

LOADER = Path(__file__).resolve().parent / "hub" / "load_without_mtl_hf.py"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")


def lora_run(tmp_path, steps=3, **settings):
    source = shop_source(rows=48)
    model = new_model(source)
    initial = parameters(model)
    trainer = MultiTaskTrainer(
        model, arguments(tmp_path, max_steps=steps, lora_rank=4, **settings), train_dataset=source
    )
    trainer.train()
    return trainer, initial


def test_lora_trains_the_adapters_and_heads_and_leaves_the_backbone_weights(tmp_path):
    trainer, initial = lora_run(tmp_path)
    model = trainer.model
    assert model.config.lora == {"rank": 4, "alpha": 4.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    now = parameters(model)
    adapters = [name for name in now if ".lora_" in name]
    assert adapters and all(name.startswith("backbone.") for name in adapters)
    assert any(not torch.equal(now[name], torch.zeros_like(now[name])) for name in adapters if "lora_B" in name)
    base = {name.replace(".base_layer", ""): value for name, value in now.items() if ".lora_" not in name}
    for name, value in initial.items():
        if name.startswith("backbone."):
            assert torch.equal(base[name], value), name  # the pretrained weights stay as they were
    assert any(not torch.equal(now[name], value) for name, value in initial.items() if name.startswith("heads."))
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    trainable = {name for name, p in model.named_parameters() if id(p) in optimized}
    assert trainable == {name for name in now if ".lora_" in name or name.startswith("heads.")}


def test_lp_ft_on_a_lora_model_unfreezes_its_adapters_only(tmp_path):
    """A model that has adapters (a saved LoRA model, or add_lora) trained with freeze_backbone and
    unfreeze_backbone_at_step: the heads alone first, then the adapters; the base weights never train."""
    source = shop_source(rows=48)
    model = new_model(source)
    model.add_lora(4, None, 0.0, None)
    initial = parameters(model)
    trainer = MultiTaskTrainer(
        model,
        arguments(tmp_path, max_steps=4, freeze_backbone=True, unfreeze_backbone_at_step=2),
        train_dataset=source,
    )
    trainer.train()
    now = parameters(trainer.model)
    assert [name for name, p in trainer.model.backbone.named_parameters() if p.requires_grad] == [
        name for name, _ in trainer.model.backbone.named_parameters() if ".lora_" in name
    ]
    base = [name for name in now if name.startswith("backbone.") and ".lora_" not in name]
    assert base and all(torch.equal(now[name], initial[name]) for name in base)  # still a LoRA run
    assert any(not torch.equal(now[name], initial[name]) for name in now if "lora_B" in name)  # adapters trained


def test_a_lora_model_saves_reloads_and_merges_into_a_plain_model(tmp_path, pixel_values, capsys):
    trainer, _ = lora_run(tmp_path / "run")
    folder = tmp_path / "model"
    trainer.save_model(str(folder))
    assert json.loads((folder / "config.json").read_text())["lora"]["rank"] == 4
    model = trainer.model.eval()
    with torch.no_grad():
        expected = model(pixel_values).logits
        reloaded = AutoModel.from_pretrained(folder).eval()
        assert reloaded.config.lora == model.config.lora
        for task, value in reloaded(pixel_values).logits.items():
            torch.testing.assert_close(value, expected[task])

    assert cli(["merge", str(folder), str(tmp_path / "merged")]) == 0
    assert "merged the LoRA adapters" in capsys.readouterr().out
    saved = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "lora" not in saved or saved["lora"] is None
    merged = AutoModel.from_pretrained(tmp_path / "merged").eval()
    assert not any(".lora_" in name or "base_layer" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        for task, value in merged(pixel_values).logits.items():
            torch.testing.assert_close(value, expected[task], rtol=1e-4, atol=1e-5)
    assert (tmp_path / "merged" / "preprocessor_config.json").is_file()

    # the merged model loads where neither mtl_hf nor its adapters' library is imported
    torch.save(pixel_values, tmp_path / "inputs.pt")
    result = subprocess.run(
        [sys.executable, str(LOADER), str(tmp_path / "merged"), str(tmp_path / "inputs.pt"), "--trust"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mtl_hf_importable"] is False
    for task, value in report["logits"].items():
        torch.testing.assert_close(torch.tensor(value), expected[task], rtol=1e-4, atol=1e-5)


def test_a_resumed_lora_run_gives_the_parameters_of_an_uninterrupted_one(tmp_path):
    source = shop_source(rows=48)
    settings = dict(max_steps=6, save_strategy="steps", save_steps=3, lora_rank=4, lora_alpha=8, weighting="famo")
    uninterrupted = MultiTaskTrainer(new_model(source), arguments(tmp_path / "full", **settings), train_dataset=source)
    uninterrupted.train()
    first = MultiTaskTrainer(
        new_model(source), arguments(tmp_path / "cut", **settings), train_dataset=source, callbacks=[StopAt(3)]
    )
    first.train()
    resumed = MultiTaskTrainer(new_model(source, seed=5), arguments(tmp_path / "cut", **settings), train_dataset=source)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-3"))
    assert_same_parameters(resumed.model, uninterrupted.model, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("weighting", "space"), [("pcgrad", "parameters"), ("upgrad", "representation")])
def test_gradient_methods_combine_the_task_gradients_on_the_adapters(tmp_path, weighting, space):
    trainer, initial = lora_run(tmp_path, weighting=weighting, gradient_space=space, batch_mode="mixed")
    now = parameters(trainer.model)
    assert any("lora_B" in name and torch.count_nonzero(value) for name, value in now.items())
    logged = [entry for entry in trainer.state.log_history if "weight_category" in entry]
    assert logged and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logged)


def test_lora_targets_that_match_nothing_name_the_backbones_layers(tmp_path):
    source = shop_source(rows=16)
    with pytest.raises(
        UserError,
        match=r"LoRA target_modules \['qkv'\] match no linear layer of ViTModel; its linear "
        r"layers are \['fc1', 'fc2', 'k_proj', 'o_proj', 'q_proj', 'v_proj'\]",
    ):
        MultiTaskTrainer(
            new_model(source), arguments(tmp_path, lora_rank=4, lora_target_modules="qkv"), train_dataset=source
        )


def test_lora_refusals(tmp_path, monkeypatch):
    source = shop_source(rows=16)
    with pytest.raises(UserError, match="freeze_backbone with lora_rank: LoRA already keeps"):
        arguments(tmp_path, lora_rank=4, freeze_backbone=True)
    with pytest.raises(UserError, match="push_to_hub with lora_rank would upload the adapters"):
        arguments(tmp_path, lora_rank=4, push_to_hub=True, hub_model_id="shop/tagger")
    model = new_model(source)
    model.add_lora(8)
    with pytest.raises(UserError, match="the model has LoRA adapters .* and the arguments ask for"):
        MultiTaskTrainer(model, arguments(tmp_path, lora_rank=4), train_dataset=source)
    model.save_pretrained(tmp_path / "adapters")
    with pytest.raises(UserError, match="holds LoRA adapters, which load only where peft and mtl_hf are installed"):
        from mtl_hf.hub.push import push_folder

        push_folder(tmp_path / "adapters", "shop/tagger")
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(new_model(source), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(TypeError, match="for LoRA, set lora_rank"):
        MultiTaskTrainer(wrapped, arguments(tmp_path), train_dataset=source)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match=r"lora_rank needs peft, which is not installed: pip install 'mtl_hf\[peft\]'"):
        arguments(tmp_path, lora_rank=4)


def test_a_plain_model_is_refused_by_merge(tmp_path):
    model = MultiTaskViTModel(new_model(shop_source(rows=8)).config)
    model.save_pretrained(tmp_path / "plain")
    assert cli(["merge", str(tmp_path / "plain"), str(tmp_path / "out")]) == 2


def test_the_remote_code_needs_no_peft_to_load_a_plain_model(tmp_path):
    """transformers refuses remote code whose imports (outside try blocks) are not installed: peft stays optional."""
    from transformers.dynamic_module_utils import get_imports, get_relative_import_files

    new_model(shop_source(rows=8)).save_pretrained(tmp_path)
    modeling = str(tmp_path / "modeling_mtl_vit.py")
    loaded = [modeling, *get_relative_import_files(modeling)]  # what AutoModel's remote code loads
    imported = {name for path in loaded for name in get_imports(path)}
    # safetensors (training_rows.safetensors) comes wherever transformers does: it is one of its requirements.
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers", "safetensors"}, imported
    from importlib.metadata import requires

    assert any(line.startswith("safetensors") and "extra" not in line for line in requires("transformers"))
    # The pipeline (and the endpoint handler) also read photos: Pillow and numpy, which transformers brings.
    pipeline = str(tmp_path / "pipeline_mtl_vit.py")
    imported = {name for path in [pipeline, *get_relative_import_files(pipeline)] for name in get_imports(path)}
    assert imported - set(sys.stdlib_module_names) == {"torch", "transformers", "numpy", "PIL"}, imported


def test_a_merged_lora_model_pushes_and_loads_from_the_hub_without_mtl_hf(tmp_path, pixel_values):
    from tests.hub.local_hub import LocalHub
    from tests.test_hub import TOKEN, hub_env, run_loader

    trainer, _ = lora_run(tmp_path / "run")
    trainer.save_model(str(tmp_path / "model"))
    with torch.no_grad():
        expected = trainer.model.eval()(pixel_values).logits
    assert cli(["merge", str(tmp_path / "model"), str(tmp_path / "merged")]) == 0
    torch.save(pixel_values, tmp_path / "inputs.pt")
    with LocalHub(tmp_path / "hub") as hub:
        env = hub_env(hub, tmp_path)
        for folder, code in ((tmp_path / "model", 2), (tmp_path / "merged", 0)):
            result = subprocess.run(
                [sys.executable, "-m", "mtl_hf", "push", str(folder), "shop/lora-tagger", "--token", TOKEN],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert result.returncode == code, result.stderr[-2000:]
            if code == 2:  # the adapters' folder: one line naming the merge command
                assert "push a merged copy: mtl-hf merge" in result.stderr.strip().splitlines()[-1]
        loaded = run_loader("shop/lora-tagger", tmp_path / "inputs.pt", "--trust", env=env)
    assert loaded["mtl_hf_importable"] is False
    for task, value in loaded["logits"].items():
        torch.testing.assert_close(torch.tensor(value), expected[task], rtol=1e-4, atol=1e-5)
