"""Regression targets in their own units (dollars, grams): standardised with the training rows' statistics for
the loss, reported in their units everywhere else; a task whose loss starts on another scale is named."""

import json
import logging
import math
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModel, pipeline

import mtl_hf  # noqa: F401  (the pipeline)
from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel, TaskSpec
from mtl_hf.data import ImageTransforms, TaskMixture, TaskSource, load_shop_dataset
from mtl_hf.data.selection import hold_out
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments

LOADER = "tests/hub/load_without_mtl_hf.py"


def priced_rows(count: int, start: int = 0, *, scale: dict[str, float] | None = None) -> datasets.Dataset:
    """Shop photos with a price in dollars and a weight in grams, both read off the product's size (missing
    where the size is), plus the category: targets on scales a shop's export has."""
    rows = load_shop_dataset(count, start=start, missing_rate=0.1)
    scale = scale or {"price": 1.0, "weight": 1.0}
    sizes = rows["size"]
    price = [None if s is None else (20.0 + 400.0 * s) * scale["price"] for s in sizes]
    weight = [None if s is None else (3000.0 * s * s) * scale["weight"] for s in sizes]
    return rows.add_column("price", price).add_column("weight", weight)


def present(values):
    return np.array([v for v in values if v is not None], dtype=np.float64)


def test_regression_tasks_standardise_by_default_and_other_types_refuse_it():
    spec = TaskSpec(name="price", type="regression")
    assert spec.target_scaling == "standard" and spec.target_statistics is None and not spec.scaled_targets
    assert TaskSpec(name="c", type="classification", labels=["a", "b"]).target_scaling is None
    with pytest.raises(ValueError, match="apply to regression tasks only"):
        TaskSpec(name="c", type="classification", labels=["a", "b"], target_scaling="standard")
    with pytest.raises(ValueError, match="every std > 0"):
        TaskSpec(name="p", type="regression", target_statistics={"mean": [1.0], "std": [0.0], "count": 3})
    with pytest.raises(ValueError, match="unknown target_scaling 'minmax'"):
        TaskSpec(name="p", type="regression", target_scaling="minmax")


def test_a_source_computes_the_statistics_of_its_own_rows_and_held_out_rows_take_the_training_rows():
    rows = priced_rows(200)
    source = TaskSource(rows, ["price", "category"])
    stats = source.task_specs[0].target_statistics
    prices = present(rows["price"])
    assert stats["count"] == len(prices) < 200
    assert stats["mean"] == pytest.approx([prices.mean()]) and stats["std"] == pytest.approx([prices.std()])

    train, held = hold_out(source, 0.25, seed=0)
    train_prices = present(rows.select(train.row_numbers)["price"])
    assert train.task_specs[0].target_statistics["mean"] == pytest.approx([train_prices.mean()])
    assert held.task_specs[0].target_statistics == train.task_specs[0].target_statistics

    unscaled = TaskSource(rows, {"price": {"target_scaling": "none"}})
    assert unscaled.task_specs[0].target_statistics is None


def test_sources_sharing_a_task_pool_their_statistics():
    rows = priced_rows(120)
    first = TaskSource(rows.select(range(50)), ["price"], name="first")
    second = TaskSource(rows.select(range(50, 120)), ["price"], name="second")
    mixture = TaskMixture([first, second], batch_size=8)
    prices = present(rows["price"])
    pooled = mixture.task_specs[0].target_statistics
    assert pooled["count"] == len(prices)
    assert pooled["mean"] == pytest.approx([prices.mean()]) and pooled["std"] == pytest.approx([prices.std()])
    assert first.task_specs[0].target_statistics["count"] < pooled["count"]  # the sources' own stay theirs


def test_the_head_learns_standardised_targets_and_answers_in_their_units():
    source = TaskSource(priced_rows(64), ["price"])
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs)).eval()
    stats = model.config.get_task("price").target_statistics
    pixel_values = torch.randn(4, 3, 32, 32)
    target = torch.tensor([40.0, float("nan"), 300.0, 120.0])
    with torch.no_grad():
        out = model(pixel_values, labels={"price": target})
        raw = model.heads["price"](model.backbone(pixel_values).last_hidden_state[:, 0])
    mean, std = stats["mean"][0], stats["std"][0]
    torch.testing.assert_close(out.logits["price"], raw * std + mean)
    standardised = (target - mean) / std
    keep = ~torch.isnan(target)
    expected = ((raw[:, 0] - standardised)[keep] ** 2).mean()
    torch.testing.assert_close(out.task_losses["price"], expected)


def train_prices(tmp_path, rows, evaluation_rows, tasks, seed=0):
    source = TaskSource(rows, tasks, name="shop")
    torch.manual_seed(seed)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    args = arguments(tmp_path, max_steps=30, learning_rate=3e-3, per_device_train_batch_size=32, seed=seed)
    transforms = ImageTransforms(size=(32, 32))
    trainer = MultiTaskTrainer(model, args, train_dataset=source, image_transforms=transforms)
    trainer.train()
    evaluation = TaskSource(evaluation_rows, source.fixed_tasks(), name="held")
    return model, trainer.predict(evaluation, metric_key_prefix="eval")


