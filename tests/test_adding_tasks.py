"""A new task on a trained model (`mtl-hf add-task`, the recipe's `add_tasks_to:`): in `heads` and `lora` mode the old
answers are bit-identical; in `full` mode distillation keeps them closer than training without it; the old tasks are
scored before and after, and a model past `max_old_task_drop` is kept aside, nothing written where it was asked to
go; the added model loads where mtl_hf is not installed. The new task's labels sit in a table with no old-task
column."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl_hf import MultiTaskTrainer, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, load_shop_dataset
from tests.compat.answering import THIS_VENV, answer_without_mtl_hf
from tests.own_catalogue import write_catalogue
from tests.training_helpers import arguments, new_model, shop_source

BACKBONE = '{"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}'  # noqa: E501
QUICK = ["--max_steps", "6", "--use_cpu", "true", "--save_strategy", "no", "--disable_tqdm", "true"]
TABLE = ["--image_column", "image_path", "--id_column", "sku"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A catalogue, a table of its colours alone (sku, photo, colour), and a model `mtl-hf train` saved on its
    category and price."""
    folder = tmp_path_factory.mktemp("shop")
    table = write_catalogue(folder, 80, broken=False)
    colours = write_table(
        folder / "colours.csv",
        [{key: row[key] for key in ("sku", "image_path", "colour")} for row in read_table(table)],
    )
    old = folder / "old"
    code = cli(
        ["train", "--dataset", str(table), "--tasks", '["category", "price"]', "--backbone_config", BACKBONE]
        + ["--output_dir", str(old), "--per_device_train_batch_size", "16", "--learning_rate", "3e-3"]
        + ["--report_to", "none", *TABLE, *QUICK]
    )
    assert code == 0
    return folder, table, colours, old


def read_table(path: Path) -> list[dict]:
    with open(path) as file:
        return list(csv.DictReader(file))


