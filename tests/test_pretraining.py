"""A pretrained start made offline: the builtin:shapes corpus, the pretraining recipe saving a plain backbone
(`backbone_output_dir`), and a downstream recipe starting from it (`backbone:`)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from transformers import AutoModel

from mtl_hf import MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import ModelArguments, build_model
from mtl_hf.data.builtin import load_builtin
from mtl_hf.data.builtin.shapes import POSITIONS, SHAPES, shapes_row

ROOT = Path(__file__).resolve().parent.parent


def test_shapes_rows_are_a_function_of_seed_and_index_and_label_what_is_drawn():
    assert shapes_row(5, seed=1) == shapes_row(5, seed=1)
    assert shapes_row(5, seed=1)["image"] != shapes_row(5, seed=2)["image"]
    train, evaluation = load_builtin("builtin:shapes", {"num_rows": 200, "eval_rows": 40, "image_size": 24})
    assert len(train) == 200 and len(evaluation) == 40
    assert train.features["shape"].names == SHAPES and train.features["position"].names == POSITIONS
    assert evaluation[0]["shape"] == shapes_row(200, image_size=24)["shape"]  # evaluation rows follow on
    assert train[0]["image"].size == (24, 24)
    for column, classes in (("shape", 8), ("count", 4), ("position", 4)):
        assert sorted(set(train[column])) == list(range(classes)), column  # every class occurs
    # The largest figure sits in its quadrant: the labelled quadrant differs most from the background there.
    # A plain, ungrainy image with one filled figure: its pixels that differ from the corner's colour lie
    # mostly in the labelled quadrant.
    checked = 0
    for index in range(400):
        row = shapes_row(index, image_size=32)
        if row["count"] != 0 or row["styles"]:
            continue
        pixels = np.asarray(Image.open(__import__("io").BytesIO(row["image"]["bytes"])).convert("RGB"), dtype=int)
        background = pixels[0, 0] if row["position"] != 0 else pixels[-1, -1]
        differs = np.abs(pixels - background).sum(axis=2) > 30
        halves = [differs[:16, :16], differs[:16, 16:], differs[16:, :16], differs[16:, 16:]]
        assert int(np.argmax([half.sum() for half in halves])) == row["position"], index
        checked += 1
    assert checked >= 20


def test_shapes_options_are_checked():
    with pytest.raises(ValueError, match=r"builtin:shapes takes no option\(s\) \['missing_rate'\]"):
        load_builtin("builtin:shapes", {"missing_rate": 0.1})


def run_pretraining(tmp_path, rows: int, eval_rows: int):
    """The shipped pretraining recipe, shortened and run: its backbone folder and its multi-task model folder."""
    values = yaml.safe_load((ROOT / "recipes" / "configs" / "pretrain_shapes.yaml").read_text())
    values.update(
        dataset_options={"num_rows": rows, "eval_rows": eval_rows, "image_size": 32},
        num_train_epochs=1,
        output_dir=str(tmp_path / "pretraining"),
        backbone_output_dir=str(tmp_path / "backbone"),
        disable_tqdm=True,
    )
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text(yaml.safe_dump(values))
    assert cli(["train", str(recipe)]) == 0
    return tmp_path / "backbone", tmp_path / "pretraining"


@pytest.fixture
def pretrained(tmp_path):
    return run_pretraining(tmp_path, rows=192, eval_rows=32)


def test_the_backbone_is_saved_from_the_gathered_model_not_the_ranks_live_module(tmp_path, monkeypatch):
    """Under FSDP a rank's live module holds a shard; Trainer's save gathers the whole model into the folder. The
    backbone folder must come from that save: here the live backbone is wiped right after it (as a shard's view
    would differ), and the backbone saved is still the trained one."""
    from mtl_hf import MultiTaskTrainer

    save_model = MultiTaskTrainer.save_model

    def save_then_shard(self, output_dir=None, _internal_call=False):
        save_model(self, output_dir, _internal_call)
        if not _internal_call:
            for parameter in self.model.backbone.parameters():
                parameter.data.zero_()

    monkeypatch.setattr(MultiTaskTrainer, "save_model", save_then_shard)
    backbone, run = run_pretraining(tmp_path, rows=32, eval_rows=8)
    trained = MultiTaskViTModel.from_pretrained(run).backbone.state_dict()
    plain = AutoModel.from_pretrained(backbone).state_dict()
    assert any(value.abs().sum() > 0 for value in trained.values())
    assert all(torch.equal(plain[key], trained[key]) for key in trained)


def test_pretraining_saves_a_plain_backbone_that_a_downstream_recipe_starts_from(pretrained, tmp_path):
    backbone, model_folder = pretrained
    assert sorted(path.name for path in backbone.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert json.loads((backbone / "config.json").read_text())["model_type"] == "vit"
    trained = MultiTaskViTModel.from_pretrained(model_folder).backbone.state_dict()
    plain = AutoModel.from_pretrained(backbone)  # a plain ViT, loadable without mtl_hf
    assert type(plain).__name__ == "ViTModel"
    assert all(torch.equal(plain.state_dict()[key], trained[key]) for key in trained)

    # A downstream model on other tasks starts from exactly those weights, with fresh heads.
    specs = [{"name": "category", "type": "classification", "labels": ["a", "b", "c"]}]
    model, processor = build_model(ModelArguments(backbone=str(backbone)), specs)
    started = model.backbone.state_dict()
    assert started.keys() == trained.keys() and all(torch.equal(started[key], trained[key]) for key in trained)
    assert processor.size == {"height": 32, "width": 32}
    assert [spec.name for spec in model.config.task_specs] == ["category"]


def test_a_lora_backbone_is_not_saved_as_a_plain_one(pretrained):
    _, model_folder = pretrained
    model = MultiTaskViTModel.from_pretrained(model_folder)
    model.add_lora(rank=2)
    with pytest.raises(ValueError, match="merge_lora\\(\\) first"):
        model.save_backbone(model_folder / "lora-backbone")
    assert not (model_folder / "lora-backbone").exists()
