"""`mtl-hf predict MODEL SOURCE --output OUT`: a whole catalogue tagged into Parquet shards, resumed after kill -9,
broken photos listed and counted, bad inputs refused in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset, write_shop_parquet
from mtl_hf.inference.answers import answer_columns

from .conftest import tiny_vit_config

SHOP_TASKS = ["category", "colour", "tags", "size"]


def save_model(folder: Path, seed: int = 0) -> MultiTaskViTModel:
    torch.manual_seed(seed)
    source = TaskSource(load_shop_dataset(8), SHOP_TASKS)
    model = MultiTaskViTModel(
        MultiTaskViTConfig(backbone_config=tiny_vit_config(patch_size=8), tasks=source.task_specs)
    )
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    return folder, save_model(folder)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A shop's export: a CSV of SKUs (with leading zeros) and photo paths relative to it, in nested folders, one
    photo that is not an image and one that is missing."""
    root = tmp_path_factory.mktemp("catalogue")
    lines = ["sku,image,title"]
    for index, row in enumerate(load_shop_dataset(23, start=300)):
        relative = f"photos/{index % 3}/p{index:03d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        row["image"].save(root / relative)
        lines.append(f"{index:05d},{relative},item {index}")
    (root / "photos/0/broken.jpg").write_bytes(b"<html>not found</html>")
    lines += ["90001,photos/0/broken.jpg,broken", "90002,photos/9/missing.jpg,missing"]
    (root / "catalogue.csv").write_text("\n".join(lines) + "\n")
    return root


def expected_answers(model: MultiTaskViTModel, paths: list[Path]):
    """The model's answers for these photos, computed here with the model and the eval transform."""
    transform = ImageTransforms(size=(32, 32))
    pixels = transform.to_tensor([transform.resize(transform.decode(str(path))) for path in paths])
    with torch.no_grad():
        logits = {name: value.numpy() for name, value in model(pixel_values=pixels).logits.items()}
    return {
        name: column.to_pylist()
        for name, column in answer_columns(model.config.task_specs, logits, top_k=2, thresholds={"tags": 0.45}).items()
    }


def read_output(out: Path):
    return pq.read_table(out / "predictions").to_pylist()


def test_a_catalogue_table_is_tagged_with_the_models_answers(model, catalogue, tmp_path, capsys):
    folder, network = model
    out = tmp_path / "tags"
    args = ["predict", str(folder), str(catalogue / "catalogue.csv"), "--output", str(out), "--top_k", "2"]
    assert cli([*args, "--threshold", "tags=0.45", "--shard_rows", "10", "--batch_size", "4"]) == 0
    assert "23 of 25 rows tagged" in capsys.readouterr().out
    rows = read_output(out)
    assert [row["sku"] for row in rows] == [f"{i:05d}" for i in range(23)]  # text ids keep their zeros
    assert rows[0]["image"] == "photos/0/p000.png" and rows[0]["title"] == "item 0"
    expected = expected_answers(network, [catalogue / row["image"] for row in rows])
    for task in ("category", "colour", "tags"):
        assert [row[task] for row in rows] == expected[task], task
        for row, scores in zip(rows, expected[f"{task}_scores"], strict=True):
            assert [s["label"] for s in row[f"{task}_scores"]] == [s["label"] for s in scores]
            np.testing.assert_allclose(
                [s["score"] for s in row[f"{task}_scores"]], [s["score"] for s in scores], atol=1e-5
            )
    np.testing.assert_allclose([row["size"] for row in rows], expected["size"], atol=1e-5)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]

    summary = json.loads((out / "predict_summary.json").read_text())
    assert (summary["rows_in"], summary["rows_out"], summary["shards"]) == (25, 23, 3)
    assert summary["dropped_by_reason"] == {"UnidentifiedImageError": 1, "FileNotFoundError": 1}
    assert summary["images_per_second"] > 0
    broken = [json.loads(line) for line in (out / "bad_images.jsonl").read_text().splitlines()]
    assert [(b["image"], b["error"]) for b in broken] == [
        ("photos/0/broken.jpg", "UnidentifiedImageError"),
        ("photos/9/missing.jpg", "FileNotFoundError"),
    ]
    assert all("cannot decode the image" in b["message"] for b in broken)

    # The same run again: every shard is found finished, nothing is recomputed, the rows are the same.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()}
    assert cli([*args, "--threshold", "tags=0.45", "--shard_rows", "10"]) == 0
    assert "3 already done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "predictions").iterdir()} == before
    assert read_output(out) == rows