def write_table(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def add_task(shop, output: str, *flags: str) -> int:
    folder, _, colours, old = shop
    return cli(
        ["add-task", str(old), str(colours), "--tasks", "colour", "--output", str(folder / output)]
        + [*TABLE, *QUICK, *flags]
    )


def error_lines(capsys) -> list[str]:
    """The command's error lines (stderr also holds the loading bars of transformers)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtl-hf add-task: error")]


def photos(count=6) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def answers(model, pixel_values) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return model.eval()(pixel_values).logits


@pytest.mark.parametrize("mode", ["heads", "lora"])
def test_heads_and_lora_keep_every_old_answer_bit_identical(shop, mode, capsys):
    folder, _, _, old = shop
    assert add_task(shop, f"added_{mode}", "--mode", mode, "--learning_rate", "1e-2") == 0
    before = MultiTaskViTModel.from_pretrained(old)
    after = MultiTaskViTModel.from_pretrained(folder / f"added_{mode}")
    assert after.task_names == ["category", "price", "colour"]
    old_answers, new_answers = answers(before, photos()), answers(after, photos())
    for task in ("category", "price"):
        assert torch.equal(old_answers[task], new_answers[task]), task
    record = json.loads((folder / f"added_{mode}" / "added_tasks.json").read_text())
    assert record["mode"] == mode and record["new_tasks"] == ["colour"] and record["rows"] > 0
    assert all(row["before"] == row["after"] for row in record["scores"])
    assert "## Tasks added to an earlier model" in (folder / f"added_{mode}" / "README.md").read_text()
    assert not (folder / f"added_{mode}.incomplete").exists()
    if mode == "lora":
        # The adapters trained, and the new head reads the adapted backbone: without them its answers differ.
        assert after.config.task_adapter["tasks"] == ["colour"]
        assert any(update.up.abs().sum() > 0 for update in after.task_adapter.updates)
        plain = MultiTaskViTModel.from_pretrained(folder / f"added_{mode}")
        for update in plain.task_adapter.updates:
            torch.nn.init.zeros_(update.up)
        assert not torch.allclose(answers(plain, photos())["colour"], new_answers["colour"])


@pytest.mark.parametrize(("mode", "kept"), [("heads", True), ("full", False)])
def test_old_tasks_keep_their_calibration_only_where_their_answers_did_not_move(shop, tmp_path, mode, kept, capsys):
    _, _, colours, old = shop
    calibrated = tmp_path / "calibrated"
    shutil.copytree(old, calibrated)
    config = json.loads((calibrated / "config.json").read_text())
    config["calibration"] = {"category": {"temperature": 2.5}}
    (calibrated / "config.json").write_text(json.dumps(config))
    output = tmp_path / "added"
    flags = ["--tasks", "colour", "--output", str(output), "--mode", mode, *TABLE, *QUICK]
    assert cli(["add-task", str(calibrated), str(colours), *flags]) == 0
    # The colours table's evaluation rows have no category: nothing refits it, so it is kept or dropped as is.
    calibration = MultiTaskViTModel.from_pretrained(output).config.calibration or {}
    assert ("category" in calibration) is kept
    if kept:
        assert calibration["category"] == {"temperature": 2.5}
    else:
        assert "calibration of ['category'] dropped: training moved their answers" in capsys.readouterr().out


@pytest.mark.parametrize("transformers_version", [THIS_VENV, "lowest", "newest"])
def test_the_added_model_loads_where_mtl_hf_is_not_installed(shop, tmp_path, transformers_version):
    """The `lora` model (the one with remote code of its own) answers without mtl_hf, on this venv's transformers
    and on the lowest and newest supported ones, whose ViTs name the adapted layers differently (query / q_proj)."""
    folder, _, _, _ = shop
    if not (folder / "added_lora").is_dir():
        assert add_task(shop, "added_lora", "--mode", "lora") == 0
    model = folder / "added_lora"
    torch.save(photos(2), tmp_path / "inputs.pt")
    load_shop_dataset(1)[0]["image"].save(tmp_path / "photo.png")
    report = answer_without_mtl_hf(
        model, tmp_path / "inputs.pt", tmp_path / "photo.png", transformers_version, tmp_path
    )
    expected = answers(MultiTaskViTModel.from_pretrained(model), photos(2))
    assert set(report["logits"]) == {"category", "price", "colour"}
    for task, values in expected.items():
        assert torch.allclose(torch.tensor(report["logits"][task]), values, atol=1e-5), task
    assert set(report["pipeline"]["answers"]) == {"category", "price", "colour"}


def test_the_gate_refuses_a_model_whose_old_tasks_fell_and_keeps_it_aside(shop, capsys):
    folder = shop[0]
    # Full fine-tuning at a rate that wrecks the backbone, with no distillation: the old tasks must fall.
    code = add_task(
        shop,
        "wrecked",
        "--mode",
        "full",
        "--learning_rate",
        "3",
        "--head_learning_rate",
        "3",
        "--distill_weight",
        "0",
        "--max_old_task_drop",
        "0.05",
    )
    error = error_lines(capsys)
    assert code == 2 and len(error) == 1, error
    assert "more than max_old_task_drop 0.05" in error[0] and "the model was not saved to" in error[0]
    assert not (folder / "wrecked").exists() and not (folder / "wrecked.incomplete").exists()
    kept = folder / "wrecked.rejected"
    assert (kept / "model.safetensors").is_file()
    record = json.loads((kept / "added_tasks.json").read_text())
    assert any(row["before"] - row["after"] > 0.05 for row in record["scores"])
    assert f"kept in {kept}" in error[0]


def test_the_gate_lets_a_model_within_the_drop_through(shop):
    folder = shop[0]
    assert add_task(shop, "within", "--mode", "heads", "--max_old_task_drop", "0") == 0
    card = (folder / "within" / "README.md").read_text()
    assert "Saved because no task lost more than 0.0" in card


def test_distillation_keeps_the_old_heads_closer_than_training_without_it(tmp_path):
    """Seeded: the same full fine-tuning on a new task (pattern), with and without the model's earlier self as
    teacher; the old heads' answers on held-out photos move less with it."""
    old_source = shop_source(rows=96, tasks=["category", "colour"])
    original = new_model(old_source, seed=0)
    trainer = MultiTaskTrainer(
        original,
        arguments(tmp_path / "old", max_steps=30, learning_rate=3e-3),
        train_dataset=old_source,
        image_transforms=ImageTransforms(size=(32, 32)),
    )
    trainer.train()
    original.save_pretrained(tmp_path / "old_model")
    held_out = torch.stack([ImageTransforms(size=(32, 32))(row["image"]) for row in load_shop_dataset(32, start=5000)])
    before = answers(MultiTaskViTModel.from_pretrained(tmp_path / "old_model"), held_out)
    drift = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        model = MultiTaskViTModel.from_pretrained(tmp_path / "old_model")
        model.add_task(shop_source(rows=8, tasks=["pattern"]).task_specs[0])
        teacher = MultiTaskViTModel.from_pretrained(tmp_path / "old_model") if weight else None
        args = arguments(tmp_path / f"w{weight}", max_steps=30, learning_rate=3e-3, distill_weight=weight or 1.0)
        MultiTaskTrainer(
            model,
            args,
            train_dataset=shop_source(rows=96, start=1000, tasks=["pattern"]),
            image_transforms=ImageTransforms(size=(32, 32)),
            teacher=teacher,
        ).train()
        after = answers(model, held_out)
        drift[weight] = sum((after[task] - before[task]).abs().mean().item() for task in ("category", "colour"))
    assert drift[5.0] < 0.5 * drift[0.0], drift


def test_tasks_added_by_hand_save_with_the_image_processor_and_train_further(shop, tmp_path):
    _, table, _, old = shop
    model = MultiTaskViTModel.from_pretrained(old)
    model.add_task(
        {"name": "colour", "type": "classification", "labels": ["black", "blue", "green", "red", "white", "yellow"]}
    )
    model.save_pretrained(tmp_path / "by_hand")
    assert (tmp_path / "by_hand" / "preprocessor_config.json").is_file()
    os.remove(tmp_path / "by_hand" / "preprocessor_config.json")  # as a bare save_pretrained of a new model leaves it
    code = cli(
        ["train", "--model_name_or_path", str(tmp_path / "by_hand"), "--dataset", str(table)]
        + [
            "--tasks",
            '["category", "price", "colour"]',
            "--output_dir",
            str(tmp_path / "further"),
            "--report_to",
            "none",
            *TABLE,
            *QUICK,
        ]
    )
    assert code == 0
    assert (tmp_path / "further" / "preprocessor_config.json").is_file()


def test_a_saved_multitask_model_starts_new_heads_as_a_backbone(shop):
    _, _, _, old = shop
    saved = MultiTaskViTModel.from_pretrained(old)
    fresh = MultiTaskViTModel.from_backbone(
        str(old), tasks=[{"name": "ink", "type": "classification", "labels": ["a", "b"]}]
    )
    assert fresh.task_names == ["ink"]
    for (name, value), (_, expected) in zip(
        fresh.backbone.state_dict().items(), saved.backbone.state_dict().items(), strict=True
    ):
        assert torch.equal(value, expected), name


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tasks", "category"], "has such task(s) already"),
        (["--tasks", "colour", "--push_to_hub", "true", "--hub_model_id", "me/shop"], "mtl-hf push OUTPUT_DIR REPO_ID"),
        (["--tasks", "colour", "--lora_rank", "4"], "use add_task_mode: lora"),
        (
            ["--tasks", "colour", "--mode", "heads", "--max_old_task_drop", "0.1", "--old_data", "nowhere.csv"],
            "nowhere.csv",
        ),
    ],
)
def test_bad_inputs_are_one_line_and_leave_no_folder(shop, tmp_path, flags, message, capsys):
    folder, _, colours, old = shop
    out = tmp_path / "new"
    code = cli(["add-task", str(old), str(colours), "--output", str(out), *flags, *TABLE, *QUICK])
    error = error_lines(capsys)
    assert code == 2 and len(error) == 1 and message in error[0], error
    assert not out.exists() and not Path(str(out) + ".incomplete").exists()


