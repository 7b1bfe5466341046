"""The training recipe (recipes/train.py, `mtl-hf train`): parsing, a short demo run end to end, resume, DDP."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from mtl_hf import MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import DataArguments, ModelArguments
from mtl_hf.commands.recipe import parse_recipe as parse_args

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "recipes" / "configs"
DEMO = CONFIGS / "demo.yaml"
SHORT_DEMO = [
    "--dataset_options",
    '{"num_rows": 1024, "eval_rows": 256}',
    "--num_train_epochs",
    "3",
    "--disable_tqdm",
    "true",
]


def test_yaml_values_and_command_line_overrides(tmp_path):
    flags = [
        "--learning_rate",
        "1e-3",
        "--output_dir",
        str(tmp_path),
        "--weighting",
        "dwa",
        "--dataset_options",
        '{"num_rows": 100}',
    ]
    model_args, data_args, args = parse_args([str(DEMO), *flags])
    assert args.learning_rate == 1e-3  # typed by the parser, not left a string
    assert args.output_dir == str(tmp_path) and args.weighting == "dwa"
    assert args.num_train_epochs == 20 and args.report_to == ["tensorboard"]  # from the YAML
    assert data_args.dataset == "builtin:shop" and data_args.dataset_options == {"num_rows": 100}
    assert data_args.tasks["size"] == "size"
    assert model_args.backbone_config["patch_size"] == 4


def test_every_shipped_config_parses():
    names = sorted(path.name for path in CONFIGS.glob("*.yaml"))
    assert names == ["catalogue.yaml", "demo.yaml", "digits.yaml", "fashion_products.yaml", "pretrain_shapes.yaml"]
    for path in CONFIGS.glob("*.yaml"):
        model_args, data_args, args = parse_args([str(path), "--use_cpu", "true"])  # fashion asks for bf16 on a GPU
        assert data_args.source_settings() and args.output_dir.startswith("outputs/")


def test_bad_configs_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.yaml"):
        parse_args([str(tmp_path / "no_such.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_args([str(bad)])
    with pytest.raises(ValueError, match="--epochs"):
        parse_args([str(DEMO), "--epochs", "3"])
    with pytest.raises(ValueError, match="exactly one of model_name_or_path"):
        ModelArguments(backbone="some/vit", backbone_config={"image_size": 32})
    with pytest.raises(ValueError, match="dataset and tasks"):
        DataArguments(dataset="builtin:shop")
    with pytest.raises(ValueError, match=r"sources\[0\]: unknown keys \['column'\]"):
        DataArguments(sources=[{"dataset": "x", "tasks": ["a"], "column": "a"}]).source_settings()


def test_short_demo_trains_every_task_and_leaves_a_complete_output_folder(tmp_path):
    out = tmp_path / "demo"
    assert cli(["train", str(DEMO), "--output_dir", str(out), *SHORT_DEMO]) == 0

    results = json.loads((out / "all_results.json").read_text())
    chance = json.loads((out / "eval_chance_results.json").read_text())
    for key in [
        "eval_category_accuracy",
        "eval_colour_accuracy",
        "eval_pattern_accuracy",
        "eval_tags_micro_f1",
        "eval_size_r2",
        "eval_average_score",
        "train_loss",
    ]:
        assert key in results, key
    # 48 steps are enough for the easy tasks to leave chance far behind.
    assert results["eval_colour_accuracy"] > chance["eval_colour_accuracy"] + 0.4
    assert results["eval_pattern_accuracy"] > chance["eval_pattern_accuracy"] + 0.2

    model = AutoModel.from_pretrained(out)
    assert isinstance(model, MultiTaskViTModel)
    assert model.config.task_names == ["category", "colour", "pattern", "tags", "size"]
    assert model.config.get_task("colour").labels[:3] == ["red", "green", "blue"]  # ClassLabel names from the data
    size = model.config.get_task("size")  # standardised with the training rows' statistics, no hand-set weight
    assert (
        size.loss_weight == 1.0 and size.target_scaling == "standard" and 700 < size.target_statistics["count"] < 1024
    )
    assert AutoImageProcessor.from_pretrained(out).size == {"height": 32, "width": 32}

    with Image.open(out / "training_curves.png") as curves:
        assert curves.format == "PNG" and curves.size[0] > 500
    card = ModelCard.load(out / "README.md")
    assert "![Per-task loss and metric curves](training_curves.png)" in card.text
    assert f"{results['eval_colour_accuracy']:.4f}" in card.text
    # Calibrated on the evaluation rows at the end: every classification / multilabel task, in the card too.
    calibration = model.config.calibration
    assert set(calibration) == {"category", "colour", "pattern", "tags"}
    assert all(entry["rows"] >= 200 and entry["temperature"] > 0 for entry in calibration.values())
    assert set(calibration["tags"].get("thresholds", {})) <= set(model.config.get_task("tags").labels)
    assert "## Calibration" in card.text and "![Reliability before and after calibration](calibration.png)" in card.text
    assert f"| `colour` | {calibration['colour']['rows']} |" in card.text
    with Image.open(out / "calibration.png") as diagram:
        assert diagram.format == "PNG"
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert events, "report_to: tensorboard leaves event files under runs/"
    assert list(out.glob("checkpoint-*")), "save_strategy: epoch keeps the last checkpoint"


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    def run(out, *flags):
        return parse_and_run(
            [
                str(DEMO),
                "--output_dir",
                str(out),
                "--dataset_options",
                '{"num_rows": 256, "eval_rows": 32}',
                "--save_strategy",
                "steps",
                "--save_steps",
                "3",
                "--eval_strategy",
                "no",
                "--report_to",
                "none",
                "--logging_steps",
                "1",
                "--save_total_limit",
                "2",
                "--disable_tqdm",
                "true",
                *flags,
            ]
        )

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="holds no complete checkpoint to resume from; start a fresh run"):
        run(out, "--max_steps", "6", "--resume_from_checkpoint", "true")
    run(out, "--max_steps", "6")
    straight = AutoModel.from_pretrained(out).state_dict()

    # Interrupted after step 3: only checkpoint-3 is left, its state marked so that we can tell it was read.
    shutil.rmtree(out / "checkpoint-6")
    state_file = out / "checkpoint-3" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"].append({"step": 3, "marker": 1})
    state_file.write_text(json.dumps(state))

    run(out, "--max_steps", "6", "--resume_from_checkpoint", "true")
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert {"step": 3, "marker": 1} in state["log_history"]
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    # The same weights as the uninterrupted run: steps 4-6 saw the same batches and learning rates.
    resumed = AutoModel.from_pretrained(out).state_dict()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6)


def parse_and_run(argv):
    from mtl_hf.commands.train import run

    return run(*parse_args(argv))  # errors as exceptions (main() turns user errors into exit code 2)


# 15 s; the other multi-process tests (test_multi_node, test_distributed) stay in the default suite.
@pytest.mark.slow
def test_two_process_launch_trains_with_world_size_two(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        str(ROOT / "recipes" / "train.py"),
        str(DEMO),
        "--output_dir",
        str(out),
        "--max_steps",
        "6",
        "--dataset_options",
        '{"num_rows": 256, "eval_rows": 64}',
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    card = ModelCard.load(out / "README.md")
    assert "| devices | 2 |" in card.text  # both ranks joined one process group
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # Each rank evaluated its half; the metrics cover all 64 rows once.
    results = json.loads((out / "all_results.json").read_text())
    assert "eval_category_accuracy" in results
    assert torch.load(out / "training_args.bin", weights_only=False).world_size == 2


@pytest.mark.slow
def test_full_demo_beats_chance_on_every_task(tmp_path):
    out = tmp_path / "demo"
    assert cli(["train", str(DEMO), "--output_dir", str(out), "--disable_tqdm", "true"]) == 0
    results = json.loads((out / "all_results.json").read_text())
    chance = json.loads((out / "eval_chance_results.json").read_text())
    # README: 0.936 / 1.000 / 0.996 / 1.000 / 0.884 against chance 0.234 / 0.144 / 0.265 / 0.465 / 0.
    assert results["eval_category_accuracy"] > 0.85 > chance["eval_category_accuracy"] + 0.5
    assert results["eval_colour_accuracy"] > 0.95 > chance["eval_colour_accuracy"] + 0.5
    assert results["eval_pattern_accuracy"] > 0.95 > chance["eval_pattern_accuracy"] + 0.5
    assert results["eval_tags_micro_f1"] > 0.9 > chance["eval_tags_micro_f1"] + 0.3
    assert results["eval_size_r2"] > 0.7


FASHION_COLUMNS = {
    "gender": ["Men", "Women", "Boys", "Girls", "Unisex"],
    "masterCategory": ["Apparel", "Accessories", "Footwear", "Personal Care"],
    "subCategory": ["Topwear", "Bottomwear", "Shoes", "Bags", "Watches"],
    "articleType": ["Tshirts", "Shirts", "Jeans", "Casual Shoes", "Handbags", "Watches"],
    "baseColour": ["Navy Blue", "Black", "White", "Red", None],
    "season": ["Summer", "Fall", "Winter", "Spring", None],
    "usage": ["Casual", "Formal", "Sports", None],
}


def fashion_lookalike(folder: Path, rows: int = 48) -> Path:
    """A small local dataset with the columns (and string labels, with gaps) of ashraq/fashion-product-images-small."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    generator = torch.Generator().manual_seed(0)
    data = {"id": list(range(rows)), "year": [2012.0] * rows, "productDisplayName": [f"item {i}" for i in range(rows)]}
    for column, values in FASHION_COLUMNS.items():
        data[column] = [values[i % len(values)] for i in range(rows)]
    data["image"] = [
        Image.fromarray((torch.rand(40, 30, 3, generator=generator) * 255).byte().numpy()) for _ in range(rows)
    ]
    features = Features(
        {
            **{c: Value("string") for c in FASHION_COLUMNS},
            "id": Value("int64"),
            "year": Value("float64"),
            "productDisplayName": Value("string"),
            "image": ImageFeature(),
        }
    )
    Dataset.from_dict(data, features=features).save_to_disk(str(folder))
    return folder