def test_a_folder_of_photos_is_read_recursively_and_parquet_shards_one_output_shard_each(
    model, catalogue, tmp_path, capsys
):
    folder, network = model
    assert (
        cli(["predict", str(folder), str(catalogue / "photos"), "--output", str(tmp_path / "a"), "--top_k", "2"]) == 0
    )
    rows = read_output(tmp_path / "a")
    assert [row["image"] for row in rows] == sorted(
        str(p.relative_to(catalogue / "photos")) for p in (catalogue / "photos").rglob("p*.png")
    )
    expected = expected_answers(network, [catalogue / "photos" / row["image"] for row in rows])
    assert [row["category"] for row in rows] == expected["category"]

    shards = tmp_path / "shards"
    write_shop_parquet(shards, 30, rows_per_shard=12)  # images embedded as bytes, 3 files
    assert cli(["predict", str(folder), str(shards), "--output", str(tmp_path / "c")]) == 2  # label columns clash
    assert "have the names of the answer columns" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert cli(["predict", str(folder), str(shards), "--output", str(tmp_path / "b"), "--keep_columns", "image"]) == 0
    outputs = sorted((tmp_path / "b" / "predictions").iterdir())
    inputs = sorted(shards.rglob("*.parquet"))
    assert [pq.read_metadata(o).num_rows for o in outputs] == [pq.read_metadata(i).num_rows for i in inputs]
    tagged = read_output(tmp_path / "b")
    assert set(tagged[0]) == {
        "image",
        "category",
        "category_scores",
        "colour",
        "colour_scores",
        "tags",
        "tags_scores",
        "size",
    }


def test_a_run_killed_with_sigkill_resumes_to_the_rows_of_an_uninterrupted_run(model, tmp_path):
    folder, _ = model
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, row in enumerate(load_shop_dataset(240, start=1000, image_size=64)):
        row["image"].save(photos / f"{index:04d}.png")
    command = [
        sys.executable,
        "-m",
        "mtl_hf",
        "predict",
        str(folder),
        str(photos),
        "--shard_rows",
        "8",
        "--batch_size",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--output", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--output", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    finished = killed / "predictions"
    deadline = time.monotonic() + 120
    while not (finished.is_dir() and len(list(finished.iterdir())) >= 3) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list(finished.iterdir()))
    assert 3 <= done < 30, f"the kill came too late to test a resume ({done} of 30 shards done)"

    subprocess.run([*command, "--output", str(killed)], check=True, env=env, capture_output=True)
    summary = json.loads((killed / "predict_summary.json").read_text())
    assert summary["shards_resumed"] >= done and summary["rows_out"] == 240
    assert sorted(p.name for p in finished.iterdir()) == [f"part-{i:05d}.parquet" for i in range(30)]
    assert read_output(killed) == read_output(tmp_path / "whole")


