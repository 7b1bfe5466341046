"""Training data in object storage: a real S3 API (moto) on 127.0.0.1, read through s3fs / fsspec."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest

from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskMixture, TaskSource, write_shop_parquet
from tests.training_helpers import write_shop_recipe

moto_server = pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (dev extra)")
pytest.importorskip("s3fs", reason="the S3 tests need s3fs (s3 extra)")

TASKS = ["category", "colour", "pattern", "tags", "size"]
SHARDS, ROWS_PER_SHARD = 4, 60
BUCKET = "shop-catalogue"
SCRIPTS = Path(__file__).resolve().parent / "distributed"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, a bucket, and the fsspec options that reach it."""
    import boto3
    import s3fs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    local = tmp_path_factory.mktemp("shards")
    paths = write_shop_parquet(local, SHARDS * ROWS_PER_SHARD, rows_per_shard=ROWS_PER_SHARD)
    fs = s3fs.S3FileSystem(**options)
    for path in paths:
        fs.put(str(path), f"{BUCKET}/shards/{path.name}")
    yield {"options": options, "url": f"s3://{BUCKET}/shards", "local": local, "fs": fs}
    server.stop()


def image_digests(batches) -> list[str]:
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest() for batch in batches for image in batch["pixel_values"]]


def one_pass_on_every_rank(source: TaskSource, epoch: int, world_size: int = 2, workers: int = 2) -> list[str]:
    """Every image served in one pass, over `world_size` ranks, each with `workers` DataLoader workers."""
    digests = []
    for rank in range(world_size):
        mixture = TaskMixture(source, batch_size=10, seed=0, rank=rank, world_size=world_size, shuffle_buffer_size=50)
        mixture.set_epoch(epoch)
        collator = MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(32, 32), draft_decoding=False))
        digests += image_digests(mixture.dataloader(collator, num_workers=workers))
    return digests


@pytest.fixture(scope="module")
def every_image(s3):
    local = TaskSource(s3["local"], TASKS)
    collator = MultiTaskCollator(local.task_specs, ImageTransforms(size=(32, 32), draft_decoding=False))
    digests = image_digests([collator(local.rows(range(local.num_rows)))])
    assert len(set(digests)) == SHARDS * ROWS_PER_SHARD  # every photo tells itself apart
    return Counter(digests)


def test_a_streamed_s3_source_serves_every_row_exactly_once_per_pass_over_two_ranks_and_two_workers(s3, every_image):
    source = TaskSource(s3["url"], TASKS, streaming=True, storage_options=s3["options"])
    assert source.is_streaming and source.num_rows == SHARDS * ROWS_PER_SHARD  # from the shards' footers
    assert source.hub_id is None
    for epoch in (0, 1):
        assert Counter(one_pass_on_every_rank(source, epoch)) == every_image


def test_a_map_style_s3_source_serves_every_row_exactly_once_per_pass(s3, every_image, monkeypatch, tmp_path):
    # A fresh cache: datasets' offline mode serves what its cache already holds.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", tmp_path / "cache" / "downloads")
    with pytest.raises(ConnectionError, match=r"offline mode .* stream the source \(streaming: true\) or unset it"):
        TaskSource(s3["url"], TASKS, storage_options=s3["options"])
    # The server is on 127.0.0.1; the tests' offline mode is there to keep the Hub out, so lift it here alone.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    source = TaskSource(s3["url"], TASKS, storage_options=s3["options"])
    assert not source.is_streaming and source.num_rows == SHARDS * ROWS_PER_SHARD
    assert Counter(one_pass_on_every_rank(source, epoch=0)) == every_image


def test_object_storage_errors_name_the_url(s3):
    with pytest.raises(FileNotFoundError, match=f"no Parquet files at s3://{BUCKET}/nothing-here"):
        TaskSource(f"s3://{BUCKET}/nothing-here", TASKS, streaming=True, storage_options=s3["options"])
    with pytest.raises(ValueError, match=r"shards: no split 'validation'; its splits are \['train'\]"):
        TaskSource(s3["url"], TASKS, split="validation", streaming=True, storage_options=s3["options"])


def test_the_recipe_streams_s3_shards_into_a_short_training_run(s3, tmp_path):
    data = f"dataset: {s3['url']}\nstreaming: true\neval_fraction: 0\nstorage_options: {json.dumps(s3['options'])}"
    config = write_shop_recipe(
        tmp_path / "s3.yaml",
        data_lines=data,
        output_dir=tmp_path / "run",
        max_steps=5,
        extra_lines="dataloader_num_workers: 2\nlogging_steps: 1\n",
    )
    assert cli(["train", str(config)]) == 0
    state = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert state["train_loss"] > 0
    logged = [entry for entry in json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]]
    assert max(entry["step"] for entry in logged) == 5


def test_prepare_reads_photos_from_s3_and_writes_its_shards_there(s3, tmp_path):
    pytest.importorskip("pyspark", reason="mtl-hf prepare needs the spark extra")
    from mtl_hf.commands.prepare import SUMMARY_FILE, prepare_catalogue
    from mtl_hf.data import write_shop_catalogue

    catalogue = write_shop_catalogue(tmp_path / "shop", 30, image_sizes=(48, 64), broken_rate=0.0)
    lines = catalogue.read_text().splitlines()
    fs = s3["fs"]
    for line in lines[1:]:
        path = line.split(",")[0]
        fs.put(str(catalogue.parent / path), f"{BUCKET}/{path}")
    remote = tmp_path / "remote.csv"  # the same catalogue, its photos in the bucket
    remote.write_text("\n".join([lines[0], *(f"s3://{BUCKET}/{line}" for line in lines[1:])]) + "\n")

    output = f"s3://{BUCKET}/catalogue/prepared"  # folders in a bucket need not exist
    summary = prepare_catalogue(
        str(remote),
        output,
        image_column="path",
        tasks="category,tags:multilabel,size",
        size=32,
        shard_rows=10,
        master="local[2]",
        split_fractions={"train": 1.0},  # one split: three shards of ten rows
        storage_options=s3["options"],
    )
    assert summary["rows_in"] == summary["rows_out"] == 30 and summary["dropped"] == {}
    assert json.loads(fs.cat(f"{BUCKET}/catalogue/prepared/{SUMMARY_FILE}")) == summary
    source = TaskSource(output, ["category", "tags", "size"], streaming=True, storage_options=s3["options"])
    assert (
        source.num_rows == 30 and len(fs.glob(f"{BUCKET}/catalogue/prepared/*.parquet")) == len(summary["shards"]) == 3
    )
    assert source.task_specs[0].labels == summary["tasks"]["category"]["labels"]


