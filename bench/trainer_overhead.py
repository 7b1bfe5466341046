"""What the multi-task machinery costs, measured against its baselines in one run.

    python bench/trainer_overhead.py [--steps 60] [--repeats 2]

Every row trains the same tiny ViT (32 px, patch 4, width 64, 2 layers) on the shop data with
batch 32 and takes the median step time after the first 10 steps; the runs are interleaved and
the fastest of `--repeats` counts:
1. plain `Trainer` + `ViTForImageClassification` vs `MultiTaskTrainer` with one task: samples/s ratio;
2. one 4-task model vs one single-task model: step-time ratio;
3. one 4-task model vs 4 single-task models trained one after the other: time ratio (1/K = 0.25);
4. each balancing method's step time relative to equal weights.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource, load_shop_dataset
from mtl_hf.weighting import WEIGHTING_METHODS

BATCH = 32
WARMUP = 10
TASKS = ["category", "colour", "pattern", "tags"]
BACKBONE = dict(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128)  # fmt: skip


class StepTimer(TrainerCallback):
    """The median time between optimizer steps after the warm-up (robust to a stray slow step)."""

    def __init__(self):
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= WARMUP:
            self.stamps.append(time.perf_counter())

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(b - a for a, b in itertools.pairwise(self.stamps))


class SourceRows(torch.utils.data.Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return self.source.num_rows

    def __getitem__(self, index):
        return self.source.rows([index])[0]


def common_arguments(steps: int, output_dir: str) -> dict:
    return dict(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=1e-3,
        report_to="none", use_cpu=True, save_strategy="no", logging_steps=10_000, disable_tqdm=True, seed=0,
        remove_unused_columns=False, dataloader_num_workers=0,
    )  # fmt: skip


def plain_trainer_step(data, steps: int, output_dir: str) -> float:
    """Seconds per step of the stock Trainer + ViTForImageClassification on the category task."""
    source = TaskSource(data, ["category"])
    collator = MultiTaskCollator(source.task_specs, ImageTransforms(size=(32, 32), train=True))

    def collate(rows):
        batch = collator(rows)
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]["category"]}

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(**BACKBONE, num_labels=source.task_specs[0].num_outputs))
    timer = StepTimer()
    trainer = Trainer(model=model, args=TrainingArguments(**common_arguments(steps, output_dir)),
                      train_dataset=SourceRows(source), data_collator=collate, callbacks=[timer])  # fmt: skip
    trainer.train()
    return timer.seconds_per_step


def multitask_step(data, tasks, steps: int, output_dir: str, weighting: str = "equal") -> float:
    source = TaskSource(data, tasks, name="shop")
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=ViTConfig(**BACKBONE), tasks=source.task_specs))
    timer = StepTimer()
    args = MultiTaskTrainingArguments(**common_arguments(steps, output_dir), weighting=weighting, batch_mode="mixed")
    MultiTaskTrainer(model, args, train_dataset=source, callbacks=[timer]).train()
    return timer.seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (the first 10 are not timed)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per measurement; the fastest counts")
    args = parser.parse_args()
    steps = args.steps + WARMUP
    data = load_shop_dataset(4000, seed=0, missing_rate=0.2)
    out = tempfile.mkdtemp(prefix="mtl-bench-")

    # Interleaved: every repeat runs every configuration once, so slow drifts of the machine
    # touch all of them alike; the fastest run of each counts.
    configurations = {"plain": lambda: plain_trainer_step(data, steps, out)}
    for task in TASKS:
        configurations[f"single_{task}"] = lambda t=task: multitask_step(data, [t], steps, out)
    for name in WEIGHTING_METHODS:
        configurations[f"method_{name}"] = lambda n=name: multitask_step(data, TASKS, steps, out, weighting=n)
    timings = {name: [] for name in configurations}
    for _ in range(args.repeats):
        for name, measure in configurations.items():
            timings[name].append(measure())
    fastest = {name: min(values) for name, values in timings.items()}
    plain = fastest["plain"]
    single = {task: fastest[f"single_{task}"] for task in TASKS}
    methods = {name: fastest[f"method_{name}"] for name in WEIGHTING_METHODS}
    four = methods["equal"]

    rows = [
        ("Trainer+ViTForImageClassification, 1 task", "step s", plain, "baseline", ""),
        ("MultiTaskTrainer, 1 task", "step s", single["category"], f"{plain / single['category']:.3f}",
         "samples/s ratio, target >= 0.97"),
        ("MultiTaskTrainer, 4 tasks (equal weights)", "step s", four, f"{four / single['category']:.3f}",
         "step time vs 1 task, target <= 1.10"),
        ("4 single-task models, one after another", "step s", sum(single.values()),
         f"{four / sum(single.values()):.3f}", "4-task time / 4 runs, target ~ 1/4"),
    ]  # fmt: skip
    for name, seconds in methods.items():
        target = " target <= 1.10" if name == "famo" else ""
        rows.append((f"weighting {name}, 4 tasks", "step s", seconds, f"{seconds / methods['equal']:.3f}",
                     "vs equal" + target))  # fmt: skip

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); batch {BATCH}; {args.steps} timed steps, best of {args.repeats}\n"
    )
    print(f"{'run':<44} {'s/step':>8} {'ratio':>9}  note")
    for name, _, seconds, ratio, note in rows:
        print(f"{name:<44} {seconds:>8.4f} {ratio:>9}  {note}")


if __name__ == "__main__":
    main()