def test_dollars_and_grams_train_as_the_same_targets_scaled_by_hand(tmp_path):
    rows, held = priced_rows(256), priced_rows(96, start=1000)
    model, raw_units = train_prices(tmp_path / "raw", rows, held, ["price", "weight", "category"])

    # The same targets standardised by hand, with the statistics the source computed, and no scaling.
    statistics = {spec.name: spec.target_statistics for spec in model.config.task_specs if spec.type == "regression"}

    def by_hand(row):
        return {
            name: None if row[name] is None else (row[name] - stats["mean"][0]) / stats["std"][0]
            for name, stats in statistics.items()
        }

    plain = {name: {"target_scaling": "none"} for name in statistics}
    tasks = {**plain, "category": "category"}
    _, by_hand_scores = train_prices(tmp_path / "scaled", rows.map(by_hand), held.map(by_hand), tasks)
    for name in statistics:
        assert raw_units.metrics[f"eval_{name}_r2"] == pytest.approx(
            by_hand_scores.metrics[f"eval_{name}_r2"], abs=1e-4
        )
    assert raw_units.metrics["eval_category_accuracy"] == pytest.approx(
        by_hand_scores.metrics["eval_category_accuracy"]
    )
    # The model answers in dollars: its predictions sit on the targets' scale.
    predicted = raw_units.predictions["price"][:, 0]
    assert 20.0 <= np.median(predicted) <= 420.0


def test_the_saved_model_predicts_dollars_with_and_without_mtl_hf(tmp_path):
    source = TaskSource(priced_rows(64), ["price", "category"])
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["tasks"][0]["target_statistics"]["count"] > 0

    image = priced_rows(1, start=500)[0]["image"]
    pixel_values = ImageTransforms(size=(32, 32))(image).unsqueeze(0)
    with torch.no_grad():
        expected = model(pixel_values).logits["price"][0, 0].item()
    stats = model.config.get_task("price").target_statistics
    assert abs(expected - stats["mean"][0]) < 5 * stats["std"][0]  # dollars, not standard units

    answer = pipeline("multi-task-image-classification", model=str(folder))(image)
    assert answer["answers"]["price"]["value"] == pytest.approx(expected, rel=1e-5)
    reloaded = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        assert reloaded(pixel_values).logits["price"][0, 0].item() == pytest.approx(expected, rel=1e-5)

    torch.save(pixel_values, tmp_path / "inputs.pt")
    result = subprocess.run(
        [sys.executable, LOADER, str(folder), str(tmp_path / "inputs.pt"), "--trust"],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mtl_hf_importable"] is False and report["logits"]["price"][0][0] == pytest.approx(expected, rel=1e-5)


def test_a_model_built_without_statistics_takes_its_training_datas(tmp_path):
    source = TaskSource(priced_rows(64), ["price"])
    bare = [{"name": "price", "type": "regression"}]
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=bare))
    assert model.config.get_task("price").target_statistics is None
    MultiTaskTrainer(model, arguments(tmp_path), train_dataset=source)
    assert model.config.get_task("price").target_statistics == source.task_specs[0].target_statistics
    assert model.heads["price"].target_statistics == source.task_specs[0].target_statistics


def test_a_task_whose_first_loss_dwarfs_the_others_is_named(tmp_path, caplog):
    source = TaskSource(priced_rows(64), {"price": {"target_scaling": "none"}, "category": "category"})
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    trainer = MultiTaskTrainer(model, arguments(tmp_path, max_steps=2), train_dataset=source)
    with caplog.at_level(logging.WARNING, logger="mtl_hf.training.loss_guard"):
        trainer.train()
    warnings = [record.getMessage() for record in caplog.records if "starts with a loss" in record.getMessage()]
    assert len(warnings) == 1, warnings  # the first step only
    assert warnings[0].startswith("task 'price' starts with a loss of") and "task 'category'" in warnings[0]
    assert "target_scaling: standard" in warnings[0]

    caplog.clear()
    scaled = TaskSource(priced_rows(64), ["price", "category"])
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=scaled.task_specs))
    with caplog.at_level(logging.WARNING, logger="mtl_hf.training.loss_guard"):
        MultiTaskTrainer(model, arguments(tmp_path / "b", max_steps=2), train_dataset=scaled).train()
    assert not [r for r in caplog.records if "starts with a loss" in r.getMessage()]
    assert math.isfinite(model.config.get_task("price").target_statistics["std"][0])


def test_a_resumed_run_keeps_the_statistics_it_started_with(tmp_path):
    first = TaskSource(priced_rows(64), ["price"], name="shop")
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=first.task_specs))
    args = arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    MultiTaskTrainer(model, args, train_dataset=first).train()

    # The data has changed since (other rows, other statistics); the resumed run keeps the checkpoint's units.
    later = TaskSource(priced_rows(64, start=300, scale={"price": 3.0, "weight": 1.0}), ["price"], name="shop")
    assert later.task_specs[0].target_statistics != first.task_specs[0].target_statistics
    fresh = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=later.task_specs))
    resumed = MultiTaskTrainer(
        fresh, arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2), train_dataset=later
    )
    resumed.train(resume_from_checkpoint=True)
    assert fresh.config.get_task("price").target_statistics == first.task_specs[0].target_statistics
