"""`mtl-hf prepare` on a shop's own CSV (tests/own_catalogue.py, not the package's generator): splits by a stable
hash of the product id, as loading the CSV directly splits it; the id kept in the shards and in the dropped rows;
empty tags cells; vocabularies fixed by a model; and the checks that come before Spark starts."""

from __future__ import annotations

import csv
import json

import datasets
import pyarrow.parquet as pq
import pytest

from mtl_hf.commands.main import main as cli
from mtl_hf.commands.prepare import DROPPED_FILE, prepare_catalogue
from mtl_hf.commands.prepare import command as prepare_command
from mtl_hf.commands.prepare.catalogue import spark_session
from mtl_hf.data import TaskSource
from mtl_hf.data.tables import DEFAULT_SPLITS, split_of
from mtl_hf.errors import UserError
from tests.own_catalogue import write_catalogue

pytest.importorskip("pyspark", reason="mtl-hf prepare needs the spark extra")

TASKS = "category,colour,tags:multilabel,price:regression"


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own")
    table = write_catalogue(folder, 120)  # rows 3 and 11 missing, 19 truncated, 27 an HTML page
    with open(table, newline="") as file:
        return table, list(csv.DictReader(file))


def _shards(folder, split=None):
    pattern = f"{split or '*'}-*.parquet"
    return datasets.load_dataset("parquet", data_files=str(folder / pattern), split="train")


def test_rows_split_by_their_id_as_loading_the_table_splits_them(shop, spark, tmp_path):
    table, rows = shop
    summary = prepare_catalogue(
        str(table),
        str(tmp_path / "out"),
        image_column="image_path",
        tasks=TASKS,
        id_columns=["sku"],
        size=32,
        shard_rows=50,
        spark=spark,
    )
    kept = [row for index, row in enumerate(rows) if index not in (3, 11, 19, 27)]
    expected = {
        name: sorted(r["sku"] for r in kept if split_of(r["sku"], DEFAULT_SPLITS) == name) for name in DEFAULT_SPLITS
    }
    for name, skus in expected.items():
        assert sorted(_shards(tmp_path / "out", name)["sku"]) == skus
        direct = TaskSource(table, ["category"], image_column="image_path", id_column="sku", split=name)
        assert sorted(direct.dataset["sku"]) == sorted(set(skus) | _broken_skus_in(rows, name))
    assert summary["splits"] == {name: len(skus) for name, skus in expected.items()}
    assert summary["split_rule"] == f"by a hash of 'sku', {json.dumps(DEFAULT_SPLITS)}"
    assert {shard["file"].split("-")[0] for shard in summary["shards"]} == set(DEFAULT_SPLITS)

    dropped = [json.loads(line) for line in (tmp_path / "out" / DROPPED_FILE).read_text().splitlines()]
    assert sorted((row["sku"], row["reason"]) for row in dropped) == [
        ("SKU-10003", "missing_file"),
        ("SKU-10011", "missing_file"),
        ("SKU-10019", "corrupt_image"),
        ("SKU-10027", "not_an_image"),
    ]

    # The recipe trains on the train shards and evaluates on the validation ones.
    source = TaskSource(tmp_path / "out", ["category", "tags"], split="validation")
    assert source.num_rows == len(expected["validation"])
    with pytest.raises(UserError, match=r"no split 'holdout'; its splits are \['test', 'train', 'validation'\]"):
        TaskSource(tmp_path / "out", ["category"], split="holdout")


def _broken_skus_in(rows, split):
    return {rows[i]["sku"] for i in (3, 11, 19, 27) if split_of(rows[i]["sku"], DEFAULT_SPLITS) == split}


def test_an_empty_tags_cell_is_none_of_the_labels_unless_told_otherwise(shop, spark, tmp_path):
    table, rows = shop
    tags_of = {row["image_path"]: row["tags"] for row in rows}
    for empty_missing, expected in (((), []), (("tags",), None)):
        out = tmp_path / f"out-{len(empty_missing)}"
        summary = prepare_catalogue(
            str(table),
            str(out),
            image_column="image_path",
            tasks=TASKS,
            size=32,
            empty_missing=empty_missing,
            split_fractions={"train": 1.0},
            spark=spark,
        )
        shards = _shards(out).cast_column("image", datasets.Image(decode=False))
        empty = [record["tags"] for record in shards if tags_of[record["image"]["path"]] == ""]
        assert empty and all(value == expected for value in empty)
        rule = "none" if expected == [] else "missing"
        assert summary["tasks"]["tags"]["empty"] == rule
        assert summary["tasks"]["tags"]["missing"] == (0 if rule == "none" else sum(1 for r in rows if not r["tags"]))
        metadata = pq.read_schema(out / summary["shards"][0]["file"]).metadata[b"mtl_hf"]
        assert json.loads(metadata) == {"multilabel": {"tags": {"empty": rule}}}
    with pytest.raises(UserError, match="--empty_missing price: only a multilabel task"):
        prepare_catalogue(
            str(table), str(tmp_path / "x"), image_column="image_path", tasks=TASKS, empty_missing=["price"]
        )


