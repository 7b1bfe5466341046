import io
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTImageProcessorPil

from mtl_hf import MISSING_CLASS, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, MultiTaskCollator, RawExample, TaskMixture, decode_image
from tests.conftest import tiny_vit_config
from tests.data.helpers import png_bytes, uid_source


def random_image(width=50, height=40, seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_eval_transform_matches_the_vit_image_processor():
    processor = ViTImageProcessorPil(
        size={"height": 32, "width": 24}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
    )
    transform = ImageTransforms.from_image_processor(processor)
    assert transform.size == (32, 24) and transform.mean == (0.4, 0.5, 0.6)
    image = random_image()
    expected = processor(image, return_tensors="pt")["pixel_values"][0]
    got = transform(image)
    assert got.shape == (3, 32, 24)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_image_processor_round_trip_keeps_the_preprocessing(tmp_path):
    transform = ImageTransforms(size=(16, 16), mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    transform.image_processor().save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert ImageTransforms.from_image_processor(processor) == transform
    image = random_image(seed=3)
    torch.testing.assert_close(
        transform(image), processor(image, return_tensors="pt")["pixel_values"][0], atol=1e-5, rtol=0
    )


def test_train_transform_crops_flips_and_is_seeded():
    transform = ImageTransforms(
        size=(16, 16), train=True, flip_probability=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1.25, 1.25)
    )
    image = random_image(width=50, height=40)  # a 50x40 image at ratio 1.25 fills the frame: only the flip remains
    flipped = transform(image)
    plain = ImageTransforms(size=(16, 16))(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    torch.testing.assert_close(flipped, plain)

    random_crop = ImageTransforms(size=(16, 16), train=True)
    random.seed(0)
    first = random_crop(image)
    random.seed(0)
    assert torch.equal(random_crop(image), first)
    assert not torch.equal(random_crop(image), first)
    assert first.shape == (3, 16, 16)


def test_images_become_rgb():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: shows the white page
    assert decode_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (4, 4), 77)
    assert decode_image(grey).getpixel((1, 1)) == (77, 77, 77)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([200, 100, 50] + [0] * 765)
    assert decode_image(palette).getpixel((2, 2)) == (200, 100, 50)
    assert decode_image({"bytes": png_bytes(mode="RGBA"), "path": None}).mode == "RGB"
    assert decode_image(np.zeros((3, 5, 6), dtype=np.float32)).size == (6, 5)  # channels-first floats
    assert decode_image(np.full((5, 6), 0.5)).getpixel((0, 0)) == (127, 127, 127)


def shop_like_collator(specs):
    return MultiTaskCollator(specs, ImageTransforms(size=(8, 8)))


def test_mixed_batches_from_disjoint_sources_mark_other_tasks_missing():
    mixture = TaskMixture(
        [uid_source("a", 50), uid_source("b", 50, offset=50)], batch_size=32, batch_mode="mixed", seed=0
    )
    batch = shop_like_collator(mixture.task_specs)(next(iter(mixture)))
    assert set(batch) == {"pixel_values", "labels"}  # no "tasks": every head runs
    assert batch["pixel_values"].shape == (32, 3, 8, 8) and batch["pixel_values"].dtype == torch.float32
    labels = batch["labels"]
    assert set(labels) == {"a_kind", "a_uid", "b_kind", "b_uid"}
    from_a = ~torch.isnan(labels["a_uid"][:, 0])
    assert 0 < from_a.sum() < 32
    assert torch.all(labels["b_kind"][from_a] == MISSING_CLASS) and torch.all(labels["a_kind"][from_a] >= 0)
    assert torch.all(torch.isnan(labels["b_uid"][from_a])) and not torch.isnan(labels["b_uid"][~from_a]).any()
    assert labels["a_kind"].dtype == torch.long and labels["a_uid"].shape == (32, 1)


def test_homogeneous_batches_name_their_tasks_and_drive_the_model():
    mixture = TaskMixture([uid_source("a", 50), uid_source("b", 50, offset=50)], batch_size=4, seed=0)
    collator = MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(32, 32)))
    batch = collator(next(iter(mixture)))
    assert batch["tasks"] in (["a_kind", "a_uid"], ["b_kind", "b_uid"])
    assert set(batch["labels"]) == set(batch["tasks"])

    config = MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=mixture.task_specs)
    out = MultiTaskViTModel(config)(**batch)
    assert set(out.logits) == set(batch["tasks"]) and torch.isfinite(out.loss)


def test_an_undecodable_image_names_its_source_and_row():
    examples = [
        RawExample(image={"bytes": png_bytes(), "path": None}, labels={}, source="shop", row=0),
        RawExample(image={"bytes": b"not a png", "path": None}, labels={}, source="shop", row=17),
    ]
    with pytest.raises(ValueError, match=r"source 'shop', row 17: cannot decode the image \(UnidentifiedImageError"):
        shop_like_collator([])(examples)


def test_a_missing_image_names_its_row():
    example = RawExample(image=None, labels={}, source="shop", row=3)
    with pytest.raises(ValueError, match="source 'shop', row 3: cannot decode the image .*missing"):
        shop_like_collator([])([example])


def test_collated_targets_keep_regression_nan_and_multilabel_markers():
    from mtl_hf import TaskSpec

    specs = [TaskSpec("tags", "multilabel", labels=["x", "y"]), TaskSpec("size", "regression")]
    image = {"bytes": png_bytes(), "path": None}
    examples = [
        RawExample(image=image, labels={"tags": [1.0, 0.0], "size": [0.5]}, source="s", row=0),
        RawExample(image=image, labels={"tags": [-100.0, -100.0], "size": [math.nan]}, source="s", row=1),
    ]
    labels = shop_like_collator(specs)(examples)["labels"]
    assert labels["tags"].tolist() == [[1.0, 0.0], [-100.0, -100.0]]
    assert labels["size"][0, 0] == 0.5 and math.isnan(labels["size"][1, 0])


def test_png_helpers_make_real_pngs():
    assert Image.open(io.BytesIO(png_bytes(size=5))).size == (5, 5)
