"""JPEG draft decoding: decode at the scale the transform needs, and stay close to the image processor."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from mtl_hf import MultiTaskTrainingArguments
from mtl_hf.data import ImageTransforms, decode_image, default_num_workers, shop_row
from mtl_hf.data import loader as loader_module


def _jpeg(size: int, index: int = 0) -> bytes:
    return shop_row(index, image_size=size, image_format="JPEG", grain=2.0)["image"]["bytes"]


def test_eval_transform_decodes_a_large_jpeg_at_the_scale_it_needs():
    data = _jpeg(800)
    transform = ImageTransforms(size=(224, 224))
    assert transform.decode(data).size == (400, 400)  # 1/2 scale still covers 224; 1/4 would not
    assert ImageTransforms(size=(96, 96)).decode(data).size == (100, 100)  # 1/8
    assert ImageTransforms(size=(224, 224), draft_decoding=False).decode(data).size == (800, 800)
    assert transform(transform.decode(data)).shape == (3, 224, 224)


def test_draft_decoding_leaves_other_formats_untouched():
    png = shop_row(0, image_size=256)["image"]["bytes"]
    assert ImageTransforms(size=(32, 32)).decode(png).size == (256, 256)


@pytest.mark.parametrize("width,height", [(800, 800), (1200, 500), (500, 1200), (640, 480), (230, 230)])
def test_every_training_crop_of_a_draft_decoded_image_still_holds_the_output_size(width, height):
    transform = ImageTransforms(size=(224, 224), train=True)
    image = Image.new("RGB", (width, height), (120, 30, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    decoded = transform.decode(buffer.getvalue())
    reduction = width / decoded.width
    assert reduction in (1, 2, 4, 8) and decoded.height == -(-height // int(reduction))
    assert reduction == {(800, 800): 2, (1200, 500): 2, (500, 1200): 2}.get((width, height), 1)
    random.seed(0)
    for _ in range(2000):
        left, top, right, bottom = transform._random_crop_box(decoded.width, decoded.height)
        assert right - left >= 224 - 1 and bottom - top >= 224 - 1 or reduction == 1  # never upsampled by the draft


def test_draft_decoded_eval_transform_stays_within_a_grey_level_of_the_saved_image_processor():
    transform = ImageTransforms(size=(224, 224))
    processor = transform.image_processor()
    diffs = []
    for index in range(8):
        data = _jpeg(800, index)
        ours = transform(transform.decode(data))
        reference = processor(images=decode_image(data), return_tensors="pt")["pixel_values"][0]
        diffs.append(((ours - reference).abs() * 127.5).flatten())  # grey levels (std 0.5)
    diff = torch.cat(diffs)
    # Measured (bench/jpeg_decode.py, 200 photos): mean 0.27, max 18 at a few edge pixels.
    assert diff.mean() < 1.0
    assert torch.quantile(diff, 0.99) < 4.0
    # Without draft decoding the eval transform is the processor, value for value.
    exact = ImageTransforms(size=(224, 224), draft_decoding=False)
    data = _jpeg(800, 0)
    reference = processor(images=decode_image(data), return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(exact(exact.decode(data)), reference, atol=1e-6, rtol=0)


def test_batches_are_contiguous_channels_first():
    transform = ImageTransforms(size=(16, 16))
    images = [Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)) for value in (0, 255)]
    batch = transform.to_tensor(images)
    assert batch.shape == (2, 3, 16, 16) and batch.is_contiguous()
    assert batch[0].eq(-1).all() and batch[1].eq(1).all()


@pytest.mark.parametrize(
    "accelerator,cpus,local_processes,use_cpu,expected",
    [
        (True, 32, 1, False, loader_module.WORKERS_PER_ACCELERATOR),  # enough to feed one GPU
        (True, 32, 8, False, 3),  # 4 cores per process, one for the main process
        (True, 2, 1, False, 1),
        (True, 32, 1, True, 0),  # training on the CPU of a GPU machine
        (False, 32, 1, False, 0),
    ],
)
def test_default_num_workers_follows_the_measured_need(
    monkeypatch, accelerator, cpus, local_processes, use_cpu, expected
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: accelerator)
    monkeypatch.setattr(loader_module.os, "cpu_count", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    assert default_num_workers(use_cpu=use_cpu) == expected
    assert loader_module.WORKERS_PER_ACCELERATOR == 6  # 2 x ceil(1030 / 370)


def test_training_arguments_take_the_default_worker_count_unless_given(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True).dataloader_num_workers == 0
    given = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=3)
    assert given.dataloader_num_workers == 3
    with pytest.raises(ValueError, match="dataloader_num_workers must be >= 0"):
        MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, dataloader_num_workers=-2)