def tiny_pretrained_backbone(folder: Path) -> Path:
    """A local stand-in for google/vit-base-patch16-224-in21k: ViT weights and a ViTImageProcessor config."""
    from transformers import ViTImageProcessorPil, ViTModel

    from .conftest import tiny_vit_config

    ViTModel(tiny_vit_config(patch_size=8)).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config["image_processor_type"] = "ViTImageProcessor"  # as the Hub checkpoint's file says
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    return folder


def test_fashion_config_maps_the_fashion_columns_to_tasks(tmp_path):
    _, data_args, args = parse_args([str(CONFIGS / "fashion_products.yaml"), "--use_cpu", "true"])
    assert data_args.dataset == "ashraq/fashion-product-images-small"
    assert data_args.tasks == {
        "master_category": "masterCategory",
        "sub_category": "subCategory",
        "article_type": "articleType",
        "base_colour": "baseColour",
        "season": "season",
        "usage": "usage",
        "gender": "gender",
    }
    assert args.weighting == "uncertainty" and args.metric_for_best_model == "relative_score"

    data = fashion_lookalike(tmp_path / "fashion")
    backbone = tiny_pretrained_backbone(tmp_path / "vit")
    out = tmp_path / "out"
    parse_and_run(
        [
            str(CONFIGS / "fashion_products.yaml"),
            "--dataset",
            str(data),
            "--backbone",
            str(backbone),
            "--output_dir",
            str(out),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--dataloader_num_workers",
            "0",
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "8",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
    )

    model = AutoModel.from_pretrained(out)
    expected = {
        task: sorted({v for v in FASHION_COLUMNS[column] if v is not None}) for task, column in data_args.tasks.items()
    }
    assert {spec.name: spec.labels for spec in model.config.task_specs} == expected
    assert all(spec.type == "classification" for spec in model.config.task_specs)
    # The backbone's weights came from the "pretrained" folder; the card names it as the base model.
    card = ModelCard.load(out / "README.md")  # a local backbone: named, never linked as a Hub model
    assert card.data.base_model is None and f"initialised from the local backbone `{backbone}`" in card.text
    assert list(AutoImageProcessor.from_pretrained(out).image_mean) == [0.5, 0.5, 0.5]
    results = json.loads((out / "all_results.json").read_text())
    for task in data_args.tasks:
        assert f"eval_{task}_accuracy" in results
    # Best-model selection by the average score ran on the held-out 10%.
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_metric"] is not None and state["best_model_checkpoint"]


def test_several_sources_and_streaming(tmp_path):
    config = tmp_path / "mixed.yaml"
    config.write_text(f"""
sources:
  - dataset: builtin:shop
    tasks: [category, colour]
    dataset_options: {{num_rows: 96, eval_rows: 32}}
    streaming: true
  - dataset: builtin:digits
    tasks: {{digit: digit}}
max_eval_rows: 40
backbone_config: {{image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2,
                  intermediate_size: 64}}
output_dir: {tmp_path / "out"}
max_steps: 4
per_device_train_batch_size: 16
sampling_strategy: uniform
save_strategy: "no"
report_to: none
use_cpu: true
disable_tqdm: true
""")
    parse_and_run([str(config)])
    out = tmp_path / "out"
    model = AutoModel.from_pretrained(out)
    assert model.config.task_names == ["category", "colour", "digit"]
    results = json.loads((out / "all_results.json").read_text())
    assert {"eval_category_accuracy", "eval_colour_accuracy", "eval_digit_accuracy"} <= set(results)
    text = ModelCard.load(out / "README.md").text
    assert "shop (96 rows; tasks category, colour; synthetic product photos drawn by mtl_hf at 32 px" in text
    assert "digits (1437 rows; tasks digit; scikit-learn's 1,797 handwritten 8x8 digit scans" in text
    assert "shop_eval (32 rows)" in text and "digits_eval (40 rows)" in text  # max_eval_rows caps each source
