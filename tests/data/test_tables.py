"""A shop's own catalogue table as a source, without Spark: types and labels as `prepare` reads them, empty
cells, photo paths relative to the table, broken photos, and splits by a stable hash of each row's id."""

import json
import math

import pytest

from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource
from mtl_hf.data.tables import split_of
from mtl_hf.errors import BadImageError, UserError
from mtl_hf.models.mtl_vit.heads_mtl_vit import MISSING_CLASS
from tests.own_catalogue import write_catalogue

TASKS = {"category": "category", "colour": "colour", "tags": {"type": "multilabel"}, "price": "price"}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return write_catalogue(tmp_path_factory.mktemp("shop"), 120, broken=False)


def test_types_labels_and_empty_cells_come_from_the_table(catalogue):
    source = TaskSource(catalogue, TASKS, image_column="image_path", id_column="sku")
    specs = {spec.name: spec for spec in source.task_specs}
    assert specs["category"].labels == ["cap", "mug", "shoe", "tshirt"]
    assert specs["colour"].type == "classification" and len(specs["colour"].labels) == 6
    assert specs["tags"].labels == ["NEW", "SALE", "eco"]  # split on "|"
    assert specs["price"].type == "regression" and specs["price"].target_statistics["count"] > 0

    table = {row["sku"]: row for row in _csv_rows(catalogue)}
    for index in range(source.num_rows):
        raw = source.dataset[index]
        encoded = source.rows([index])[0].labels
        assert table[raw["sku"]]["image_path"] == raw["image_path"]  # the id column travels with the rows
        tags = raw["tags"]
        if tags:  # "SALE|eco" -> those two
            assert encoded["tags"] == [1.0 if label in tags.split("|") else 0.0 for label in specs["tags"].labels]
        else:  # an empty tags cell: a product without badges (`empty: none`, the default)
            assert encoded["tags"] == [0.0, 0.0, 0.0]
        if raw["category"] is None:
            assert encoded["category"] == MISSING_CLASS
        if raw["price"] is None:
            assert math.isnan(encoded["price"][0])


def test_an_empty_tags_cell_can_mean_unknown_instead(catalogue):
    tasks = {**TASKS, "tags": {"type": "multilabel", "empty": "missing"}}
    source = TaskSource(catalogue, tasks, image_column="image_path", id_column="sku")
    empty = [i for i in range(source.num_rows) if not source.dataset[i]["tags"]]
    assert empty and all(source.rows([i])[0].labels["tags"] == [float(MISSING_CLASS)] * 3 for i in empty)


