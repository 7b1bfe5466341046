"""Answering below full precision, behind the precision gate: `mtl-hf export --quantize int8` (ONNX Runtime) and
`--dtype bf16` (PyTorch autocast) are used only where every task keeps its answers on held-out photos; a
quantisation made too coarse is refused naming the task, and nothing is written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset
from mtl_hf.data.builtin.tables import write_catalogue_table
from mtl_hf.inference.dtypes import cpu_has_bf16
from mtl_hf.metrics.agreement import GateLimits, engine_agreement
from mtl_hf.models.mtl_vit.tasks_mtl_vit import TaskSpec
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments

onnxruntime = pytest.importorskip("onnxruntime", reason="the int8 tests need the onnx extra")
onnx = pytest.importorskip("onnx")

TASKS = {"category": "category", "tags": {"type": "multilabel"}, "size": {"type": "regression"}}
# A tiny model trained for seconds has small margins: one changed answer in its 72 held-out photos is 1.4%.
LOOSE = ["--min_agreement", "0.95"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained 150 steps on 600 shop photos written as a catalogue table (split by sku)."""
    folder = tmp_path_factory.mktemp("shop")
    table = write_catalogue_table(load_shop_dataset(600), folder, "shop")
    source = TaskSource(str(table), TASKS, image_column="image_path", id_column="sku")
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    processor = ImageTransforms(size=(32, 32)).image_processor()
    training = arguments(folder / "run", max_steps=150, per_device_train_batch_size=32, learning_rate=3e-3)
    MultiTaskTrainer(model, training, train_dataset=source, processing_class=processor).train()
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    photos = folder / "to_tag"
    photos.mkdir()
    for index, row in enumerate(load_shop_dataset(12, start=2000)):
        row["image"].save(photos / f"{index:02d}.png")
    return {"folder": folder, "model": folder / "model", "table": table, "photos": photos}


def gate(trained) -> list[str]:
    return ["--gate_data", str(trained["table"]), "--gate_image_column", "image_path"]


def refused(capsys, args, *messages) -> str:
    capsys.readouterr()
    assert cli([str(arg) for arg in args]) == 2
    # stderr also holds the weights' loading bar where a model was loaded before the refusal
    lines = capsys.readouterr().err.strip().splitlines()
    error = [line for line in lines if not line.startswith("Loading weights")]
    assert len(error) == 1 and error[0].startswith("mtl-hf "), lines
    for message in messages:
        assert message in error[0], error[0]
    return error[0]


def test_engine_agreement_against_values_worked_by_hand():
    category = TaskSpec("category", "classification", labels=["a", "b", "c"])
    tags = TaskSpec("tags", "multilabel", labels=["x", "y"])
    size = TaskSpec("size", "regression")
    reference = {
        "category": np.array([[3.0, 0, 0], [0, 3, 0], [0, 0, 3], [1, 0, 0]]),
        # sigmoid(0) = 0.5 decides "in" at 0.5: x is in for rows 0 and 2
        "tags": np.array([[1.0, -1], [-1, -1], [0.5, 2], [-2, 2]]),
        "size": np.array([[1.0], [2.0], [3.0], [4.0]]),  # spread (std) sqrt(1.25)
    }
    candidate = {
        "category": np.array([[3.0, 0, 0], [0, 3, 0], [0, 4, 3], [1, 0, 0]]),  # row 2 changes: 3 of 4 agree
        "tags": np.array([[1.0, -1], [-1, -1], [0.5, 2], [-2, -0.1]]),  # y of row 3 changes: y agrees 3 of 4
        "size": np.array([[1.0], [2.5], [3.0], [4.0]]),
    }
    measured = {m.task: m for m in engine_agreement([category, tags, size], reference, candidate)}
    assert measured["category"].value == 0.75
    assert (measured["tags"].value, measured["tags"].worst_label) == (0.75, "y")
    assert measured["size"].value == pytest.approx(0.5 / np.sqrt(1.25))
    limits = GateLimits(min_agreement=0.75, max_regression_error=0.5)
    assert [m.failure(limits) for m in measured.values()] == [None, None, None]
    assert "0.7500 (label 'y') < 0.8" in measured["tags"].failure(GateLimits(min_agreement=0.8))
    # A calibrated threshold of 0.9 for y: sigmoid(2) = 0.88 is "out" in both, and y agrees everywhere.
    calibration = {"tags": {"temperature": 1.0, "thresholds": {"y": 0.9}}}
    again = engine_agreement([tags], reference, candidate, calibration=calibration)[0]
    assert (again.value, again.worst_label) == (1.0, "x")
    # With labels and a calibration, each engine's calibration error is measured on them.
    targets = {"category": np.array([0, 1, 2, 0])}
    scored = engine_agreement(
        [category], reference, candidate, calibration={"category": {"temperature": 1.0}}, targets=targets
    )[0]
    assert scored.ece_reference < scored.ece_candidate  # the changed row is now wrong, and sure of it