def test_a_new_task_without_labelled_rows_is_refused(shop, tmp_path, capsys):
    folder, _, colours, old = shop
    rows = [
        {"sku": row["sku"], "image_path": str(folder / row["image_path"]), "ink": ""} for row in read_table(colours)
    ]
    blank = write_table(tmp_path / "blank.csv", rows)
    out = tmp_path / "new"
    code = cli(["add-task", str(old), str(blank), "--tasks", "ink", "--output", str(out), *TABLE, *QUICK])
    error = error_lines(capsys)
    assert code == 2 and len(error) == 1 and "ink" in error[0], error
    assert not out.exists() and not Path(str(out) + ".incomplete").exists()


def test_an_unmerged_lora_model_is_refused_with_the_fix(shop, tmp_path, capsys):
    pytest.importorskip("peft")
    _, _, colours, old = shop
    model = MultiTaskViTModel.from_pretrained(old)
    model.add_lora(rank=2)
    model.save_pretrained(tmp_path / "lora")
    code = cli(
        [
            "add-task",
            str(tmp_path / "lora"),
            str(colours),
            "--tasks",
            "colour",
            "--output",
            str(tmp_path / "new"),
            *TABLE,
            *QUICK,
        ]
    )
    error = error_lines(capsys)
    assert code == 2 and len(error) == 1 and "mtl-hf merge" in error[0], error


