import math

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from datasets import Image as ImageFeature

from mtl_hf import MISSING_CLASS, MultiTaskViTConfig, TaskSpec
from mtl_hf.data import TaskSource, load_shop_dataset
from mtl_hf.errors import UserError
from tests.data.helpers import png_bytes, uid_dataset

IMAGE = {"bytes": png_bytes(), "path": None}


def attributes_dataset() -> Dataset:
    features = Features(
        {
            "photo": ImageFeature(),
            "category": ClassLabel(names=["shirt", "shoe", "bag"]),
            "tags": List(ClassLabel(names=["red", "striped", "sale"])),
            "price": Value("float32"),
            "box": List(Value("float32"), length=2),
            "colour": Value("string"),
            "stock": Value("int64"),
        }
    )
    return Dataset.from_dict(
        {
            "photo": [IMAGE] * 4,
            "category": [0, 2, None, 1],
            "tags": [[0, 2], [], None, [1]],
            "price": [9.5, None, 3.0, 1.0],
            "box": [[1.0, 2.0], None, [3.0, 4.0], [5.0, 6.0]],
            "colour": ["red", "blue", None, "red"],
            "stock": [1, 0, 1, 1],
        },
        features=features,
    )


def test_task_types_and_labels_come_from_the_features():
    source = TaskSource(attributes_dataset(), ["category", "tags", "price", "box", "colour"], image_column="photo")
    specs = {spec.name: spec for spec in source.task_specs}
    assert specs["category"] == TaskSpec("category", "classification", labels=["shirt", "shoe", "bag"])
    assert specs["tags"] == TaskSpec("tags", "multilabel", labels=["red", "striped", "sale"])
    # Regression targets come with their present rows' mean, std and count, for standardisation.
    prices, boxes = np.array([9.5, 3.0, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    price_stats = {"mean": [prices.mean()], "std": [prices.std()], "count": 3}
    box_stats = {"mean": boxes.mean(0).tolist(), "std": boxes.std(0).tolist(), "count": 3}
    assert specs["price"] == TaskSpec("price", "regression", num_outputs=1, target_statistics=price_stats)
    assert specs["box"] == TaskSpec("box", "regression", num_outputs=2, target_statistics=box_stats)
    # A map-style string column gets its distinct values as labels, sorted.
    assert specs["colour"] == TaskSpec("colour", "classification", labels=["blue", "red"])


def test_rows_are_encoded_in_the_model_conventions():
    source = TaskSource(attributes_dataset(), ["category", "tags", "price", "box", "colour"], image_column="photo")
    rows = source.rows([0, 1, 2])
    assert rows[0].labels == {"category": 0, "tags": [1.0, 0.0, 1.0], "price": [9.5], "box": [1.0, 2.0], "colour": 1}
    assert rows[1].labels["tags"] == [0.0, 0.0, 0.0]  # an empty list is labelled: no tag applies
    assert math.isnan(rows[1].labels["price"][0]) and all(math.isnan(v) for v in rows[1].labels["box"])
    assert rows[2].labels["category"] == MISSING_CLASS
    assert rows[2].labels["tags"] == [float(MISSING_CLASS)] * 3
    assert rows[2].labels["colour"] == MISSING_CLASS
    assert rows[1].row == 1 and rows[1].source == "category+tags+price+box+colour"
    assert rows[0].image["bytes"] == IMAGE["bytes"]  # left undecoded for the workers


def test_task_options_rename_and_configure_tasks():
    source = TaskSource(
        attributes_dataset(),
        {
            "kind": "category",
            "in_stock": {"column": "stock", "type": "classification", "labels": ["no", "yes"], "loss_weight": 0.5},
            "hue": {"column": "colour", "labels": ["red", "blue", "green"], "pooling": "mean"},
        },
        image_column="photo",
        name="catalogue",
    )
    specs = {spec.name: spec for spec in source.task_specs}
    assert specs["kind"].labels == ["shirt", "shoe", "bag"]
    assert specs["in_stock"].loss_weight == 0.5 and specs["in_stock"].labels == ["no", "yes"]
    assert specs["hue"].labels == ["red", "blue", "green"] and specs["hue"].pooling == "mean"
    assert source.rows([1])[0].labels == {"kind": 2, "in_stock": 0, "hue": 1}
    # The specs build a model config directly.
    config = MultiTaskViTConfig(tasks=source.task_specs)
    assert config.task_names == ["kind", "in_stock", "hue"]


def test_split_of_a_dataset_dict_and_local_paths(tmp_path):
    shop = load_shop_dataset(20, seed=1)
    splits = DatasetDict(train=shop, test=shop.select(range(5)))
    assert TaskSource(splits, ["colour"], split="test").num_rows == 5
    with pytest.raises(ValueError, match=r"no split 'validation' in the dataset; its splits are \['train', 'test'\]"):
        TaskSource(splits, ["colour"], split="validation")

    splits.save_to_disk(str(tmp_path / "saved"))
    saved = TaskSource(tmp_path / "saved", ["colour", "tags"], split="train")
    assert saved.num_rows == 20 and saved.task_specs[1].labels == ["sale", "new", "eco"]

    shop.to_parquet(str(tmp_path / "parquet" / "part-0.parquet"))
    from_parquet = TaskSource(tmp_path / "parquet", ["category", "size"])
    assert from_parquet.num_rows == 20
    in_memory = TaskSource(shop, ["category", "size"])
    assert from_parquet.rows([3])[0].labels == in_memory.rows([3])[0].labels
    streamed = TaskSource(tmp_path / "parquet", ["category", "size"], streaming=True)
    assert streamed.is_streaming and streamed.num_rows == 20  # from the Parquet metadata
    assert streamed.task_specs == from_parquet.task_specs


def test_an_image_folder_gives_a_classification_task(tmp_path):
    for label in ("boots", "sandals"):
        (tmp_path / label).mkdir()
        for i in range(3):
            (tmp_path / label / f"{i}.png").write_bytes(png_bytes(seed=i))
    source = TaskSource(tmp_path, {"footwear": "label"})
    assert source.task_specs[0].labels == ["boots", "sandals"] and source.num_rows == 6


def test_streaming_string_column_without_labels_is_refused():
    streamed = attributes_dataset().to_iterable_dataset()
    with pytest.raises(ValueError, match="task 'colour' needs its labels .* a streaming source cannot be scanned"):
        TaskSource(streamed, ["colour"], image_column="photo")
    assert TaskSource(streamed, {"colour": {"labels": ["red", "blue"]}}, image_column="photo").task_specs[0].labels


@pytest.mark.parametrize(
    ("tasks", "options", "error", "message"),
    [
        (["size"], {}, ValueError, r"source 'size': no column 'size'; the columns are \['photo', 'category'"),
        (["category"], {"image_column": "image"}, ValueError, "no column 'image'"),
        (["category"], {"image_column": "stock"}, UserError, "image column 'stock' holds int64 values, not images"),
        (["stock"], {}, ValueError, "column 'stock' holds int64 values with no class names"),
        ([{"bad": 1}], {}, UserError, "a list of tasks holds label column names, got {'bad': 1}"),
        (
            {"category": {"column": "category", "labels": ["a", "b", "c"]}},
            {},
            ValueError,
            r"column 'category' has labels \['shirt', 'shoe', 'bag'\] that task 'category' does not know .*a new head",
        ),
        (
            {"category": {"column": "category", "type": "regression"}},
            {},
            ValueError,
            "gives type='regression' but column 'category' holds classification labels",
        ),
        ({"category": {"kolumn": "category"}}, {}, ValueError, r"unknown options \['kolumn'\]"),
        ([], {}, ValueError, "a source needs at least one task"),
    ],
)
def test_bad_sources_are_refused_with_a_clear_error(tasks, options, error, message):
    with pytest.raises(error, match=message):
        TaskSource(attributes_dataset(), tasks, **{"image_column": "photo", **options})


def test_labels_are_matched_by_name_and_unknown_ones_are_counted_when_evaluating():
    # The model knows more labels, in another order: the data's class ids map to the model's by name.
    model_labels = ["bag", "hat", "shirt", "shoe"]
    source = TaskSource(attributes_dataset(), {"category": {"labels": model_labels}}, image_column="photo")
    assert [row.labels["category"] for row in source.rows(range(4))] == [2, 0, MISSING_CLASS, 3]

    # Data with a label the task lacks: refused for training, counted and left out for evaluation.
    with pytest.raises(ValueError, match=r"has labels \['shoe'\] that task 'category' does not know"):
        TaskSource(attributes_dataset(), {"category": {"labels": ["bag", "shirt"]}}, image_column="photo")
    scored = TaskSource(
        attributes_dataset(), {"category": {"labels": ["bag", "shirt"]}}, image_column="photo", unknown_labels="count"
    )
    assert [row.labels["category"] for row in scored.rows(range(4))] == [1, 0, MISSING_CLASS, MISSING_CLASS]
    assert scored.unknown_labels() == {"category": {"shoe": 1}}


def test_a_label_outside_the_task_labels_names_the_row():
    source = TaskSource(attributes_dataset(), {"colour": {"labels": ["red"] * 1 + ["green"]}}, image_column="photo")
    assert source.rows([0])[0].labels == {"colour": 0}
    with pytest.raises(
        ValueError, match=r"source 'colour', row 1: task 'colour': label 'blue' is not among its labels"
    ):
        source.rows([0, 1])


def test_an_empty_source_is_refused():
    with pytest.raises(ValueError, match="source 'kind' is empty: it has no rows to train on"):
        TaskSource(uid_dataset(0), ["kind"])


def test_an_unknown_kind_of_data_is_refused(tmp_path):
    with pytest.raises(TypeError, match="a task source must be a datasets Dataset"):
        TaskSource(42, ["kind"])
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(ValueError, match="not a dataset folder, a Parquet file, a catalogue table"):
        TaskSource(tmp_path / "notes.txt", ["kind"])
