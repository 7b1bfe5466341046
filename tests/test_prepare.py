"""`mtl-hf prepare` on local Spark: a generated catalogue of JPEG photos with broken files and missing attributes."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import datasets
import pytest
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel

from mtl_hf.commands.main import main as cli
from mtl_hf.commands.prepare import DROPPED_FILE, SUMMARY_FILE, prepare_catalogue
from mtl_hf.commands.prepare.catalogue import spark_session
from mtl_hf.data import TaskSource, write_shop_catalogue
from mtl_hf.data.tables import DEFAULT_SPLITS, split_of
from tests.training_helpers import write_shop_recipe

pytest.importorskip("pyspark", reason="mtl-hf prepare needs the spark extra")

ROWS = 2000
SIZE = 40
TASKS = "category,colour,pattern,tags:multilabel,size"
LABEL_COLUMNS = ["category", "colour", "pattern", "tags", "size"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    catalogue = write_shop_catalogue(folder / "shop", ROWS, image_sizes=(32, 48, 96), broken_rate=0.01)
    output = folder / "shards"
    code = cli(
        [
            "prepare",
            str(catalogue),
            str(output),
            "--image_column",
            "path",
            "--tasks",
            TASKS,
            "--size",
            str(SIZE),
            "--shard_rows",
            "500",
            "--master",
            "local[2]",
        ]
    )
    assert code == 0
    with open(catalogue, newline="") as file:
        rows = list(csv.DictReader(file))
    return catalogue, output, rows


def expected_drop(catalogue: Path, path: str) -> str | None:
    """Why a row must drop, found without the code under test: the file's bytes and PIL's full decode."""
    if not path:
        return "no_image_path"
    file = catalogue.parent / path
    if not file.exists():
        return "missing_file"
    data = file.read_bytes()
    try:
        Image.open(io.BytesIO(data)).load()
    except UnidentifiedImageError:
        return "not_an_image"
    except OSError:
        return "corrupt_image"
    return None


def test_rows_drops_and_summary_match_the_catalogue(prepared):
    catalogue, output, rows = prepared
    summary = json.loads((output / SUMMARY_FILE).read_text())
    drops = {}
    for row in rows:
        reason = expected_drop(catalogue, row["path"])
        if reason:
            drops[reason] = drops.get(reason, 0) + 1
    assert set(drops) == {"no_image_path", "missing_file", "not_an_image", "corrupt_image"}  # every kind planted
    assert summary["rows_in"] == ROWS
    assert summary["dropped"] == drops
    assert summary["rows_out"] == ROWS - sum(drops.values())
    dropped_rows = [json.loads(line) for line in (output / DROPPED_FILE).read_text().splitlines()]
    assert len(dropped_rows) == sum(drops.values())
    shards = sorted(output.glob("*.parquet"))
    assert [shard.name for shard in shards] == [shard["file"] for shard in summary["shards"]]
    # 4 partitions of 500 rows, each written as one file per split (by a hash of the photo path).
    assert sorted({shard.name.split("-")[0] for shard in shards}) == ["test", "train", "validation"]
    assert len(shards) == 12 and sum(shard["rows"] for shard in summary["shards"]) == summary["rows_out"]
    kept = [row["path"] for row in rows if expected_drop(catalogue, row["path"]) is None]
    assert summary["splits"] == {
        name: sum(1 for path in kept if split_of(path, DEFAULT_SPLITS) == name)
        for name in ("test", "train", "validation")
    }
    assert all(shard["bytes"] == (output / shard["file"]).stat().st_size for shard in summary["shards"])


def test_vocabularies_are_the_sorted_distinct_values_and_labels_follow_each_photo(prepared):
    catalogue, output, rows = prepared
    summary = json.loads((output / SUMMARY_FILE).read_text())
    for task in ("category", "colour", "pattern"):
        assert summary["tasks"][task]["labels"] == sorted({row[task] for row in rows if row[task]})
        assert summary["tasks"][task]["missing"] == sum(1 for row in rows if not row[task])
    assert summary["tasks"]["tags"]["labels"] == sorted({tag for row in rows for tag in row["tags"].split("|") if tag})
    assert summary["tasks"]["size"] == {
        "type": "regression",
        "labels": [],
        "missing": sum(1 for r in rows if not r["size"]),
    }

    table = datasets.load_dataset("parquet", data_files=str(output / "*.parquet"), split="train")
    features = table.features
    streamed = datasets.load_dataset("parquet", data_files=str(output / "*.parquet"), split="train", streaming=True)
    assert streamed.features == features and next(iter(streamed))["image"].format == "JPEG"
    assert isinstance(features["image"], datasets.Image)
    assert features["category"].names == summary["tasks"]["category"]["labels"]
    assert features["tags"].feature.names == summary["tasks"]["tags"]["labels"]
    assert features["size"].dtype == "float32"
    by_path = {row["path"]: row for row in rows}
    raw = table.cast_column("image", datasets.Image(decode=False))
    assert len({record["image"]["path"] for record in raw}) == len(raw)  # every kept photo once
    for record in raw.select(range(0, len(raw), 37)):
        original = by_path[record["image"]["path"]]
        for task in ("category", "colour", "pattern"):
            names = features[task].names
            assert (names[record[task]] if record[task] is not None else "") == original[task]
        tags = features["tags"].feature.names
        assert "|".join(sorted(tags[t] for t in record["tags"] or [])) == "|".join(
            sorted(filter(None, original["tags"].split("|")))
        )
        assert record["size"] == (pytest.approx(float(original["size"]), abs=1e-6) if original["size"] else None)
        photo = Image.open(io.BytesIO(record["image"]["bytes"]))
        source = Image.open(catalogue.parent / original["path"])
        assert photo.format == "JPEG" and min(photo.size) == min(SIZE, min(source.size))


def test_task_source_reads_the_shards_map_style_and_streaming(prepared):
    _, output, _ = prepared
    summary = json.loads((output / SUMMARY_FILE).read_text())
    for streaming in (False, True):
        source = TaskSource(output, LABEL_COLUMNS, streaming=streaming)
        assert source.num_rows == summary["splits"]["train"]
        specs = {spec.name: spec for spec in source.task_specs}
        assert (
            specs["category"].type == "classification"
            and specs["category"].labels == summary["tasks"]["category"]["labels"]
        )
        assert specs["tags"].type == "multilabel" and specs["size"].type == "regression"


def test_the_recipe_trains_a_few_steps_on_the_shards(prepared, tmp_path):
    _, output, _ = prepared
    config = write_shop_recipe(
        tmp_path / "catalogue.yaml", data_lines=f"dataset: {output}", output_dir=tmp_path / "run", max_steps=4
    )
    assert cli(["train", str(config)]) == 0
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["train_loss"] > 0 and results["epoch"] > 0
    model = AutoModel.from_pretrained(tmp_path / "run")
    assert model.config.task_names == LABEL_COLUMNS
    assert model.config.get_task("category").labels == sorted(model.config.get_task("category").labels)
    assert model.config.get_task("tags").type == "multilabel"


def test_bad_inputs_fail_in_one_line_and_touch_nothing(prepared, tmp_path, capsys):
    catalogue, output, _ = prepared
    before = sorted(p.name for p in output.iterdir())

    def error(*arguments) -> str:
        assert cli(["prepare", *map(str, arguments)]) == 2
        message = capsys.readouterr().err.strip()
        assert "\n" not in message, message
        return message

    assert "already exists" in error(catalogue, output, "--image_column", "path", "--tasks", "category")
    assert sorted(p.name for p in output.iterdir()) == before
    assert "no catalogue at" in error(tmp_path / "nope.csv", tmp_path / "o", "--image_column", "path", "--tasks", "x")
    assert "unknown table format '.xlsx'" in error(
        _touch(tmp_path / "c.xlsx"), tmp_path / "o", "--image_column", "path", "--tasks", "x"
    )
    assert "has type 'labels'" in error(catalogue, tmp_path / "o", "--image_column", "path", "--tasks", "tags:labels")
    assert "--storage_options must be a mapping (YAML, or JSON on the command line); '{key: 1}' is not JSON" in error(
        catalogue, tmp_path / "o", "--image_column", "path", "--tasks", "x", "--storage_options", "{key: 1}"
    )
    assert "--quality must be" in error(
        catalogue, tmp_path / "o", "--image_column", "path", "--tasks", "x", "--quality", "100"
    )


def test_columns_and_values_are_checked_on_spark(tmp_path):
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("path,category,price\nphotos/a.jpg,shoe,12.5\nphotos/b.jpg,bag,n/a\n")
    (tmp_path / "photos").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (20, 20), (200, 30, 30)).save(tmp_path / "photos" / f"{name}.jpg")
    spark = spark_session("local[1]")
    try:
        with pytest.raises(
            ValueError, match=r"no column 'colour' \(from --tasks\); its columns are \['path', 'category', 'price'\]"
        ):
            prepare_catalogue(
                str(catalogue), str(tmp_path / "o1"), image_column="path", tasks="category,colour", spark=spark
            )
        with pytest.raises(
            ValueError, match=r"regression column 'price' has 1 values that are not numbers, e.g. 'n/a'"
        ):
            prepare_catalogue(
                str(catalogue), str(tmp_path / "o2"), image_column="path", tasks="price:regression", spark=spark
            )
        # A class name holding the multilabel separator is one label: only multilabel cells are split.
        piped = tmp_path / "piped.csv"
        piped.write_text("path,category,tags\nphotos/a.jpg,tops|tees,sale|new\nphotos/b.jpg,shoe,new\n")
        summary = prepare_catalogue(
            str(piped),
            str(tmp_path / "o3"),
            image_column="path",
            tasks="category,tags:multilabel",
            size=16,
            spark=spark,
        )
        assert summary["tasks"]["category"]["labels"] == ["shoe", "tops|tees"]
        assert summary["tasks"]["tags"]["labels"] == ["new", "sale"]
        rows = datasets.load_dataset("parquet", data_files=str(tmp_path / "o3" / "*.parquet"), split="train")
        assert sorted(zip(rows["category"], rows["tags"], strict=True)) == [(0, [0]), (1, [0, 1])]
    finally:
        spark.stop()
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_without_pyspark_the_command_names_the_install_line(tmp_path, monkeypatch, capsys):
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("path,category\nphotos/a.jpg,shoe\n")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "photos" / "a.jpg")
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # what an environment without pyspark imports
    assert cli(["prepare", str(catalogue), str(tmp_path / "o"), "--image_column", "path", "--tasks", "category"]) == 2
    assert "pip install 'mtl_hf[spark]'" in capsys.readouterr().err


def _touch(path: Path) -> Path:
    path.write_text("")
    return path
