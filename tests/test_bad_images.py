"""Broken product photos in a real catalogue: a Parquet source salted with each kind. Under
`bad_image_policy: raise` the first undecodable one stops the run naming the source, the row and the
decoder's error; under `skip` it is left out and counted per source (logs, train metrics, evaluation),
map-style and streaming, in DataLoader workers; too many stop the run."""

import io
import json

import datasets
import numpy as np
import pytest
from PIL import Image

from mtl_hf import MultiTaskTrainer
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskMixture, TaskSource, load_shop_dataset
from tests.training_helpers import arguments, new_model

GOOD_ROWS = 48


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def salted_images() -> dict[int, tuple[str, bytes, bool]]:
    """Row -> (kind, bytes, decodable): what real catalogues hold besides good photos."""
    photo = load_shop_dataset(1)[0]["image"]
    jpeg = encoded(photo, "JPEG")
    frames = [photo, photo.rotate(90)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    sixteen_bit = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    return {
        5: ("truncated JPEG", jpeg[: len(jpeg) // 3], False),
        11: ("HTML error page saved as .jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", False),
        17: ("1x1 pixel", encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), True),
        23: ("CMYK JPEG", encoded(photo.convert("CMYK"), "JPEG"), True),
        29: ("16-bit PNG", encoded(sixteen_bit, "PNG"), True),
        35: ("animated GIF", animated.getvalue(), True),
    }


def salted_rows() -> datasets.Dataset:
    rows = load_shop_dataset(GOOD_ROWS, missing_rate=0.0).cast_column("image", datasets.Image(decode=False))
    salt = salted_images()

    def salted(row, index):
        return {"image": {"bytes": salt[index][1], "path": None}} if index in salt else row

    return rows.map(salted, with_indices=True)


@pytest.fixture(scope="module")
def salted_parquet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("salted")
    salted_rows().to_parquet(str(folder / "catalogue.parquet"))
    return folder / "catalogue.parquet"


def source(path, policy, streaming=False):
    return TaskSource(
        str(path),
        ["category", "colour"],
        name="catalogue",
        bad_image_policy=policy,
        streaming=streaming,
        num_rows=GOOD_ROWS if streaming else None,
    )


def test_raise_names_the_source_the_row_and_the_decoder_error(salted_parquet):
    catalogue = source(salted_parquet, "raise")
    collator = MultiTaskCollator(catalogue.task_specs, ImageTransforms(size=(32, 32)))
    with pytest.raises(
        ValueError, match=r"^source 'catalogue', row 5: cannot decode the image \(OSError: Truncated File Read"
    ):
        collator(catalogue.rows(range(GOOD_ROWS)))
    with pytest.raises(ValueError, match=r"^source 'catalogue', row 11: cannot decode the image \(UnidentifiedImage"):
        collator(catalogue.rows(range(6, GOOD_ROWS)))


def test_skip_leaves_out_exactly_the_undecodable_rows_and_decodes_the_odd_ones(salted_parquet):
    catalogue = source(salted_parquet, "skip")
    collator = MultiTaskCollator(catalogue.task_specs, ImageTransforms(size=(32, 32)), with_rows=True)
    batch = collator(catalogue.rows(range(GOOD_ROWS)))
    bad = sorted(row for row, (_, _, decodable) in salted_images().items() if not decodable)
    assert batch["image_counts"] == {
        "served": {"catalogue": GOOD_ROWS},
        "skipped": {"catalogue": len(bad)},
        "broken_rows": {"catalogue": bad},
    }
    assert batch["rows"] == [f"catalogue:{row}" for row in range(GOOD_ROWS) if row not in bad]
    assert batch["pixel_values"].shape == (GOOD_ROWS - len(bad), 3, 32, 32)
    assert all(len(targets) == GOOD_ROWS - len(bad) for targets in batch["labels"].values())
    assert batch["pixel_values"].isfinite().all()


@pytest.mark.parametrize("streaming", [False, True])
def test_skip_counts_per_source_in_dataloader_workers(salted_parquet, streaming):
    catalogue = source(salted_parquet, "skip", streaming=streaming)
    mixture = TaskMixture([catalogue], batch_size=8, seed=0, shuffle_buffer_size=16)
    collator = MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(32, 32)))
    skipped = served = 0
    for batch in mixture.dataloader(collator, num_workers=2):
        skipped += batch["image_counts"]["skipped"].get("catalogue", 0)
        served += batch["image_counts"]["served"]["catalogue"]
    assert (served, skipped) == (GOOD_ROWS, 2)  # one pass over the rows, both broken ones found once


