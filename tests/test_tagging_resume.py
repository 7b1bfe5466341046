"""Catalogue tagging resumes only from sound shards: a shard cut short or with another row count than its record
is redone, two writers of one shard (a retry beside a speculative copy) leave one whole file, and a replaced photo
or another engine is a different run."""

import json
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mtl_hf.data import load_shop_dataset
from mtl_hf.errors import OutputExistsError
from mtl_hf.inference.shard_store import OutputFolder
from mtl_hf.inference.tagging import TaggingOptions, tag_catalogue

from .test_predict_catalogue import read_output, save_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_model(folder)
    return folder


def photo_folder(root, count=12, image_format="PNG"):
    root.mkdir()
    suffix = ".png" if image_format == "PNG" else ".bmp"
    for index, row in enumerate(load_shop_dataset(count, start=500)):
        row["image"].save(root / f"{index:03d}{suffix}", format=image_format)
    return root


def tag(model, photos, out, **options):
    return tag_catalogue(str(model), str(photos), str(out), TaggingOptions(shard_rows=4, batch_size=4, **options))


def test_a_shard_cut_short_or_with_other_rows_than_its_record_is_redone(model, tmp_path):
    photos = photo_folder(tmp_path / "photos")
    out = tmp_path / "out"
    first = tag(model, photos, out)
    assert first["shards"] == 3 and first["shards_resumed"] == 0
    whole = read_output(out)
    # A machine that crashed mid-write: the file is there, its footer is not.
    cut = out / "predictions" / "part-00001.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    # A file that reads but does not hold the rows its record counts.
    other = out / "predictions" / "part-00002.parquet"
    pq.write_table(pq.read_table(other).slice(0, 1), other)
    again = tag(model, photos, out)
    assert again["shards_resumed"] == 1 and again["rows_out"] == 12
    assert read_output(out) == whole
    assert not list((out / "_progress" / "tmp").iterdir())


def test_two_writers_of_one_shard_leave_one_sound_file(tmp_path):
    out = OutputFolder(str(tmp_path / "out"), {})
    rows = 200_000
    tables = [pa.table({"sku": pa.array(range(rows)), "writer": pa.array([w] * rows)}) for w in (0, 1)]
    start, errors = threading.Barrier(2), []

    def write(writer):
        start.wait()
        try:
            out.write_shard("part-00000", tables[writer], {"shard": "part-00000", "rows_out": rows})
        except Exception as error:  # noqa: BLE001 (the test reports any)
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    written = pq.read_table(tmp_path / "out" / "predictions" / "part-00000.parquet")
    assert written.num_rows == rows and len(set(written.column("writer").to_pylist())) == 1
    assert out.finished("part-00000")
    assert not list((tmp_path / "out" / "_progress" / "tmp").iterdir())


def test_a_replaced_photo_or_another_engine_is_another_run(model, tmp_path):
    photos = photo_folder(tmp_path / "photos", count=4, image_format="BMP")
    out = tmp_path / "out"
    tag(model, photos, out)
    run = out / "_progress" / "run.json"
    assert '"engine": "torch"' in run.read_text()
    # Another photo under the same name (a BMP of the same size in bytes), its time then set back as a copy
    # that keeps times would: sizes and times do not see it, its bytes do.
    replaced = photos / "002.bmp"
    stat = replaced.stat()
    Image.new("RGB", Image.open(replaced).size, "red").save(replaced, format="BMP")
    assert replaced.stat().st_size == stat.st_size
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tag(model, photos, out)["shards_resumed"] == 1  # the same sizes and times: the same run
    hashed = tmp_path / "hashed"
    tag(model, photos, hashed, hash_photos=True)
    Image.new("RGB", Image.open(replaced).size, "blue").save(replaced, format="BMP")
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(OutputExistsError, match="holds a run of another input"):
        tag(model, photos, hashed, hash_photos=True)
    # Without the option, a new modification time is enough.
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(OutputExistsError, match="holds a run of another input"):
        tag(model, photos, out)
    recorded = OutputFolder(str(out), {})
    earlier = json.loads(run.read_text())
    with pytest.raises(OutputExistsError, match="holds a run of another engine"):
        recorded.check({**earlier, "engine": "onnx", "fingerprint": "another"})
