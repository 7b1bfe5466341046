"""A backbone folder as `save_pretrained` leaves it (no preprocessor_config.json): its image processor is built
from its config and its family's convention, with a one-line notice; the card never links a local folder."""

import json
import logging

import pytest
import yaml
from transformers import DeiTConfig, MobileViTConfig, ViTConfig, ViTImageProcessor, ViTModel

from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import ModelArguments
from mtl_hf.commands.recipe.assembly import build_model
from mtl_hf.data.backbone_processor import processor_from_config
from mtl_hf.errors import UserError
from mtl_hf.hub.card import build_model_card
from mtl_hf.models.mtl_vit.tasks_mtl_vit import TaskSpec

SPECS = [TaskSpec(name="category", type="classification", labels=["a", "b"])]
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)


def _backbone_folder(tmp_path, config):
    from transformers import AutoModel

    folder = tmp_path / config.model_type
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "config, mean, std",
    [
        (ViTConfig(**TINY, intermediate_size=64), [0.5] * 3, [0.5] * 3),
        (DeiTConfig(**TINY, intermediate_size=64), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ],
    ids=["vit", "deit"],
)
def test_a_backbone_without_a_processor_gets_one_from_its_config(tmp_path, config, mean, std, caplog):
    folder = _backbone_folder(tmp_path, config)
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data.backbone_processor"):
        _, processor = build_model(ModelArguments(backbone=str(folder)), SPECS)
    assert processor.size == {"height": 32, "width": 32}
    assert (list(processor.image_mean), list(processor.image_std)) == (mean, std)
    [notice] = [r.getMessage() for r in caplog.records if r.name == "mtl_hf.data.backbone_processor"]
    assert notice == (
        f"backbone {folder} has no preprocessor_config.json: photos are resized to 32x32 (its config's image_size) "
        f"and normalised with mean {mean} and std {std} (the {config.model_type} convention); save an image "
        "processor beside it to choose otherwise"
    )


def test_a_backbone_with_its_own_processor_keeps_it(tmp_path, caplog):
    folder = _backbone_folder(tmp_path, ViTConfig(**TINY, intermediate_size=64))
    ViTImageProcessor(size={"height": 48, "width": 40}, image_mean=[0.3] * 3, image_std=[0.2] * 3).save_pretrained(
        folder
    )
    with caplog.at_level(logging.WARNING):
        _, processor = build_model(ModelArguments(backbone=str(folder)), SPECS)
    assert processor.size == {"height": 48, "width": 40} and list(processor.image_mean) == [0.3] * 3
    assert not [r for r in caplog.records if "preprocessor_config" in r.getMessage()]


def test_a_family_without_a_known_convention_is_one_line():
    with pytest.raises(UserError) as error:
        processor_from_config("my-backbone", MobileViTConfig())
    assert str(error.value) == (
        "backbone my-backbone has no preprocessor_config.json, and mtl_hf does not know the convention of "
        "model_type 'mobilevit': save its image processor beside it "
        "(AutoImageProcessor.from_pretrained(<where it came from>).save_pretrained(folder))"
    )


def test_a_recipe_on_a_bare_backbone_folder_trains_and_its_card_links_no_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ViTModel(ViTConfig(**TINY, intermediate_size=64)).save_pretrained("my-vit-backbone")
    recipe = {
        "dataset": "builtin:shop",
        "dataset_options": {"num_rows": 16, "eval_rows": 8, "image_size": 32},
        "tasks": {"category": "category"},
        "backbone": "my-vit-backbone",
        "output_dir": "out",
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert cli(["train", "recipe.yaml"]) == 0
    saved = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 32, "width": 32} and saved["image_mean"] == [0.5] * 3
    card = (tmp_path / "out" / "README.md").read_text()
    assert "huggingface.co/my-vit-backbone" not in card and "base_model" not in card.split("---")[1]
    assert "initialised from the local backbone `my-vit-backbone`" in card


