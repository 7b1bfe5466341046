"""`mtl-hf export MODEL OUTPUT --format onnx`: one graph per model, a named output per task, a dynamic batch axis,
the label maps in its metadata; ONNX Runtime agrees with PyTorch on random and real photos for each backbone
family torch's exporter converts; `mtl-hf predict --engine onnx` tags a catalogue as PyTorch does."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import AutoModel

from mtl_hf import MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, load_shop_dataset
from tests.test_backbones import BACKBONES
from tests.training_helpers import shop_source

onnxruntime = pytest.importorskip("onnxruntime", reason="the ONNX tests need the onnx extra")

TASKS = ["category", "tags", "size"]
# ONNX Runtime's kernels sum in another order than PyTorch's: float32 rounding, on logits of order 1.
TOLERANCE = 1e-4
EXPORTED = ["vit", "deit", "dinov2", "clip_vision", "siglip_vision", "swin", "convnext"]


def saved_model(tmp_path, family: str):
    config, _ = BACKBONES[family]
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(tmp_path / "backbone")
    model = MultiTaskViTModel.from_backbone(
        str(tmp_path / "backbone"), tasks=shop_source(rows=16, tasks=TASKS).task_specs
    )
    model.save_pretrained(tmp_path / "model")
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(tmp_path / "model")
    return tmp_path / "model", model.eval()


def photos(count: int) -> torch.Tensor:
    transform = ImageTransforms(size=(32, 32))
    return transform.to_tensor(
        [transform.resize(row["image"].convert("RGB")) for row in load_shop_dataset(count, start=700)]
    )


@pytest.mark.parametrize("family", EXPORTED)
def test_onnx_runtime_answers_as_pytorch_for_each_backbone_family(tmp_path, family, capsys):
    folder, model = saved_model(tmp_path, family)
    assert cli(["export", str(folder), str(tmp_path / "onnx")]) == 0
    assert "largest difference" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == model.config.task_names
    assert [i.name for i in session.get_inputs()] == ["pixel_values"]
    for pixels in (torch.randn(1, 3, 32, 32), torch.randn(7, 3, 32, 32), photos(6)):  # batch sizes not traced
        exported = session.run(None, {"pixel_values": pixels.numpy()})
        with torch.no_grad():
            logits = model(pixel_values=pixels).logits
        for name, values in zip(model.config.task_names, exported, strict=True):
            np.testing.assert_allclose(values, logits[name].numpy(), atol=TOLERANCE, rtol=0, err_msg=name)
    described = json.loads(session.get_modelmeta().custom_metadata_map["mtl_hf"])
    assert described == json.loads((tmp_path / "onnx" / "onnx_tasks.json").read_text())
    assert [t["labels"] for t in described["tasks"]] == [spec.labels for spec in model.config.task_specs]
    assert described["input"]["shape"] == ["batch", 3, 32, 32]


def test_swin_exports_with_eager_attention_where_its_sdpa_path_does_not_convert(tmp_path, capsys):
    """torch 2.13's exporter fails on Swin's scaled-dot-product attention (a view of a transposed tensor); the
    export retries with the eager attention, checks it against the model as loaded, and records it."""
    folder, _ = saved_model(tmp_path, "swin")
    assert cli(["export", str(folder), str(tmp_path / "onnx")]) == 0
    assert json.loads((tmp_path / "onnx" / "onnx_tasks.json").read_text())["attention"] == "eager"
    folder, _ = saved_model(tmp_path / "vit", "vit")
    assert cli(["export", str(folder), str(tmp_path / "vit-onnx")]) == 0
    assert json.loads((tmp_path / "vit-onnx" / "onnx_tasks.json").read_text())["attention"] == "sdpa"
    capsys.readouterr()


def test_a_model_the_exporter_cannot_convert_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    folder, _ = saved_model(tmp_path, "vit")

    def unconvertible(*args, **kwargs):
        raise RuntimeError("Failed to decompose the FX graph") from ValueError("Cannot view a tensor")

    monkeypatch.setattr(torch.onnx, "export", unconvertible)
    capsys.readouterr()
    assert cli(["export", str(folder), str(tmp_path / "onnx")]) == 2
    printed = capsys.readouterr().err
    errors = [line for line in printed.splitlines() if line.startswith("mtl-hf export: error:")]
    assert errors == [
        "mtl-hf export: error: torch's ONNX exporter cannot convert this model's vit backbone (attention tried: sdpa, "
        "eager; ValueError: Cannot view a tensor)"
    ], printed
    assert "Traceback" not in printed and not (tmp_path / "onnx").exists()


def test_predict_with_the_onnx_engine_tags_as_pytorch_does(tmp_path, capsys):
    folder, _ = saved_model(tmp_path, "vit")
    assert cli(["export", str(folder), str(tmp_path / "onnx")]) == 0
    images = tmp_path / "photos"
    images.mkdir()
    for index, row in enumerate(load_shop_dataset(13, start=900)):
        row["image"].save(images / f"{index:02d}.png")
    (images / "broken.jpg").write_bytes(b"")
    assert cli(["predict", str(folder), str(images), "--output", str(tmp_path / "torch")]) == 0
    assert (
        cli(["predict", str(tmp_path / "onnx"), str(images), "--output", str(tmp_path / "ort"), "--engine", "onnx"])
        == 0
    )
    torch_rows = pq.read_table(tmp_path / "torch" / "predictions").to_pylist()
    onnx_rows = pq.read_table(tmp_path / "ort" / "predictions").to_pylist()
    assert len(onnx_rows) == 13
    for ours, theirs in zip(onnx_rows, torch_rows, strict=True):
        assert (ours["image"], ours["category"], ours["tags"]) == (theirs["image"], theirs["category"], theirs["tags"])
        assert ours["size"] == pytest.approx(theirs["size"], abs=TOLERANCE)
        assert [s["score"] for s in ours["category_scores"]] == pytest.approx(
            [s["score"] for s in theirs["category_scores"]], abs=TOLERANCE
        )
    summary = json.loads((tmp_path / "ort" / "predict_summary.json").read_text())
    assert summary["dropped_by_reason"] == {"UnidentifiedImageError": 1}
    capsys.readouterr()


def test_export_and_the_onnx_engine_refuse_bad_inputs_in_one_line(tmp_path, capsys, monkeypatch):
    folder, _ = saved_model(tmp_path, "vit")

    def refused(args, message):
        assert cli(args) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error

    capsys.readouterr()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    refused(["export", str(folder), str(tmp_path / "full")], "exists and is not empty")
    images = tmp_path / "photos"
    images.mkdir()
    load_shop_dataset(1)[0]["image"].save(images / "a.png")
    refused(
        ["predict", str(folder), str(images), "--output", str(tmp_path / "o"), "--engine", "onnx"], "has no model.onnx"
    )
    refused(
        ["predict", str(folder), str(images / "a.png"), "--engine", "onnx"],
        "--engine works on a catalogue: give --output OUT",
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it is not installed
    refused(["export", str(folder), str(tmp_path / "e")], "pip install 'mtl_hf[onnx]'")
    refused(
        ["predict", str(folder), str(images), "--output", str(tmp_path / "o2"), "--engine", "onnx"],
        "pip install 'mtl_hf[onnx]'",
    )


def test_a_calibrated_model_answers_with_its_calibration_through_onnx(tmp_path, capsys):
    folder, model = saved_model(tmp_path, "vit")
    tags = model.config.get_task("tags").labels
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = {
        "category": {"temperature": 4.0},
        "tags": {"temperature": 0.5, "thresholds": dict.fromkeys(tags, 0.05)},
    }
    calibrated = tmp_path / "calibrated"
    shutil.copytree(folder, calibrated)
    (calibrated / "config.json").write_text(json.dumps(config))
    assert cli(["export", str(calibrated), str(tmp_path / "onnx")]) == 0
    described = {
        task["name"]: task for task in json.loads((tmp_path / "onnx" / "onnx_tasks.json").read_text())["tasks"]
    }
    assert described["category"]["temperature"] == 4.0 and described["tags"]["thresholds"] == dict.fromkeys(tags, 0.05)
    assert "temperature" not in described["size"]
    images = tmp_path / "photos"
    images.mkdir()
    for index, row in enumerate(load_shop_dataset(6, start=900)):
        row["image"].save(images / f"{index:02d}.png")
    runs = {"raw": (folder, []), "torch": (calibrated, []), "ort": (tmp_path / "onnx", ["--engine", "onnx"])}
    rows = {}
    for name, (model_folder, flags) in runs.items():
        assert cli(["predict", str(model_folder), str(images), "--output", str(tmp_path / name), *flags]) == 0
        rows[name] = pq.read_table(tmp_path / name / "predictions").to_pylist()
    for raw, ours, theirs in zip(rows["raw"], rows["torch"], rows["ort"], strict=True):
        assert (ours["category"], ours["tags"]) == (theirs["category"], theirs["tags"]) and ours["category"] == raw[
            "category"
        ]
        assert [s["score"] for s in ours["category_scores"]] == pytest.approx(
            [s["score"] for s in theirs["category_scores"]], abs=TOLERANCE
        )
        # T = 4 flattens the scores: the best label's falls.
        assert ours["category_scores"][0]["score"] < raw["category_scores"][0]["score"]
    capsys.readouterr()