def test_vocabularies_from_a_model_keep_its_ids_and_count_unknown_labels(shop, spark, tmp_path):
    table, rows = shop
    vocabulary = tmp_path / "vocabulary.json"
    vocabulary.write_text(
        json.dumps(
            {
                "category": ["tshirt", "shoe", "mug"],
                "colour": ["red", "blue", "green", "yellow", "black", "white", "purple"],
            }
        )
    )
    summary = prepare_catalogue(
        str(table),
        str(tmp_path / "out"),
        image_column="image_path",
        tasks=TASKS,
        size=32,
        vocabulary_from=str(vocabulary),
        split_fractions={"train": 1.0},
        spark=spark,
    )
    caps = sum(1 for row in rows if row["category"] == "cap")
    assert summary["tasks"]["category"]["labels"] == ["tshirt", "shoe", "mug"]  # the model's order: its ids
    assert summary["tasks"]["category"]["unknown_labels"] == {"cap": caps}
    assert "unknown_labels" not in summary["tasks"]["colour"]  # no purple product: a subset is fine
    shards = _shards(tmp_path / "out")
    assert shards.features["category"].names == ["tshirt", "shoe", "mug"]
    by_path = {row["image_path"]: row for row in rows}
    raw = shards.cast_column("image", datasets.Image(decode=False))
    for record in raw:
        category = by_path[record["image"]["path"]]["category"]
        expected = ["tshirt", "shoe", "mug"].index(category) if category in ("tshirt", "shoe", "mug") else None
        assert record["category"] == expected
    assert (
        cli(
            [
                "prepare",
                str(table),
                str(tmp_path / "o2"),
                "--image_column",
                "image_path",
                "--tasks",
                TASKS,
                "--vocabulary_from",
                str(tmp_path / "none.json"),
            ]
        )
        == 2
    )


def test_columns_and_paths_are_checked_before_spark_starts(shop, tmp_path, monkeypatch, capsys):
    table, rows = shop
    monkeypatch.setattr(prepare_command, "spark_session", lambda master: pytest.fail("Spark started"))

    def error(*arguments):
        assert cli(["prepare", *map(str, arguments)]) == 2
        message = capsys.readouterr().err.strip()
        assert "\n" not in message
        return message

    assert f"no column 'style' (from --tasks); its columns are {list(rows[0])}" in error(
        table, tmp_path / "o", "--image_column", "image_path", "--tasks", "category,style"
    )
    assert "no column 'id' (from --id_column)" in error(
        table, tmp_path / "o", "--image_column", "image_path", "--tasks", "category", "--id_column", "id"
    )
    priced = next(row for row in rows if row["price"])
    dollars = tmp_path / "dollars.csv"  # one price as a shop's front end shows it
    with open(dollars, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "price": f"${row['price']}" if row is priced else row["price"]} for row in rows)
    message = error(dollars, tmp_path / "o", "--image_column", "image_path", "--tasks", "price:regression")
    assert (
        f"regression column 'price' has 1 values that are not numbers in the first 120 rows, e.g. '${priced['price']}'"
        in message
    )
    moved = tmp_path / "elsewhere" / "products.csv"  # the photos' paths are relative to the table's own folder
    moved.parent.mkdir()
    moved.write_text(table.read_text())
    message = error(moved, tmp_path / "o", "--image_column", "image_path", "--tasks", "category")
    assert (
        f"none of the first {len(rows)} photo paths of {moved} exist, e.g. {moved.parent / 'photos' / 'p0000.jpg'}"
        in message
    )
    assert f"relative paths are read from the catalogue's folder {moved.parent}" in message
    assert not (tmp_path / "o").exists()


def test_every_row_dropped_is_an_error_that_shows_a_resolved_path(spark, tmp_path):
    (tmp_path / "photos").mkdir()
    for index in range(3):
        (tmp_path / "photos" / f"{index}.jpg").write_text("<html>not a photo</html>")
    table = tmp_path / "products.csv"
    table.write_text("sku,image_path,category\n" + "".join(f"S{i},photos/{i}.jpg,mug\n" for i in range(3)))
    with pytest.raises(UserError) as error:
        prepare_catalogue(str(table), str(tmp_path / "out"), image_column="image_path", tasks="category", spark=spark)
    assert str(error.value) == (
        f"every one of the 3 rows was dropped (3 not_an_image); e.g. {tmp_path / 'photos' / '0.jpg'}: relative photo "
        f"paths are read from the catalogue's folder {tmp_path}; see {tmp_path / 'out'}/dropped_rows.jsonl"
    )
    assert len((tmp_path / "out" / DROPPED_FILE).read_text().splitlines()) == 3  # what was dropped, kept