def test_two_ranks_train_on_streamed_s3_shards_and_see_every_photo_once_per_epoch(s3, every_image, tmp_path):
    """Real processes (torchrun, gloo), each decoding in 2 DataLoader workers, 2 epochs."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    command = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPTS / "stream_s3_ranks.py"),
        str(tmp_path),
        s3["url"],
        json.dumps(s3["options"]),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    steps_per_epoch = SHARDS * ROWS_PER_SHARD // 2 // 10
    for rank, report in enumerate(reports):
        assert (report["rank"], report["world_size"], report["workers"]) == (rank, 2, 2)
        assert report["steps"] == 2 * steps_per_epoch
    for epoch in ("0", "1"):
        assert Counter(reports[0]["seen"][epoch] + reports[1]["seen"][epoch]) == every_image, epoch


def test_prepare_into_a_bucket_that_does_not_exist_stops_before_spark(s3, tmp_path, capsys):
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("path,category\nphotos/a.jpg,shoe\n")
    code = cli(
        [
            "prepare",
            str(catalogue),
            "s3://no-such-bucket/shards",
            "--image_column",
            "path",
            "--tasks",
            "category",
            "--storage_options",
            json.dumps(s3["options"]),
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error
    assert "s3://no-such-bucket/shards: no-such-bucket does not exist; create it first" in error


def test_predict_tags_s3_shards_into_the_bucket_as_it_does_the_same_shards_on_disk(s3, tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    from .test_predict_catalogue import read_output, save_model

    model = tmp_path / "model"
    save_model(model)
    options = json.dumps(s3["options"])
    out = f"s3://{BUCKET}/tags"
    keep = ["--keep_columns", "image"]  # the shards' label columns have the tasks' names: refused, as tested elsewhere
    assert cli(["predict", str(model), s3["url"], "--output", out, "--storage_options", options, *keep]) == 0
    assert cli(["predict", str(model), str(s3["local"]), "--output", str(tmp_path / "local"), *keep]) == 0
    fs = s3["fs"]
    shards = sorted(fs.ls(f"{BUCKET}/tags/predictions"))
    assert len(shards) == SHARDS
    remote = [row for shard in shards for row in pq.read_table(fs.open(shard, "rb")).to_pylist()]
    assert remote == read_output(tmp_path / "local")
    summary = json.loads(fs.cat(f"{BUCKET}/tags/predict_summary.json"))
    assert (summary["rows_in"], summary["rows_out"]) == (SHARDS * ROWS_PER_SHARD, SHARDS * ROWS_PER_SHARD)
    capsys.readouterr()

    # Without credentials: one line naming the fix, and nothing written.
    endpoint_only = json.dumps({"client_kwargs": s3["options"]["client_kwargs"]})
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    args = ["predict", str(model), s3["url"], "--output", str(tmp_path / "never"), "--storage_options", endpoint_only]
    args += keep
    assert cli(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no credentials for object storage" in error[0], error
    assert not (tmp_path / "never").exists()


def test_predict_reads_photos_given_as_s3_urls_in_a_local_table(s3, tmp_path, capsys):
    from mtl_hf.data import load_shop_dataset

    from .test_predict_catalogue import read_output, save_model

    model = tmp_path / "model"
    save_model(model)
    photos = tmp_path / "photos"
    photos.mkdir()
    lines, local = ["sku,image"], ["sku,image"]
    for index, row in enumerate(load_shop_dataset(9, start=40)):
        row["image"].save(photos / f"{index}.png")
        s3["fs"].put(str(photos / f"{index}.png"), f"{BUCKET}/photos/{index}.png")
        lines.append(f"{index},s3://{BUCKET}/photos/{index}.png")
        local.append(f"{index},photos/{index}.png")
    lines.append(f"9,s3://{BUCKET}/photos/missing.png")
    (tmp_path / "remote.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "local.csv").write_text("\n".join(local) + "\n")
    options = json.dumps(s3["options"])
    remote = ["predict", str(model), str(tmp_path / "remote.csv"), "--output", str(tmp_path / "r")]
    assert cli([*remote, "--storage_options", options]) == 0
    assert cli(["predict", str(model), str(tmp_path / "local.csv"), "--output", str(tmp_path / "l")]) == 0
    capsys.readouterr()
    by_url, by_path = read_output(tmp_path / "r"), read_output(tmp_path / "l")
    assert [row["image"] for row in by_url] == [f"s3://{BUCKET}/photos/{i}.png" for i in range(9)]
    strip = [{k: v for k, v in row.items() if k != "image"} for row in by_url]
    assert strip == [{k: v for k, v in row.items() if k != "image"} for row in by_path]
    summary = json.loads((tmp_path / "r" / "predict_summary.json").read_text())
    assert summary["dropped_by_reason"] == {"FileNotFoundError": 1}
