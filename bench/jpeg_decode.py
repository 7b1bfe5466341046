"""JPEG product photos to 224-px tensors, per DataLoader worker, with and without PIL's draft mode.

    OMP_NUM_THREADS=1 python bench/jpeg_decode.py [--images 200] [--image_size 800] [--repeats 3]

Draws `--images` shop photos at `--image_size` px with camera grain, encodes them as JPEG (quality
90), and measures on ONE core (one DataLoader worker does exactly this work) the images/s of:
decode + transform (train: random resized crop to 224 + flip; eval: resize to 224) + tensor, once
decoding every pixel and once in draft mode (`ImageTransforms(draft_decoding=True)`: the JPEG is
decoded at 1/2, 1/4 or 1/8 scale when that still covers the 224-px output). The median of
`--repeats` passes is reported; within a pass the two decodes alternate photo by photo (the
machine's speed drifts), and the ratio is the median of the passes' ratios.

Then: how far the draft-mode eval transform is from the saved image processor
(`ViTImageProcessorPil` on the fully decoded photo), and how many workers feed a ViT-B/16 at the
training throughput of a data-centre GPU (`GPU_IMAGES_PER_SECOND`, cited below).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image

from mtl_hf.data import ImageTransforms, decode_image, shop_row
from mtl_hf.data.loader import ACCELERATOR_IMAGES_PER_SECOND

# ViT-B/16, 224 px, fp16 mixed precision, one A100 SXM4 80GB at its largest batch (1,024): 1,030 images/s
# in training (forward + backward + step) on synthetic on-device data, i.e. with no data loading at all.
# Source: the "pytorch-ddp-bench" results table, https://willgpaik-github-io.pages.dev/portfolio/pytorch-ddp-bench/
# The same figure sets default_num_workers(); it is kept there.
GPU_IMAGES_PER_SECOND = ACCELERATOR_IMAGES_PER_SECOND
# Camera grain (grey levels) on the drawn photos: 800-px JPEGs of about 55 KB, as product photos on a plain
# background weigh; without it they would be flat drawings (22 KB) that decode unrealistically fast.
GRAIN = 2.0
# An H100 trains a ViT about twice as fast as an A100: NVIDIA NeMo's ViT performance page measures ViT g/14
# at 693 samples/s on one DGX A100 node and 1,428 on one DGX H100 node (2.06x),
# https://docs.nvidia.com/nemo-framework/user-guide/latest/MultimodalModels/VisionLanguageFoundation/Vit/Perf.html
H100_OVER_A100 = 1428 / 693
GPU_SOURCE = "ViT-B/16 fp16 training on one A100 SXM4 80GB (pytorch-ddp-bench, willgpaik-github-io.pages.dev)"


def photos(count: int, image_size: int) -> list[bytes]:
    return [
        shop_row(index, image_size=image_size, image_format="JPEG", grain=GRAIN)["image"]["bytes"]
        for index in range(count)
    ]


def side_by_side(encoded: list[bytes], full, draft, repeats: int) -> tuple[float, float, float]:
    """Median images/s of `full` and `draft` over `repeats` passes, and the median of their ratio.

    Within a pass the two run photo by photo, back to back, so that the speed of this shared machine,
    which drifts from second to second, weighs on both alike.
    """
    full_rates, draft_rates = [], []
    for _ in range(repeats):
        full_seconds = draft_seconds = 0.0
        for data in encoded:
            started = time.perf_counter()
            full(data)
            middle = time.perf_counter()
            draft(data)
            full_seconds += middle - started
            draft_seconds += time.perf_counter() - middle
        full_rates.append(len(encoded) / full_seconds)
        draft_rates.append(len(encoded) / draft_seconds)
    ratios = [d / f for d, f in zip(draft_rates, full_rates, strict=True)]
    return statistics.median(full_rates), statistics.median(draft_rates), statistics.median(ratios)


def whole_path(transform: ImageTransforms):
    return lambda data: transform.to_tensor([transform.resize(transform.decode(data))])


def decode_only(transform: ImageTransforms):
    return transform.decode


def eval_difference(encoded: list[bytes], transform: ImageTransforms) -> tuple[float, float]:
    """Mean and max |draft-mode eval transform - saved image processor on the full decode|, in grey levels."""
    processor = transform.image_processor()
    diffs = []
    for data in encoded:
        ours = transform(transform.decode(data))
        reference = processor(images=decode_image(data), return_tensors="pt")["pixel_values"][0]
        diffs.append((ours - reference).abs() * (255.0 * torch.tensor(transform.std).view(-1, 1, 1)))
    stacked = torch.stack(diffs)
    return float(stacked.mean()), float(stacked.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=800)
    parser.add_argument("--size", type=int, default=224, help="the model's input size")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    random.seed(0)

    encoded = photos(args.images, args.image_size)
    size = (args.size, args.size)
    rows = []
    for name, train, work in (
        ("train", True, whole_path),
        ("eval", False, whole_path),
        ("decode only", True, decode_only),
    ):
        transforms = [ImageTransforms(size=size, train=train, draft_decoding=draft) for draft in (False, True)]
        rows.append((name, *side_by_side(encoded, *map(work, transforms), args.repeats)))
    mean_diff, max_diff = eval_difference(encoded, ImageTransforms(size=size, draft_decoding=True))
    full_eval_mean, full_eval_max = eval_difference(encoded, ImageTransforms(size=size, draft_decoding=False))

    kilobytes = sum(map(len, encoded)) / len(encoded) / 1024
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Pillow {Image.__version__}, torch "
        f"{torch.__version__}, 1 thread; {args.images} shop photos, {args.image_size}x{args.image_size} JPEG "
        f"(quality 90, grain {GRAIN:g}; {kilobytes:.0f} KB each) -> {args.size} px; "
        f"median of {args.repeats} passes, the two decodes alternating\n"
    )
    print(f"{'path':<12} {'full decode img/s':>18} {'draft img/s':>12} {'draft/full':>11}")
    for name, full, draft, ratio in rows:
        print(f"{name:<12} {full:>18.1f} {draft:>12.1f} {ratio:>10.2f}x")
    print("train: decode + random resized crop to 224 + flip + tensor; eval: decode + resize + tensor")
    print(
        f"\neval transform vs the saved image processor (grey levels, 0-255): draft mode mean {mean_diff:.3f}, "
        f"max {max_diff:.1f}; full decode mean {full_eval_mean:.3f}, max {full_eval_max:.1f}"
    )
    train_full, train_draft = rows[0][1], rows[0][2]
    print(f"\nto feed {GPU_IMAGES_PER_SECOND} images/s ({GPU_SOURCE}):")
    print(
        f"(an H100 trains ViTs {H100_OVER_A100:.2f}x as fast as an A100, per NVIDIA's NeMo figures: twice the workers)"
    )
    for name, rate in (("full decode", train_full), ("draft mode", train_draft)):
        print(f"  {name:<12} {math.ceil(GPU_IMAGES_PER_SECOND / rate):>3} workers per GPU at {rate:.0f} img/s each")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