def test_a_gate_without_held_out_rows_is_refused_before_training(shop, tmp_path, capsys):
    _, _, colours, old = shop
    bare = tmp_path / "bare"
    MultiTaskViTModel.from_pretrained(old).save_pretrained(bare)  # no record of its data
    for name in ("config.json",):
        config = json.loads((bare / name).read_text())
        assert config.get("training_data") is not None
        config["training_data"] = None
        (bare / name).write_text(json.dumps(config))
    args = ["add-task", str(bare), str(colours), "--tasks", "colour", *TABLE, *QUICK]
    assert cli([*args, "--output", str(tmp_path / "gated"), "--max_old_task_drop", "0.01"]) == 2
    error = error_lines(capsys)
    assert len(error) == 1 and "give old_data" in error[0], error
    assert not (tmp_path / "gated").exists() and not (tmp_path / "gated.incomplete").exists()
    # Without a gate it trains, and says that the old tasks went unmeasured.
    assert cli([*args, "--output", str(tmp_path / "ungated")]) == 0
    assert "will not be scored before and after" in capsys.readouterr().out
    assert "scores" not in json.loads((tmp_path / "ungated" / "added_tasks.json").read_text())
    assert "were not scored before and after" in (tmp_path / "ungated" / "README.md").read_text()


def test_an_existing_output_folder_is_never_written(shop, tmp_path, capsys):
    _, _, colours, old = shop
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = cli(["add-task", str(old), str(colours), "--tasks", "colour", "--output", str(out), *TABLE, *QUICK])
    error = error_lines(capsys)
    assert code == 2 and len(error) == 1 and "exists" in error[0], error
    assert sorted(path.name for path in out.iterdir()) == ["keep.txt"]


def test_each_distillation_term_is_zero_at_a_perfect_match_and_grows_with_the_gap():
    from mtl_hf.training.distillation import Distillation

    source = shop_source(rows=16, tasks=["category", "tags", "size"])
    teacher, student = new_model(source, seed=0), new_model(source, seed=0)
    distillation = Distillation(teacher, student, weight=1.0, temperature=2.0)
    for task in ("category", "tags", "size"):
        width = teacher(photos(1)).logits[task].shape[-1]
        answer = torch.randn(5, width, generator=torch.Generator().manual_seed(0))
        same = distillation._term(student, task, answer, answer)
        apart = distillation._term(student, task, answer + torch.linspace(-2, 2, width), answer)
        assert abs(same.item()) < 1e-6 and apart.item() > 1e-3, (task, same, apart)


def test_a_model_with_a_task_adapter_exports_to_onnx_answering_as_pytorch(shop, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder = shop[0]
    if not (folder / "added_lora").is_dir():
        assert add_task(shop, "added_lora", "--mode", "lora") == 0
    assert cli(["export", str(folder / "added_lora"), str(tmp_path / "onnx")]) == 0
    # The export checks ONNX Runtime's answers against PyTorch's and names the largest difference.
    assert "outputs ['category', 'price', 'colour']" in capsys.readouterr().out


def test_two_ranks_add_a_task_with_distillation_and_gate_it_once(shop, tmp_path):
    """Under DDP (2 processes, gloo): the teacher answers on each rank, the gate scores on every rank, and the main
    process alone moves the folder into place."""
    folder, _, colours, old = shop
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--main_process_port", "29673", "-m", "mtl_hf", "add-task", str(old), str(colours), "--tasks", "colour"]
    command += ["--output", str(tmp_path / "ddp"), "--mode", "full", "--max_old_task_drop", "0.5", *TABLE, *QUICK]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "added_tasks.json").read_text())
    assert record["mode"] == "full" and {row["task"] for row in record["scores"]} == {"category", "price"}
    assert result.stdout.count("old tasks on ") == 1  # printed by the main process only
    assert not (tmp_path / "ddp.incomplete").exists()
    assert MultiTaskViTModel.from_pretrained(tmp_path / "ddp").task_names == ["category", "price", "colour"]


