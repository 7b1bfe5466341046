import json
import subprocess
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

import datasets
import pytest
from datasets import IterableDataset

from mtl_hf.data import (
    ImageTransforms,
    MultiTaskCollator,
    TaskMixture,
    TaskSource,
    load_digits_dataset,
    load_shop_dataset,
    shop_row,
    write_shop_parquet,
)
from mtl_hf.data.builtin.shop import CATEGORIES, COLOURS, PATTERNS, TAGS
from tests.data.helpers import served_uids, uid_dataset
from tests.data.test_mixture import assert_same_batches

SHOP_ROWS = 12_000


@pytest.fixture(scope="module")
def shop_parquet(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shop")
    write_shop_parquet(folder, SHOP_ROWS, rows_per_shard=3000, seed=0, num_proc=2)
    return folder


@pytest.fixture
def uid_parquet(tmp_path) -> Path:
    dataset = uid_dataset(400, task="kind")
    for shard in range(4):
        dataset.shard(4, shard, contiguous=True).to_parquet(str(tmp_path / f"uid-{shard}.parquet"))
    return tmp_path


def streaming_uid_source(folder, **kwargs):
    return TaskSource(folder, {"kind": "kind", "stream_uid": "uid"}, name="stream", streaming=True, **kwargs)


def test_streaming_ranks_draw_the_same_tasks_from_disjoint_rows(uid_parquet):
    def run(rank):
        sources = [streaming_uid_source(uid_parquet), TaskSource(uid_dataset(100), ["kind"], name="memory")]
        mixture = TaskMixture(sources, batch_size=5, when_exhausted="stop", seed=0, rank=rank, world_size=2)
        return list(mixture)

    rank0, rank1 = run(0), run(1)
    assert [b.tasks for b in rank0] == [b.tasks for b in rank1]
    streamed0 = [u for b in rank0 for u in served_uids(b)]
    streamed1 = [u for b in rank1 for u in served_uids(b)]
    assert streamed0 and set(streamed0).isdisjoint(streamed1)
    assert len(set(streamed0)) == len(streamed0)


def test_streaming_resume_continues_exactly(uid_parquet):
    def make():
        mixture = TaskMixture(
            [streaming_uid_source(uid_parquet), TaskSource(uid_dataset(100), ["kind"], name="memory")],
            batch_size=8,
            steps_per_epoch=60,
            shuffle_buffer_size=50,
            seed=9,
        )
        return mixture.dataloader(MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(8, 8))))

    uninterrupted = list(make())
    loader = make()
    first = list(islice(iter(loader), 23))
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert_same_batches(first + list(resumed), uninterrupted)


def test_stream_of_unknown_size_needs_a_size_free_strategy():
    def rows():
        yield from uid_dataset(30)

    stream = IterableDataset.from_generator(rows, features=uid_dataset(1).features)
    with pytest.raises(ValueError, match="source 'kind' is a stream of unknown size: give it num_rows="):
        TaskMixture(TaskSource(stream, ["kind"]), batch_size=4)
    endless = TaskMixture(TaskSource(stream, ["kind"]), batch_size=4, strategy="uniform")
    with pytest.raises(TypeError, match="endless"):
        len(endless)
    assert sum(len(b.examples) for b in islice(iter(endless), 20)) == 80  # runs past its 30 rows
    sized = TaskMixture(TaskSource(stream, ["kind"], num_rows=30), batch_size=4)
    assert len(sized) == 7


def test_streaming_parquet_memory_stays_bounded(shop_parquet):
    script = Path(__file__).with_name("stream_memory.py")
    result = subprocess.run(
        [sys.executable, str(script), str(shop_parquet)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["declared_rows"] == SHOP_ROWS
    assert report["rows"] == SHOP_ROWS // 64 * 64  # every full batch of 64 ("stop" drops the last partial one)
    # The last three quarters of the stream decode 9,000 images (110 MB as float tensors); holding
    # them would grow the process by at least that much. Streaming keeps it flat (allocator noise
    # is a few MB).
    decoded_after_first_quarter = 3 * SHOP_ROWS // 4 * 3 * 32 * 32 * 4
    growth = report["peak"] - report["peak_first_quarter"]
    assert growth < 16 * 2**20 < decoded_after_first_quarter / 6, report


def test_shop_rows_are_deterministic_whatever_the_sharding(shop_parquet):
    in_memory = load_shop_dataset(6, seed=0, start=2998)  # rows 2998..3003 span two shards
    streamed = TaskSource(shop_parquet, ["category", "colour", "pattern", "tags", "size"], streaming=True)
    assert streamed.num_rows == SHOP_ROWS
    table = datasets.load_dataset("parquet", data_files=sorted(map(str, shop_parquet.glob("*.parquet"))), split="train")
    raw = table.cast_column("image", datasets.Image(decode=False))
    for offset in range(6):
        assert table[2998 + offset]["category"] == in_memory[offset]["category"]
        assert table[2998 + offset]["size"] == in_memory[offset]["size"]
        assert raw[2998 + offset]["image"]["bytes"] == shop_row(2998 + offset, seed=0)["image"]["bytes"]
    assert load_shop_dataset(5, seed=1)["size"] != load_shop_dataset(5, seed=0)["size"]


def test_shop_labels_cover_every_class_and_miss_at_the_set_rate():
    shop = load_shop_dataset(1500, seed=2, missing_rate=0.3)
    for column, names in [("category", CATEGORIES), ("colour", list(COLOURS)), ("pattern", PATTERNS)]:
        values = shop[column]
        assert Counter(v for v in values if v is not None).keys() == set(range(len(names)))
        assert abs(values.count(None) / 1500 - 0.3) < 0.05
    tags = [t for t in shop["tags"] if t is not None]
    assert abs(sum(0 in t for t in tags) / len(tags) - 0.3) < 0.05
    assert {i for t in tags for i in t} == set(range(len(TAGS)))
    sizes = [s for s in shop["size"] if s is not None]
    assert 0.45 <= min(sizes) and max(sizes) <= 0.95
    source = TaskSource(shop, ["category", "colour", "pattern", "tags", "size"])
    assert [spec.type for spec in source.task_specs] == ["classification"] * 3 + ["multilabel", "regression"]


def test_shop_options_are_checked():
    with pytest.raises(ValueError, match="missing_rate must be in"):
        load_shop_dataset(5, missing_rate=1.0)
    with pytest.raises(ValueError, match="num_rows must be a positive integer"):
        load_shop_dataset(0)


def test_digits_are_the_real_scikit_learn_digits():
    digits = load_digits_dataset()
    assert len(digits) == 1797
    source = TaskSource(digits, ["digit", "traits", "ink"])
    assert [spec.type for spec in source.task_specs] == ["classification", "multilabel", "regression"]
    row = digits[0]
    assert row["image"].size == (8, 8) and row["digit"] == 0
    assert row["traits"] == [0]  # 0 is even, not prime, not above four
    seven = digits[digits["digit"].index(7)]
    assert seven["traits"] == [1, 2]  # prime and above four
    assert abs(sum(digits["ink"]) / 1797) < 1e-3 and abs(max(digits["ink"])) < 5  # a z-score
