"""What full fine-tuning, a frozen backbone and LoRA cost, measured in one run on the same model and data.

    python bench/fine_tuning_cost.py [--steps 5] [--repeats 2] [--lora-rank 8]

A ViT-Base-sized backbone (86M parameters, built from config: the cost does not depend on the weights' values),
224 px photos of the shop data, batch 8, 4 tasks (category, colour, tags, size), equal weights, on the CPU. Each
configuration trains in a fresh process, so that its peak memory (the process's maximum resident set) is its own;
its step time is the median between optimizer steps after the first. With `--repeats`, the configurations run in
turn, repeat after repeat, and a ratio is the median of the ratios within each repeat. Ratios are against full
fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile

import torch
from trainer_overhead import StepTimer, common_arguments
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import TaskSource, load_shop_dataset

TASKS = ["category", "colour", "tags", "size"]
VIT_BASE = dict(
    image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
)
MODES = ("full", "frozen backbone", "LoRA")


def settings_of(mode: str, lora_rank: int) -> dict:
    return {"full": {}, "frozen backbone": {"freeze_backbone": True}, "LoRA": {"lora_rank": lora_rank}}[mode]


def child(mode: str, steps: int, lora_rank: int) -> None:
    """One configuration's measurement in this fresh process; prints JSON."""
    torch.manual_seed(0)
    source = TaskSource(load_shop_dataset(8 * (steps + 2), seed=0, missing_rate=0.0, image_size=224), TASKS)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**VIT_BASE), tasks=source.task_specs))
    timer = StepTimer(warmup=1)
    with tempfile.TemporaryDirectory() as out:
        args = MultiTaskTrainingArguments(**common_arguments(steps + 1, out, 8), **settings_of(mode, lora_rank))
        trainer = MultiTaskTrainer(model, args, train_dataset=source, callbacks=[timer])
        trainer.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": timer.seconds_per_step, "peak_gib": peak, "trainable": trainable}))


def measure(mode: str, steps: int, lora_rank: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--steps", str(steps), "--lora-rank", str(lora_rank)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per configuration")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.lora_rank)
        return

    runs = [{mode: measure(mode, args.steps, args.lora_rank) for mode in MODES} for _ in range(args.repeats)]
    print(
        f"# Fine-tuning cost: ViT-Base size (86M), 224 px, batch 8, {len(TASKS)} tasks, equal weights, CPU "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); {args.steps} timed steps, "
        f"{args.repeats} repeats, LoRA rank {args.lora_rank} on q_proj, v_proj\n"
    )
    print("| configuration | trainable parameters | s / step | x full | peak memory (GiB) | x full |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in MODES:
        seconds = statistics.median(run[mode]["seconds"] for run in runs)
        peak = statistics.median(run[mode]["peak_gib"] for run in runs)
        time_ratio = statistics.median(run[mode]["seconds"] / run["full"]["seconds"] for run in runs)
        memory_ratio = statistics.median(run[mode]["peak_gib"] / run["full"]["peak_gib"] for run in runs)
        trainable = runs[0][mode]["trainable"]
        print(
            f"| {mode} | {trainable / 1e6:.2f}M | {seconds:.2f} | {time_ratio:.2f} | {peak:.2f} | {memory_ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
