"""What a task adapter costs at inference (`add_task_mode: lora`): the forward of a model whose new task reads the
backbone through low-rank adapters while its old tasks read it as it was, against the same model without them.

    python bench/task_adapter_cost.py [--batch 16] [--repeats 5]

A ViT-Small/16 at 224 px (22M parameters, built from config: the cost does not depend on the weights' values) with
the shop's tasks (category, colour, tags, size) and one added task (pattern) on an adapter of rank 8 on the query
and value projections, in eval mode, no gradient, on the CPU. Each row: the median over `--repeats` of one forward
of a batch, asked for the old tasks only, the new task only, or every task; the ratio is against the plain model
(no adapter) answering every task.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from transformers import ViTConfig

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import TaskSource, load_shop_dataset

VIT_SMALL = dict(
    image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536
)
OLD_TASKS, NEW_TASK = ["category", "colour", "tags", "size"], "pattern"


def models() -> tuple[MultiTaskViTModel, MultiTaskViTModel]:
    specs = TaskSource(load_shop_dataset(64), [*OLD_TASKS, NEW_TASK]).task_specs
    torch.manual_seed(0)
    plain = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**VIT_SMALL), tasks=specs)).eval()
    adapted = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**VIT_SMALL), tasks=specs)).eval()
    adapted.add_task_adapter([NEW_TASK], rank=8)
    return plain, adapted


def seconds(model, pixel_values, tasks, repeats: int) -> float:
    times = []
    with torch.no_grad():
        model(pixel_values, tasks=tasks)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(pixel_values, tasks=tasks)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    plain, adapted = models()
    pixel_values = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = [
        ("no adapter", "every task", seconds(plain, pixel_values, None, args.repeats)),
        ("adapter on pattern", "old tasks only", seconds(adapted, pixel_values, OLD_TASKS, args.repeats)),
        ("adapter on pattern", "pattern only", seconds(adapted, pixel_values, [NEW_TASK], args.repeats)),
        ("adapter on pattern", "every task", seconds(adapted, pixel_values, None, args.repeats)),
    ]
    print(
        f"bench/task_adapter_cost.py: ViT-Small/16 at 224 px, batch {args.batch}, median of {args.repeats}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| model | asked for | ms per batch | images/s | ratio to no adapter |")
    print("|---|---|---:|---:|---:|")
    for model, asked, time_taken in rows:
        print(
            f"| {model} | {asked} | {1000 * time_taken:.0f} | {args.batch / time_taken:.1f} | "
            f"{time_taken / rows[0][2]:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