def test_the_card_links_a_hub_backbone_and_not_a_local_one(tmp_path):
    from mtl_hf import MultiTaskViTConfig

    backbone = ViTConfig(**TINY, intermediate_size=64)
    backbone._name_or_path = "google/vit-base-patch16-224-in21k"
    card = build_model_card(MultiTaskViTConfig(backbone_config=backbone, tasks=SPECS), model_name="m")
    assert card.data.base_model == "google/vit-base-patch16-224-in21k"
    assert "[google/vit-base-patch16-224-in21k](https://huggingface.co/google/vit-base-patch16-224-in21k)" in card.text
    backbone._name_or_path = str(tmp_path)  # a folder on this machine, even one named like owner/name
    card = build_model_card(MultiTaskViTConfig(backbone_config=backbone, tasks=SPECS), model_name="m")
    assert card.data.base_model is None and f"initialised from the local backbone `{tmp_path}`" in card.text


def test_a_loaded_model_saved_again_keeps_its_image_processor(tmp_path):
    """`from_pretrained` then `add_task` then `save_pretrained` (the README's way to add a head): the new folder has
    the processor the loaded one had, so that training, tagging and serving from it prepare photos the same way."""
    from mtl_hf import MultiTaskViTModel
    from mtl_hf.data import ImageTransforms

    from .test_predict_catalogue import save_model

    save_model(tmp_path / "model")
    processor = ImageTransforms(size=(32, 32), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)).image_processor()
    processor.save_pretrained(tmp_path / "model")
    model = MultiTaskViTModel.from_pretrained(tmp_path / "model")
    model.add_task({"name": "ink", "type": "regression"})
    model.save_pretrained(tmp_path / "grown")
    saved = tmp_path / "grown" / "preprocessor_config.json"
    assert saved.read_text() == (tmp_path / "model" / "preprocessor_config.json").read_text()
    # A model built from its config alone has no processor to write; loading it then uses the implied one.
    MultiTaskViTModel(model.config).save_pretrained(tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "preprocessor_config.json").exists()


def test_eval_scores_a_model_saved_without_its_processor_with_the_one_its_config_implies(tmp_path, capsys, caplog):
    """`model.save_pretrained(folder)` alone wrote no preprocessor_config.json: `mtl-hf eval` scores it with the
    processor its config implies, saying so in one line, and gives the scores of the same model with it saved."""
    import json

    from mtl_hf.commands.main import main as cli

    from .test_predict_catalogue import save_model

    save_model(tmp_path / "with")
    save_model(tmp_path / "bare")
    (tmp_path / "bare" / "preprocessor_config.json").unlink()
    scores = {}
    for name in ("with", "bare"):
        capsys.readouterr()
        assert cli(["eval", str(tmp_path / name), "builtin:shop", "--max_rows", "24", "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        scores[name] = {
            key: value for key, value in printed.items() if "runtime" not in key and "per_second" not in key
        }
    assert "model" in caplog.text and "has no preprocessor_config.json: photos are resized to 32x32" in caplog.text
    assert scores["bare"] == scores["with"]


def test_export_writes_the_implied_processor_of_a_model_saved_without_one(tmp_path, caplog):
    """`mtl-hf export` of a folder without preprocessor_config.json: the ONNX folder holds the processor the config
    implies (said in one notice), so that `predict --engine onnx` prepares photos as the PyTorch engine does."""
    import json

    import pytest

    pytest.importorskip("onnxruntime")
    from mtl_hf.commands.main import main as cli

    from .test_predict_catalogue import save_model

    save_model(tmp_path / "bare")
    saved = json.loads((tmp_path / "bare" / "preprocessor_config.json").read_text())
    (tmp_path / "bare" / "preprocessor_config.json").unlink()
    assert cli(["export", str(tmp_path / "bare"), str(tmp_path / "onnx")]) == 0
    assert "model" in caplog.text and "has no preprocessor_config.json" in caplog.text
    written = json.loads((tmp_path / "onnx" / "preprocessor_config.json").read_text())
    for key in ("size", "image_mean", "image_std", "resample"):
        assert written[key] == saved[key], key