def test_the_old_tasks_own_rows_mix_in_beside_the_distillation(shop):
    folder, table, _, _ = shop
    assert add_task(shop, "with_old_rows", "--mode", "full", "--old_rows", str(table), "--logging_steps", "2") == 0
    logs = json.loads((folder / "with_old_rows" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in logs if "loss" in entry]
    assert steps and all("loss_distill" in entry for entry in steps)
    assert any("loss_category" in entry for entry in steps) and any("loss_colour" in entry for entry in steps)


def test_task_adapter_weights_missing_from_a_checkpoint_start_as_no_change(shop, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = shop[0]
    if not (folder / "added_lora").is_dir():
        assert add_task(shop, "added_lora", "--mode", "lora") == 0
    model = MultiTaskViTModel.from_pretrained(folder / "added_lora")
    model.save_pretrained(tmp_path / "bare")
    weights = load_file(tmp_path / "bare" / "model.safetensors")
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("task_adapter.")},
        tmp_path / "bare" / "model.safetensors",
        metadata={"format": "pt"},
    )
    loaded = MultiTaskViTModel.from_pretrained(tmp_path / "bare")
    assert all(torch.equal(update.up, torch.zeros_like(update.up)) for update in loaded.task_adapter.updates)
    assert all(
        torch.isfinite(update.down).all() and update.down.abs().sum() > 0 for update in loaded.task_adapter.updates
    )
    assert torch.isfinite(answers(loaded, photos())["colour"]).all()


def test_the_pipeline_runs_the_backbone_once_when_asked_for_one_path(shop, tmp_path):
    from transformers import pipeline

    folder = shop[0]
    if not (folder / "added_lora").is_dir():
        assert add_task(shop, "added_lora", "--mode", "lora") == 0
    classify = pipeline("multi-task-image-classification", model=str(folder / "added_lora"))
    passes = []
    classify.model.backbone.register_forward_hook(lambda *_: passes.append(1))
    photo = load_shop_dataset(1)[0]["image"]
    assert set(classify(photo, tasks=["category", "price"])["answers"]) == {"category", "price"} and len(passes) == 1
    assert set(classify(photo, tasks="colour")["answers"]) == {"colour"} and len(passes) == 2
    answered = set(classify(photo)["answers"])
    assert answered == {"category", "price", "colour"} and len(passes) == 4  # both paths: two passes


@pytest.mark.parametrize("mode", ["heads", "lora"])
def test_old_rows_with_frozen_old_heads_are_refused(shop, tmp_path, mode, capsys):
    _, table, colours, old = shop
    out = tmp_path / "new"
    args = ["add-task", str(old), str(colours), "--tasks", "colour", "--output", str(out), "--mode", mode]
    assert cli([*args, "--old_rows", str(table), *TABLE, *QUICK]) == 2
    error = error_lines(capsys)
    assert len(error) == 1 and "keeps frozen" in error[0] and "--mode full" in error[0], error
    assert not out.exists() and not Path(str(out) + ".incomplete").exists()


def test_a_lora_training_step_runs_the_backbone_once(tmp_path):
    """A batch of the new task's rows runs the heads of its source only (the collator names them), so training on a
    task adapter's path makes one backbone pass a step, not two."""
    model = new_model(shop_source(rows=16, tasks=["category", "colour"]), seed=0)
    model.add_task(shop_source(rows=8, tasks=["pattern"]).task_specs[0])
    model.add_task_adapter(["pattern"], rank=2)
    passes = []
    model.backbone.register_forward_hook(lambda *_: passes.append(1))
    args = arguments(tmp_path, max_steps=3, freeze_backbone=True, frozen_tasks=["category", "colour"])
    MultiTaskTrainer(
        model,
        args,
        train_dataset=shop_source(rows=48, tasks=["pattern"]),
        image_transforms=ImageTransforms(size=(32, 32)),
    ).train()
    assert len(passes) == 3