def test_an_int8_export_inside_the_gate_is_written_and_predict_answers_from_it(trained, tmp_path, capsys):
    output = tmp_path / "int8"
    assert cli(["export", str(trained["model"]), str(output), "--quantize", "int8", *gate(trained), *LOOSE]) == 0
    printed = capsys.readouterr().out
    assert "int8 (dynamic) against full precision on" in printed and "every task inside the gate" in printed
    graph = onnx.load(str(output / "model.onnx"))
    operators = {node.op_type for node in graph.graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= operators and "ConvInteger" not in operators
    described = json.loads((output / "onnx_tasks.json").read_text())
    assert json.loads({p.key: p.value for p in graph.metadata_props}["mtl_hf"]) == described
    gate_record = described["quantization"]["gate"]
    assert described["quantization"]["method"] == "dynamic"
    assert [row["task"] for row in gate_record["tasks"]] == ["category", "tags", "size"]
    assert gate_record["limits"]["min_agreement"] == 0.95 and gate_record["rows"] > 50
    assert all(row["value"] >= 0.95 for row in gate_record["tasks"][:2])
    assert gate_record["tasks"][2]["value"] <= GateLimits().max_regression_error

    runs = {"fp32": (trained["model"], []), "int8": (output, ["--engine", "onnx"])}
    rows = {}
    for name, (model, flags) in runs.items():
        tagged = tmp_path / f"tagged-{name}"
        assert cli(["predict", str(model), str(trained["photos"]), "--output", str(tagged), *flags]) == 0
        rows[name] = pq.read_table(tagged / "predictions").to_pylist()
    same = [a["category"] == b["category"] for a, b in zip(rows["fp32"], rows["int8"], strict=True)]
    assert sum(same) >= len(same) - 1
    assert [a["size"] for a in rows["int8"]] != [b["size"] for b in rows["fp32"]]  # it is another engine


def test_a_quantisation_made_too_coarse_is_refused_naming_the_task_and_nothing_is_written(
    trained, tmp_path, capsys, monkeypatch
):
    def coarse(source, target, method, calibration=()):
        """The category head's weights at one bit (their sign times their mean size); the rest as exported."""
        graph = onnx.load(str(source))
        for tensor in graph.graph.initializer:
            if tensor.name == "model.heads.category.out_proj.weight":
                values = onnx.numpy_helper.to_array(tensor)
                rounded = np.sign(values) * np.abs(values).mean()
                tensor.CopyFrom(onnx.numpy_helper.from_array(rounded.astype(values.dtype), tensor.name))
        onnx.save(graph, str(target))

    monkeypatch.setattr("mtl_hf.inference.quantization.quantize_graph", coarse)
    output = tmp_path / "coarse"
    error = refused(
        capsys,
        ["export", trained["model"], output, "--quantize", "int8", *gate(trained), *LOOSE],
        "fails the gate on",
        "task 'category': top-1 agreement",
        "nothing was written",
    )
    assert "task 'tags':" not in error and "task 'size':" not in error  # the others are only listed
    assert "every task: category" in error and "tags" in error and "size error" in error
    assert not output.exists()


def test_the_gate_limits_are_the_users_and_a_gate_without_photos_is_refused(trained, tmp_path, capsys):
    model = trained["model"]
    # The real int8 graph under a limit no quantisation meets: refused, naming the regression task.
    refused(
        capsys,
        [
            "export",
            model,
            tmp_path / "strict",
            "--quantize",
            "int8",
            *gate(trained),
            *LOOSE,
            "--max_regression_error",
            0,
        ],
        "task 'size': largest error",
    )
    assert not (tmp_path / "strict").exists()
    # Without --gate_data, the validation rows of the table the model recorded training on...
    assert cli(["export", str(model), str(tmp_path / "recorded"), "--quantize", "int8", *LOOSE]) == 0
    gate_data = json.loads((tmp_path / "recorded" / "onnx_tasks.json").read_text())["quantization"]["gate"]["data"]
    assert gate_data == f"split 'validation' of {trained['table']}"
    # ...and a model with no such record is refused: the gate is not skipped.
    unrecorded = tmp_path / "unrecorded"
    shutil.copytree(model, unrecorded)
    config = json.loads((unrecorded / "config.json").read_text())
    config["training_data"] = None
    (unrecorded / "config.json").write_text(json.dumps(config))
    refused(capsys, ["export", unrecorded, tmp_path / "a", "--quantize", "int8"], "records no table", "--gate_data")
    refused(capsys, ["export", model, tmp_path / "b", "--quantize", "int4"], "invalid choice: 'int4'")
    refused(capsys, ["export", model, tmp_path / "c", *gate(trained)], "--gate_data sets the precision gate")
    refused(capsys, ["export", model, tmp_path / "d", "--int8_method", "static"], "add --quantize int8")
    refused(
        capsys, ["export", model, tmp_path / "e", "--quantize", "int8", "--min_agreement", "1.5"], "--min_agreement"
    )


def test_static_int8_calibrates_on_photos_the_gate_then_leaves_out(trained, tmp_path, capsys):
    output = tmp_path / "static"
    args = ["export", trained["model"], output, "--quantize", "int8", "--int8_method", "static", *gate(trained)]
    assert cli([str(a) for a in [*args, "--min_agreement", "0.9", "--max_regression_error", "0.5"]]) == 0
    described = json.loads((output / "onnx_tasks.json").read_text())["quantization"]
    assert described["method"] == "static" and "after the 36 calibration photos" in described["gate"]["data"]
    operators = {node.op_type for node in onnx.load(str(output / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators
    capsys.readouterr()


def test_an_export_folder_whose_config_changed_after_the_export_is_refused(trained, tmp_path, capsys):
    output = tmp_path / "onnx"
    assert cli(["export", str(trained["model"]), str(output), "--quantize", "int8", *LOOSE]) == 0
    config = json.loads((output / "config.json").read_text())
    config["calibration"] = {"category": {"temperature": 2.0}}  # calibrated after the export, copied in
    (output / "config.json").write_text(json.dumps(config))
    refused(
        capsys,
        ["predict", output, trained["photos"], "--output", tmp_path / "o", "--engine", "onnx"],
        "calibrates task 'category' otherwise than its model.onnx was exported",
    )
    config["calibration"] = None
    config["tasks"] = [task for task in config["tasks"] if task["name"] != "size"]
    (output / "config.json").write_text(json.dumps(config))
    refused(
        capsys,
        ["predict", output, trained["photos"], "--output", tmp_path / "o", "--engine", "onnx"],
        "answers task(s) ['size'] that its config.json lacks",
    )


def test_a_tagging_run_is_not_resumed_with_another_graph(trained, tmp_path, capsys):
    output = tmp_path / "onnx"
    assert cli(["export", str(trained["model"]), str(output)]) == 0
    tagged = tmp_path / "tagged"
    assert cli(["predict", str(output), str(trained["photos"]), "--output", str(tagged), "--engine", "onnx"]) == 0
    shutil.copy(output / "model.onnx", tmp_path / "fp32.onnx")
    graph = onnx.load(str(output / "model.onnx"))
    graph.doc_string = "another graph"
    onnx.save(graph, str(output / "model.onnx"))
    refused(
        capsys,
        ["predict", output, trained["photos"], "--output", tagged, "--engine", "onnx"],
        "holds a run of another model",
    )


def test_bf16_is_refused_on_a_cpu_without_it_and_on_the_onnx_engine(trained, tmp_path, capsys, monkeypatch):
    model, photos = trained["model"], trained["photos"]
    refused(
        capsys,
        ["predict", model, photos, "--output", tmp_path / "o", "--dtype", "bf16", "--engine", "onnx"],
        "--dtype bf16 is the PyTorch engine's",
    )
    refused(capsys, ["predict", model, photos / "00.png", "--dtype", "bf16"], "--dtype works on a catalogue")
    monkeypatch.setattr("mtl_hf.inference.dtypes.cpu_has_bf16", lambda: False)
    refused(
        capsys,
        ["predict", model, photos, "--output", tmp_path / "o", "--dtype", "bf16", *gate(trained)],
        "this CPU has neither AVX512-BF16 nor AMX",
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_answers_behind_the_gate_as_full_precision_does(trained, tmp_path, capsys):
    model, photos = trained["model"], trained["photos"]
    assert cli(["predict", str(model), str(photos), "--output", str(tmp_path / "fp32")]) == 0
    flags = ["--output", str(tmp_path / "bf16"), "--dtype", "bf16", *gate(trained)]
    assert cli(["predict", str(model), str(photos), *flags]) == 0
    assert "bf16 against full precision on" in capsys.readouterr().out
    full = pq.read_table(tmp_path / "fp32" / "predictions").to_pylist()
    half = pq.read_table(tmp_path / "bf16" / "predictions").to_pylist()
    assert [row["category"] for row in half] == [row["category"] for row in full]
    assert [row["size"] for row in half] == pytest.approx([row["size"] for row in full], abs=0.05)
    assert [row["size"] for row in half] != [row["size"] for row in full]  # computed in bf16 indeed
    refused(
        capsys,
        ["predict", model, photos, "--output", tmp_path / "strict", *flags[2:], "--max_regression_error", "0"],
        "the bf16 forward fails the gate",
        "task 'size'",
    )
    assert not (tmp_path / "strict").exists()


def test_serve_answers_from_an_int8_export_as_from_the_model(trained, tmp_path, capsys):
    from mtl_hf.serving.predictor import ImagePredictor

    output = tmp_path / "int8"
    assert cli(["export", str(trained["model"]), str(output), "--quantize", "int8", *LOOSE]) == 0
    full, int8 = ImagePredictor(str(trained["model"])), ImagePredictor(str(output), engine="onnx")
    uploads = [path.read_bytes() for path in sorted(trained["photos"].iterdir())]
    answers = {
        name: predictor.answer([predictor.prepare(data, name="upload") for data in uploads])
        for name, predictor in (("full", full), ("int8", int8))
    }
    same = [
        a["answers"]["category"]["label"] == b["answers"]["category"]["label"]
        for a, b in zip(*answers.values(), strict=True)
    ]
    assert sum(same) >= len(same) - 1
    assert int8.metadata["tasks"] == full.metadata["tasks"]
    refused(
        capsys,
        ["serve", output, "--engine", "onnx", "--dtype", "bf16", "--port", "0"],
        "--dtype is the PyTorch engine's",
    )
