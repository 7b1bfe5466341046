"""Throughput of the data path beside the demo model's appetite, on this machine, in one run.

    python bench/data_throughput.py [--rows 100000] [--batches 150]

Writes (once, cached under .cache/bench/) `--rows` shop images as Parquet shards, then measures:
- images/s of the data path - read + decode + transform (train variant) + collate - for a
  map-style and a streaming source, with 0, 1 and 2 DataLoader workers;
- images/s the tiny demo model consumes in training (forward + backward + AdamW step on
  ready-made tensors, batch 64);
- images/s of the two together (the model training on the loader's batches), with the default
  worker count (`default_num_workers()`: 0 on a CPU-only machine) and with 2 workers.
Prints one table; `ratio` is data images/s over the model's images/s (target: >= 3 with the
default worker count, so the data path is never the bottleneck).

Then what the workers send (`--pixel_size`, 224 by default: the photos resized as a ViT at 224 px takes them), with
1 and 2 workers, in the same run: float32 pixels normalised in the workers (as before) against uint8 pixels
normalised in the main process (`MultiTaskCollator(uint8_pixels=True)`, what training, evaluation and tagging use
now): the bytes a batch carries between processes, and images/s of the loader with the normalisation included.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from itertools import islice
from pathlib import Path

import torch
from transformers import ViTConfig

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import (
    ImageTransforms,
    MultiTaskCollator,
    TaskMixture,
    TaskSource,
    default_num_workers,
    write_shop_parquet,
)

TASKS = ["category", "colour", "pattern", "tags", "size"]
BATCH_SIZE = 64


def shop_shards(rows: int, seed: int) -> Path:
    folder = Path(".cache") / "bench" / f"shop-{rows}-seed{seed}"
    if not (folder / "DONE").exists():
        write_shop_parquet(folder, rows, rows_per_shard=10_000, seed=seed, num_proc=os.cpu_count() or 1)
        (folder / "DONE").touch()
    return folder


def make_loader(folder: Path, streaming: bool, workers: int, seed: int, *, size: int = 32, uint8: bool = False):
    source = TaskSource(folder, TASKS, streaming=streaming, name="shop")
    mixture = TaskMixture(source, batch_size=BATCH_SIZE, seed=seed, shuffle_buffer_size=1000)
    transform = ImageTransforms(size=(size, size), train=True)
    collator = MultiTaskCollator(mixture.task_specs, transform, uint8_pixels=uint8)
    return mixture, mixture.dataloader(collator, num_workers=workers, persistent_workers=workers > 0)


def transport_rate(folder: Path, workers: int, batches: int, seed: int, size: int, uint8: bool) -> tuple[float, int]:
    """(images/s of the loader with the pixels normalised, float32 or uint8 from the workers; bytes of a batch's
    pixels)."""
    _, loader = make_loader(folder, False, workers, seed, size=size, uint8=uint8)
    transform = ImageTransforms(size=(size, size))
    iterator = iter(loader)
    first = next(iterator)["pixel_values"]
    for _ in islice(iterator, 5):
        pass
    started = time.perf_counter()
    images = 0
    for batch in islice(iterator, batches):
        images += len(transform.normalize(batch["pixel_values"]))  # uint8: here, in the main process
    return images / (time.perf_counter() - started), first.nbytes


def data_rate(folder: Path, streaming: bool, workers: int, batches: int, seed: int) -> float:
    _, loader = make_loader(folder, streaming, workers, seed)
    iterator = iter(loader)
    for _ in islice(iterator, 10):  # start-up: workers, file handles, first shuffle buffer
        pass
    started = time.perf_counter()
    images = sum(len(batch["pixel_values"]) for batch in islice(iterator, batches))
    return images / (time.perf_counter() - started)


def demo_model(task_specs) -> MultiTaskViTModel:
    backbone = ViTConfig(
        image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    return MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=task_specs))


def train_rate(model, batches, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(batch["pixel_values"])

    for batch in islice(batches, 5):
        step(batch)
    started = time.perf_counter()
    images = sum(step(batch) for batch in islice(batches, steps))
    return images / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="shop images written as Parquet shards")
    parser.add_argument("--batches", type=int, default=150, help="batches of 64 timed per data-path row")
    parser.add_argument("--steps", type=int, default=60, help="training steps timed for the model rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixel_size", type=int, default=224, help="the size for float32 against uint8 pixels")
    parser.add_argument("--transport_batches", type=int, default=40, help="batches timed per transport row")
    args = parser.parse_args()

    folder = shop_shards(args.rows, args.seed)
    mixture, _ = make_loader(folder, streaming=False, workers=0, seed=args.seed)
    model = demo_model(mixture.task_specs)

    # The model's appetite: training on batches that already sit in memory.
    _, loader = make_loader(folder, streaming=False, workers=0, seed=args.seed)
    cached = list(islice(iter(loader), 8))
    model_rate = train_rate(model, iter(cached * (args.steps // 8 + 2)), args.steps)

    rows = []
    for streaming in (False, True):
        for workers in (0, 1, 2):
            rate = data_rate(folder, streaming, workers, args.batches, args.seed)
            rows.append(("streaming" if streaming else "map-style", f"data path, {workers} workers", rate))
    rows.append(("-", "model training alone", model_rate))
    default = default_num_workers()
    for streaming in (False, True):
        for workers in sorted({default, 2}):
            _, loader = make_loader(folder, streaming, workers, args.seed)
            rate = train_rate(model, iter(loader), args.steps)
            kind = "streaming" if streaming else "map-style"
            rows.append((kind, f"model training on the loader, {workers} workers", rate))

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); {args.rows} shop images (32 px) in "
        f"{len(list(folder.glob('*.parquet')))} Parquet shards; batch {BATCH_SIZE}; "
        f"default_num_workers() = {default}\n"
    )
    print(f"{'source':<10} {'what':<44} {'images/s':>9} {'ratio':>6}")
    for source, what, rate in rows:
        print(f"{source:<10} {what:<44} {rate:>9.0f} {rate / model_rate:>6.2f}")
    print("\nratio: images/s over the model's training images/s (data path target >= 3 at the default workers)")

    size = args.pixel_size
    print(f"\nWhat the workers send, photos at {size} px, batch {BATCH_SIZE} (map-style; in turn, same run):\n")
    print("| workers | pixels from the workers | MB a batch | images/s | vs float32 |")
    print("|---:|---|---:|---:|---:|")
    for workers in (1, 2):
        measured = {
            kind: transport_rate(folder, workers, args.transport_batches, args.seed, size, kind == "uint8")
            for kind in ("float32", "uint8")
        }
        for kind, (rate, nbytes) in measured.items():
            ratio = rate / measured["float32"][0]
            print(f"| {workers} | {kind} | {nbytes / 1e6:.1f} | {rate:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