def test_training_with_skip_logs_and_reports_the_counts(salted_parquet, tmp_path):
    catalogue = source(salted_parquet, "skip")
    args = arguments(
        tmp_path,
        num_train_epochs=2,
        max_steps=-1,
        per_device_train_batch_size=16,
        logging_steps=3,
        max_bad_image_fraction=0.1,
    )
    trainer = MultiTaskTrainer(new_model(catalogue), args, train_dataset=catalogue, eval_dataset=catalogue)
    output = trainer.train()
    # 2 broken photos met in each of 2 epochs: counted once each, as distinct photos, not 4 encounters.
    assert output.metrics["bad_images_catalogue"] == 2
    logged = [entry["bad_images_catalogue"] for entry in trainer.state.log_history if "bad_images_catalogue" in entry]
    assert logged[-1] == 2 and logged == sorted(logged)
    seen, broken = trainer.bad_images.totals()
    assert seen == {"catalogue": catalogue.num_rows} and broken == {"catalogue": 2}  # rows served twice, seen once
    metrics = trainer.evaluate()
    assert metrics["eval_bad_images_catalogue"] == 2 and metrics["eval_rows_scored"] == catalogue.num_rows - 2
    trainer.save_metrics("train", output.metrics)
    assert json.loads((tmp_path / "all_results.json").read_text())["bad_images_catalogue"] == 2


def test_too_many_bad_images_stop_the_run_with_the_counts(salted_parquet, tmp_path):
    catalogue = source(salted_parquet, "skip")
    args = arguments(
        tmp_path, max_steps=6, per_device_train_batch_size=16, logging_steps=3, max_bad_image_fraction=0.01
    )
    trainer = MultiTaskTrainer(new_model(catalogue), args, train_dataset=catalogue)
    with pytest.raises(
        ValueError,
        match=r"source 'catalogue': 2 of the \d+ photos seen \(\d+\.\d%\) could not be decoded, "
        r"more than max_bad_image_fraction 0.01",
    ):
        trainer.train()


def test_unknown_policy_is_refused(salted_parquet):
    with pytest.raises(ValueError, match="unknown bad_image_policy 'ignore'; use one of raise, skip"):
        source(salted_parquet, "ignore")


def test_the_recipe_field_reaches_every_source_and_its_held_out_share(salted_parquet):
    from mtl_hf.commands.recipe import DataArguments, load_data

    data = DataArguments(dataset=str(salted_parquet), tasks=["category"], bad_image_policy="skip", eval_fraction=0.25)
    train, evaluation = load_data(data, seed=0)
    assert [s.bad_image_policy for s in train + evaluation] == ["skip", "skip"]
    with pytest.raises(ValueError, match="unknown bad_image_policy 'drop'"):
        DataArguments(dataset=str(salted_parquet), tasks=["category"], bad_image_policy="drop")


class BuggyTransforms(ImageTransforms):
    """A transform with a bug planted in it: the code that handles good photos fails."""

    def resize(self, image):
        return planted_bug(image)


def planted_bug(image):
    return image.width / 0


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_a_bug_in_a_transform_surfaces_with_its_traceback_under_either_policy(policy):
    source = TaskSource(load_shop_dataset(4), ["category"], bad_image_policy=policy)
    collator = MultiTaskCollator(source.task_specs, BuggyTransforms(size=(32, 32)))
    with pytest.raises(ZeroDivisionError) as raised:  # not a "bad image", and not skipped
        collator(source.rows(range(4)))
    assert any(frame.name == "planted_bug" for frame in raised.traceback)


def test_a_bug_in_a_transform_stops_training_that_skips_bad_images(tmp_path):
    source = TaskSource(load_shop_dataset(16), ["category"], bad_image_policy="skip")
    trainer = MultiTaskTrainer(
        new_model(source),
        arguments(tmp_path, max_steps=2, per_device_train_batch_size=8),
        train_dataset=source,
        image_transforms=BuggyTransforms(size=(32, 32)),
    )
    with pytest.raises(ZeroDivisionError) as raised:
        trainer.train()
    assert any(frame.name == "planted_bug" for frame in raised.traceback)
