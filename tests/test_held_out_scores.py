"""Scores a user can trust: a saved model records the data and split it was trained on, and `mtl-hf eval` refuses
to score those rows (or labels them); a catalogue table is split the way training split it; labels the model does
not know are left out of the scores and counted, never dropped silently."""

import csv
import json
import shutil

import numpy as np
import pytest

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import DataArguments
from mtl_hf.commands.recipe.assembly import load_data
from mtl_hf.data import ImageTransforms, TaskSource
from mtl_hf.data.encoding import task_options
from mtl_hf.data.locations import TableOptions, load_split
from mtl_hf.data.row_keys import hash_values
from mtl_hf.errors import UserError
from mtl_hf.models.mtl_vit.saving_mtl_vit import read_training_rows
from tests.conftest import tiny_vit_config
from tests.own_catalogue import FIELDS, write_catalogue
from tests.training_helpers import arguments

TASKS = {"category": "category", "colour": "colour", "tags": {"type": "multilabel"}, "price": "price"}
TABLE = ["--image_column", "image_path"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained two steps on the train split of a catalogue table (rows split by their sku)."""
    folder = tmp_path_factory.mktemp("own")
    table = write_catalogue(folder, 80, broken=False)
    source = TaskSource(table, TASKS, image_column="image_path", id_column="sku")
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    trainer = MultiTaskTrainer(
        model,
        arguments(folder / "run", max_steps=2, per_device_train_batch_size=8),
        train_dataset=source,
        image_transforms=ImageTransforms(size=(32, 32), train=True),
    )
    trainer.train()
    trainer.save_model(str(folder / "model"))
    return folder / "model", table, source


def test_the_model_records_what_it_was_trained_on(trained):
    model_folder, table, source = trained
    config = MultiTaskViTConfig.from_pretrained(model_folder)
    assert config.training_data == [
        {
            "data": str(table.resolve()),
            "split": "train",
            "split_by": {"id_column": "sku", "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}},
            "rows": source.num_rows,
            "image_column": "image_path",  # what a gate reading this table back needs (commands/held_out.py)
            "row_keys": "sku",
        }
    ]
    assert config.trained_on(str(table.resolve()), "train") and not config.trained_on(str(table.resolve()), "test")


def test_eval_refuses_the_training_rows_or_labels_them(trained, capsys):
    model_folder, table, source = trained
    assert cli(["eval", str(model_folder), str(table), "--split", "train", *TABLE]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{source.num_rows} of the {source.num_rows} rows of split 'train'" in error
    assert "--allow_training_rows" in error and "--skip_training_rows" not in error  # none would be left

    assert cli(["eval", str(model_folder), str(table), "--split", "train", "--allow_training_rows", *TABLE]) == 0
    assert "TRAINING-SET SCORES" in capsys.readouterr().out
    assert (
        cli(["eval", str(model_folder), str(table), "--split", "train", "--allow_training_rows", "--json", *TABLE]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["training_rows"] == source.num_rows == report["rows"] and report["training_rows_left_out"] == 0


def test_eval_splits_the_table_as_training_did(trained, capsys):
    model_folder, table, _ = trained
    validation = TaskSource(table, TASKS, image_column="image_path", id_column="sku", split="validation")
    by_path = TaskSource(table, TASKS, image_column="image_path", split="validation")
    assert {r["sku"] for r in validation.dataset} != {r["image_path"] for r in by_path.dataset}  # not the same rule

    assert cli(["eval", str(model_folder), str(table), "--json", *TABLE]) == 0  # default split: validation
    report = json.loads(capsys.readouterr().out)
    assert report["training_rows"] == 0 and report["rows"] == validation.num_rows
    categories = [row["category"] for row in validation.dataset if row["category"]]
    majority = max(categories.count(name) for name in set(categories)) / len(categories)
    assert report["chance"]["eval_category_accuracy"] == pytest.approx(majority)
    assert report["chance"]["eval_price_r2"] == pytest.approx(0.0, abs=1e-9)
    assert set(report["chance"]) == {
        f"eval_{t}" for t in ("category_accuracy", "colour_accuracy", "tags_micro_f1", "price_r2")
    }

    assert cli(["eval", str(model_folder), str(table), "--id_column", "image_path", *TABLE]) == 2
    assert "leave --id_column out" in capsys.readouterr().err

    assert cli(["eval", str(model_folder), str(table), "--split", "holdout", *TABLE]) == 2
    assert "no split 'holdout'; its splits are ['test', 'train', 'validation']" in capsys.readouterr().err


def test_labels_the_model_does_not_know_are_counted_and_left_out(trained, tmp_path, capsys):
    model_folder, table, source = trained
    trained_on = set(source.dataset["sku"])
    rows = [row for row in csv.DictReader(open(table)) if row["sku"] not in trained_on]  # held-out products only
    assert len(rows) >= 10
    for row in rows[:5]:
        row["category"] = "hat"  # a new category in this week's export
    for row in rows:
        row["image_path"] = str(table.parent / row["image_path"])
        if row["colour"] == "red":
            row["colour"] = "blue"  # and no red product: a subset of the colours
    week = _write(tmp_path / "week.csv", rows)

    assert cli(["eval", str(model_folder), str(week), "--split", "test", "--json", *TABLE]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["eval_category_unknown_labels"] == 5 and report["unknown_labels"] == {"category": {"hat": 5}}
    assert "eval_colour_unknown_labels" not in report

    # The known rows score as they would alone: the five hats are left out of category, kept for the other tasks.
    config = MultiTaskViTConfig.from_pretrained(model_folder)
    model_tasks = {spec.name: task_options(spec, spec.name) for spec in config.task_specs}
    trainer = MultiTaskTrainer(
        MultiTaskViTModel.from_pretrained(model_folder),
        arguments(tmp_path / "t"),
        image_transforms=ImageTransforms(size=(32, 32)),
    )
    with pytest.raises(UserError, match="'hat' is not among its labels"):  # training's rule: an error
        trainer.predict(TaskSource(week, model_tasks, image_column="image_path", split="test"))
    without_hats = _write(tmp_path / "known.csv", rows[5:])
    known = trainer.predict(TaskSource(without_hats, model_tasks, image_column="image_path", split="test")).metrics
    assert report["eval_category_accuracy"] == pytest.approx(known["test_category_accuracy"])

    assert cli(["eval", str(model_folder), str(week), "--split", "test", *TABLE]) == 0
    assert "task 'category': 5 row(s) left out of its scores, with labels the model does not know: {'hat': 5}" in (
        capsys.readouterr().out
    )


def test_the_model_keeps_its_training_rows_hashed_keys(trained, tmp_path):
    model_folder, table, source = trained
    keys = read_training_rows(model_folder)
    assert keys.dtype == np.uint64 and np.all(np.diff(keys.astype(np.float64)) > 0)  # sorted, distinct
    assert np.array_equal(keys, np.unique(hash_values(source.dataset["sku"])))
    assert len(keys) == source.num_rows
    MultiTaskViTModel.from_pretrained(model_folder).save_pretrained(tmp_path / "again")
    assert np.array_equal(read_training_rows(tmp_path / "again"), keys)
    assert MultiTaskViTConfig.from_pretrained(model_folder).training_data[0]["row_keys"] == "sku"


def test_a_copied_table_is_recognised_by_its_rows_not_its_path(trained, tmp_path, capsys):
    model_folder, table, source = trained
    copy = tmp_path / "next-week"
    shutil.copytree(table.parent / "photos", copy / "photos")
    shutil.copyfile(table, copy / "export.csv")
    exported = str(copy / "export.csv")

    # Split by the rule training recorded (by sku), the copy's train split is the training rows.
    assert cli(["eval", str(model_folder), exported, "--split", "train", *TABLE]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"{source.num_rows} of the {source.num_rows} rows of split 'train'" in error
    assert "recognised by their 'sku'" in error
    # Split by another column, the training rows still show up wherever they fall.
    by_photo = load_split(exported, split="test", table=TableOptions(key_column="image_path"))
    seen = int(np.isin(hash_values(by_photo["sku"]), read_training_rows(model_folder)).sum())
    assert seen > 0
    assert cli(["eval", str(model_folder), exported, "--split", "test", "--id_column", "image_path", *TABLE]) == 2
    error = capsys.readouterr().err
    assert f"{seen} of the {len(by_photo)} rows of split 'test'" in error
    assert f"--skip_training_rows to score only the {len(by_photo) - seen} it has not seen" in error
    # The held-out split of the copy has no training row: scored as it is.
    assert cli(["eval", str(model_folder), exported, "--split", "test", "--json", *TABLE]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["training_rows"] == 0
    assert (
        report["rows"] == TaskSource(exported, TASKS, image_column="image_path", id_column="sku", split="test").num_rows
    )


def test_a_grown_catalogue_scores_only_its_new_rows_when_asked(trained, tmp_path, capsys):
    model_folder, table, source = trained
    grown_table = write_catalogue(tmp_path / "grown", 96, broken=False)  # the same 80 products and 16 new ones
    assert list(csv.DictReader(open(grown_table)))[:80] == list(csv.DictReader(open(table)))
    grown = TaskSource(grown_table, TASKS, image_column="image_path", id_column="sku")
    new_rows = grown.num_rows - source.num_rows
    assert new_rows > 0
    command = ["eval", str(model_folder), str(grown_table), "--split", "train", *TABLE]

    assert cli(command) == 2
    assert f"{source.num_rows} of the {grown.num_rows} rows of split 'train'" in capsys.readouterr().err
    assert cli([*command, "--skip_training_rows", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["training_rows"], report["training_rows_left_out"]) == (
        new_rows,
        0,
        source.num_rows,
    )
    assert cli([*command, "--skip_training_rows"]) == 0
    out = capsys.readouterr().out
    assert f"{source.num_rows} rows the model was trained on left out" in out
    assert f"{new_rows} of {new_rows} rows scored" in out
    assert cli([*command, "--allow_training_rows"]) == 0
    assert f"trained on {source.num_rows} of these {grown.num_rows} rows" in capsys.readouterr().out


def test_a_recipe_whose_evaluation_rows_are_training_rows_is_refused(trained):
    _, table, source = trained
    data = DataArguments(
        dataset=str(table), tasks=TASKS, image_column="image_path", id_column="sku", eval_split="train"
    )
    with pytest.raises(UserError, match=rf"{source.num_rows} of the {source.num_rows} evaluation rows .* are training"):
        load_data(data, seed=0)


def _write(path, rows):
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=[*FIELDS, "split"])
        writer.writeheader()
        writer.writerows({**row, "split": "test"} for row in rows)
    return path


def test_a_recipe_on_a_table_evaluates_on_its_validation_split(trained):
    _, table, _ = trained
    data = DataArguments(dataset=str(table), tasks=TASKS, image_column="image_path", id_column="sku")
    (train,), (evaluation,) = load_data(data, seed=0)
    assert (train.context.origin["split"], evaluation.context.origin["split"]) == ("train", "validation")
    expected = TaskSource(table, TASKS, image_column="image_path", id_column="sku", split="validation")
    assert evaluation.dataset["sku"] == expected.dataset["sku"]
    assert set(train.dataset["sku"]).isdisjoint(evaluation.dataset["sku"])

    shares = DataArguments(
        dataset=str(table), tasks=TASKS, image_column="image_path", split_fractions='{"train": 0.9, "test": 0.1}'
    )
    (train,), (evaluation,) = load_data(shares, seed=0)  # no validation split: a share of train is held out
    assert evaluation.context.origin["split"] == "train"
    assert (
        train.num_rows + evaluation.num_rows
        == TaskSource(table, TASKS, image_column="image_path", split_fractions={"train": 0.9, "test": 0.1}).num_rows
    )
    with pytest.raises(UserError, match="split_fractions split a catalogue table"):
        TaskSource(str(table.parent / "model"), TASKS, split_fractions={"train": 1.0})


def test_a_main_score_at_or_below_chance_is_marked_in_the_results_table():
    from mtl_hf.commands.train import results_table
    from mtl_hf.models.mtl_vit.tasks_mtl_vit import TaskSpec

    specs = [
        TaskSpec(name="tags", type="multilabel", labels=["eco", "new", "sale"]),
        TaskSpec(name="colour", type="classification", labels=["red", "blue"]),
        TaskSpec(name="category", type="classification", labels=["cap", "mug"]),
        TaskSpec(name="pattern", type="classification", labels=["plain", "dotted"]),
    ]
    scores = {"tags_micro_f1": (0.337, 0.597), "colour_accuracy": (1.0, 0.155)}
    scores |= {"category_accuracy": (0.289, 0.25), "pattern_accuracy": (0.255, 0.25)}  # within 0.01: at chance
    table = results_table(
        specs,
        {f"eval_{k}": score for k, (score, _) in scores.items()},
        {f"eval_{k}": c for k, (_, c) in scores.items()},
    )
    marked = {line.split()[0] for line in table.splitlines() if line.endswith("  at or below chance")}
    assert marked == {"tags", "pattern"}