def test_bad_inputs_are_one_line_and_write_nothing(model, catalogue, tmp_path, capsys, caplog):
    folder, _ = model

    def refused(args, message, output=None):
        assert cli(["predict", *args]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error, error
        if output is not None:
            assert not output.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    refused([str(folder), str(empty), "--output", str(out)], "holds no images", out)
    table = tmp_path / "no_image.csv"
    table.write_text("sku,photo\n1,a.png\n")
    refused(
        [str(folder), str(table), "--output", str(out)],
        "no image column 'image'; its columns are ['sku', 'photo']",
        out,
    )
    refused(
        [str(folder), str(catalogue / "photos"), "--output", str(out), "--threshold", "1.5"],
        "a threshold is a score in [0, 1]",
        out,
    )
    refused(
        [str(folder), str(catalogue / "photos"), "--output", str(out), "--threshold", "colour=0.3"],
        "not a multilabel task",
        out,
    )
    # A model saved without its image processor (model.save_pretrained alone) is tagged with the one its config
    # implies (a one-line notice): the answers of the same model saved with its processor. A backbone family whose
    # convention mtl_hf does not know is refused in one line, also on Spark's driver before Spark starts.
    bare = tmp_path / "bare"
    save_model(bare)
    (bare / "preprocessor_config.json").unlink()
    capsys.readouterr()  # saving prints a progress bar
    for model_folder, tagged in ((folder, tmp_path / "with-processor"), (bare, tmp_path / "without")):
        assert cli(["predict", str(model_folder), str(catalogue / "photos"), "--output", str(tagged)]) == 0
    assert "has no preprocessor_config.json: photos are resized to 32x32" in caplog.text
    assert read_output(tmp_path / "without") == read_output(tmp_path / "with-processor")
    config = json.loads((bare / "config.json").read_text())
    config["backbone_config"]["model_type"] = "mobilevit"
    (bare / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    unknown = "does not know the convention of model_type 'mobilevit'"
    refused([str(bare), str(catalogue / "photos"), "--output", str(out)], unknown, out)
    on_spark = ["--output", str(out), "--master", "local[2]"]  # refused on the driver, before Spark starts
    refused([str(bare), str(catalogue / "photos"), *on_spark], unknown, out)

    # An output holding another model's run is refused; the same model's is resumed (above).
    assert cli(["predict", str(folder), str(catalogue / "photos"), "--output", str(out)]) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    save_model(other, seed=1)
    capsys.readouterr()
    refused([str(other), str(catalogue / "photos"), "--output", str(out)], "holds a run of another model")
    refused([str(folder), str(catalogue / "catalogue.csv"), "--output", str(out)], "holds a run of another input")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    refused([str(folder), str(catalogue / "photos"), "--output", str(tmp_path / "full")], "holds other files")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_spark_tags_two_thousand_photos_into_exactly_the_rows_of_one_process(model, tmp_path, capsys):
    """`--master local[2]`: one Spark task per shard, each Python worker loading the model once; the output files
    hold exactly the rows a run without Spark writes."""
    pytest.importorskip("pyspark", reason="predict --master needs the spark extra")
    folder, _ = model
    photos = tmp_path / "photos"
    lines = ["sku,image"]
    for index, row in enumerate(load_shop_dataset(2000, start=5000)):
        relative = f"{index // 500}/{index:04d}.png"
        (photos / relative).parent.mkdir(parents=True, exist_ok=True)
        row["image"].save(photos / relative)
        lines.append(f"{index:06d},{relative}")
    (photos / "9").mkdir()
    (photos / "9" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    lines.append("999999,9/broken.jpg")
    (photos / "catalogue.csv").write_text("\n".join(lines) + "\n")
    args = ["predict", str(folder), str(photos / "catalogue.csv"), "--shard_rows", "250", "--batch_size", "16"]
    assert cli([*args, "--output", str(tmp_path / "alone")]) == 0
    assert cli([*args, "--output", str(tmp_path / "spark"), "--master", "local[2]"]) == 0
    assert "2000 of 2001 rows tagged" in capsys.readouterr().out
    alone, spark = (sorted((tmp_path / run / "predictions").iterdir()) for run in ("alone", "spark"))
    assert [p.name for p in spark] == [p.name for p in alone] and len(alone) == 9
    for ours, theirs in zip(spark, alone, strict=True):
        assert pq.read_table(ours).equals(pq.read_table(theirs)), ours.name
    summaries = [json.loads((tmp_path / run / "predict_summary.json").read_text()) for run in ("alone", "spark")]
    for key in ("rows_in", "rows_out", "dropped_by_reason", "shards", "fingerprint"):
        assert summaries[0][key] == summaries[1][key], key
    assert summaries[1]["dropped_by_reason"] == {"UnidentifiedImageError": 1}