def test_json_lines_tell_a_null_from_an_empty_list(tmp_path, catalogue):
    photo = str(catalogue.parent / "photos" / "p0000.jpg")
    lines = [
        {"image": photo, "tags": ["SALE", "eco"]},
        {"image": photo, "tags": []},  # none of the labels
        {"image": photo, "tags": None},  # unknown
        {"image": photo, "tags": ["NEW"]},
    ]
    table = tmp_path / "products.jsonl"
    table.write_text("\n".join(json.dumps(line) for line in lines))
    source = TaskSource(table, ["tags"], split_fractions={"train": 1.0})
    assert source.task_specs[0].labels == ["NEW", "SALE", "eco"]
    assert [row.labels["tags"] for row in source.rows(range(4))] == [
        [0.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
        [float(MISSING_CLASS)] * 3,
        [1.0, 0.0, 0.0],
    ]


def test_whole_numbers_are_class_names_unless_the_task_says_regression(tmp_path, catalogue):
    photo = str(catalogue.parent / "photos" / "p0000.jpg")
    table = tmp_path / "shoes.csv"
    table.write_text("image,size,stock\n" + "".join(f"{photo},{38 + i % 3},{i}\n" for i in range(9)))
    source = TaskSource(table, {"size": "size", "stock": {"type": "regression"}}, split_fractions={"train": 1.0})
    size, stock = source.task_specs
    assert (size.type, size.labels) == ("classification", ["38", "39", "40"])
    assert stock.type == "regression" and stock.target_statistics["mean"] == [4.0]


def test_photo_paths_are_read_from_the_tables_folder_and_a_broken_photo_is_named(tmp_path):
    table = write_catalogue(tmp_path / "shop", 40, broken=True)
    source = TaskSource(table, ["category"], image_column="image_path", split_fractions={"train": 1.0})
    collator = MultiTaskCollator(source.task_specs, ImageTransforms(size=(32, 32)))
    good = collator(source.rows([0, 1, 2]))
    assert good["pixel_values"].shape == (3, 3, 32, 32)
    with pytest.raises(BadImageError, match=r"row 3 \(file .*/shop/photos/p0003\.jpg\): cannot decode the image"):
        collator(source.rows([3]))
    skipping = TaskSource(
        table, ["category"], image_column="image_path", split_fractions={"train": 1.0}, bad_image_policy="skip"
    )
    batch = MultiTaskCollator(skipping.task_specs, ImageTransforms(size=(32, 32)))(skipping.rows(range(30)))
    assert batch["image_counts"]["skipped"] == {"category": 4}  # two missing, a truncated JPEG, an HTML page


def test_rows_fall_into_splits_by_their_id_and_keep_them_as_the_catalogue_grows(tmp_path):
    small = write_catalogue(tmp_path / "small", 100, broken=False)
    grown = write_catalogue(tmp_path / "grown", 160, broken=False)  # the same first 100 products, 60 more
    splits = {}
    for name in ("train", "validation", "test"):
        first = TaskSource(small, ["category"], image_column="image_path", id_column="sku", split=name)
        later = TaskSource(grown, ["category"], image_column="image_path", id_column="sku", split=name)
        splits[name] = set(first.dataset["sku"])
        assert splits[name] <= set(later.dataset["sku"])  # every old row is where it was
    assert sum(len(rows) for rows in splits.values()) == 100
    assert splits["train"].isdisjoint(splits["validation"]) and splits["train"].isdisjoint(splits["test"])
    assert 65 <= len(splits["train"]) <= 95  # 80% of 100, give or take the hash
    with pytest.raises(UserError, match=r"no split 'valid'; its splits are \['test', 'train', 'validation'\]"):
        TaskSource(small, ["category"], image_column="image_path", split="valid")


def test_the_split_of_a_row_does_not_depend_on_the_order_the_splits_are_named_in():
    # A model's config.json stores the shares with sorted keys; the rows must fall as they did in training.
    named = {"train": 0.8, "validation": 0.1, "test": 0.1}
    reordered = {"test": 0.1, "train": 0.8, "validation": 0.1}
    keys = [f"SKU-{i}" for i in range(500)]
    assert [split_of(key, named) for key in keys] == [split_of(key, reordered) for key in keys]
    assert {split_of(key, named) for key in keys} == set(named)


def test_a_split_column_decides_the_split(tmp_path, catalogue):
    photo = str(catalogue.parent / "photos" / "p0000.jpg")
    table = tmp_path / "marked.csv"
    table.write_text(
        "image,kind,split\n" + "".join(f"{photo},{'ab'[i % 2]},{'train' if i < 6 else 'test'}\n" for i in range(8))
    )
    assert TaskSource(table, ["kind"], split="test").num_rows == 2
    with pytest.raises(UserError, match=r"no split 'validation'; its splits are \['test', 'train'\]"):
        TaskSource(table, ["kind"], split="validation")


def _csv_rows(path):
    import csv

    with open(path) as file:
        return list(csv.DictReader(file))


def test_parquet_folders_are_split_by_their_file_names(tmp_path):
    from mtl_hf.data import write_shop_parquet

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    for seed, split in enumerate(("train", "validation", "test")):
        for path in write_shop_parquet(tmp_path / split, 20, rows_per_shard=20, seed=seed):
            path.rename(prepared / f"{split}-00000-of-00001.parquet")
    sizes = {
        split: TaskSource(prepared, ["category"], split=split).num_rows for split in ("train", "validation", "test")
    }
    assert sizes == {"train": 20, "validation": 20, "test": 20}
    with pytest.raises(UserError, match=r"no split 'eval'; its splits are \['test', 'train', 'validation'\]"):
        TaskSource(prepared, ["category"], split="eval")

    # A folder whose files name no split is one split, "train": asking for another is an error, not all of it.
    plain = tmp_path / "plain"
    write_shop_parquet(plain, 20, rows_per_shard=10)
    assert TaskSource(plain, ["category"]).num_rows == 20
    with pytest.raises(UserError, match=r"no split 'does_not_exist'; its splits are \['train'\]"):
        TaskSource(plain, ["category"], split="does_not_exist")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_a_tables_columns_are_read_from_its_head_as_the_whole_read_finds_them(tmp_path, suffix):
    from mtl_hf.data.tables import read_table, table_columns

    rows = [{"sku": f"A{i}", "photo": f"p{i}.jpg", "colour": "red" if i % 2 else None} for i in range(3000)]
    path = tmp_path / f"products{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    else:
        separator = "\t" if suffix == ".tsv" else ","
        lines = [separator.join(rows[0])] + [separator.join(str(v or "") for v in row.values()) for row in rows]
        path.write_text("\n".join(lines) + "\n")
    assert table_columns(path) == read_table(path).column_names == ["sku", "photo", "colour"]
    (tmp_path / "broken.csv").write_bytes(b"")
    with pytest.raises(UserError, match="cannot be read as a CSV table"):
        table_columns(tmp_path / "broken.csv")
