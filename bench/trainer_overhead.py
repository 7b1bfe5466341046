"""What the multi-task machinery costs, measured against its baselines in one run.

    python bench/trainer_overhead.py [--steps 60] [--repeats 3] [--methods equal,famo,upgrad] [--no-vit-base]

Every row trains the same tiny ViT (32 px, patch 4, width 64, 2 layers) on the shop data with
batch 32, mixed batches, and takes the median step time after the first 10 steps. The runs are
interleaved (every repeat runs every configuration once); a time is the median over the repeats,
a ratio the median of the ratios measured within each repeat, so that the machine's drifts
between repeats cancel:
1. plain `Trainer` + `ViTForImageClassification` vs `MultiTaskTrainer` with one task: samples/s ratio;
2. one 4-task model vs one single-task model: step-time ratio;
3. one 4-task model vs 4 single-task models trained one after the other: time ratio (1/K = 0.25);
4. each balancing method's step time relative to equal weights, gradient methods once per
   gradient space (targets: <= 1.3x in representation space, FAMO <= 1.10x).
5. each gradient method's solve on the host alone, in milliseconds, for K = 4 and K = 8 (a fixed
   cost per step, whatever the model's size).
Then (unless `--no-vit-base`): seconds per step and peak memory (RSS of a fresh process) of one training step
of a ViT-Base-sized backbone (86M parameters, from config, 224 px, batch 8, 4 tasks) on the CPU,
for equal weights and a gradient method in both spaces.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.balancing import WEIGHTING_METHODS
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource, load_shop_dataset

BATCH = 32
WARMUP = 10
TASKS = ["category", "colour", "pattern", "tags"]
BACKBONE = dict(
    image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)
VIT_BASE_RUNS = [
    ("equal", "representation"),
    ("pcgrad", "representation"),
    ("pcgrad", "parameters"),
    ("upgrad", "representation"),
    ("upgrad", "parameters"),
    ("nash_mtl", "representation"),
]


class StepTimer(TrainerCallback):
    """The median time between optimizer steps after the warm-up (robust to a stray slow step)."""

    def __init__(self, warmup: int = WARMUP):
        self.warmup = warmup
        self.stamps = []

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.warmup:
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


def common_arguments(steps: int, output_dir: str, batch: int = BATCH) -> dict:
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


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
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**common_arguments(steps, output_dir)),
        train_dataset=SourceRows(source),
        data_collator=collate,
        callbacks=[timer],
    )
    trainer.train()
    return timer.seconds_per_step


def multitask_step(
    data,
    tasks,
    steps: int,
    output_dir: str,
    weighting: str = "equal",
    space="representation",
    options=None,
    backbone=None,
    batch=BATCH,
    warmup=WARMUP,
) -> float:
    source = TaskSource(data, tasks, name="shop")
    torch.manual_seed(0)
    config = ViTConfig(**(backbone or BACKBONE))
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=config, tasks=source.task_specs))
    timer = StepTimer(warmup)
    args = MultiTaskTrainingArguments(
        **common_arguments(steps, output_dir, batch),
        weighting=weighting,
        weighting_options=options,
        gradient_space=space,
        batch_mode="mixed",
    )
    MultiTaskTrainer(model, args, train_dataset=source, callbacks=[timer]).train()
    return timer.seconds_per_step


def vit_base_child(weighting: str, space: str) -> None:
    """One ViT-Base-sized training measurement in this (fresh) process; prints JSON."""
    torch.manual_seed(0)
    data = load_shop_dataset(64, seed=0, missing_rate=0.0, image_size=224)
    backbone = dict(
        image_size=224,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    )
    with tempfile.TemporaryDirectory() as out:
        seconds = multitask_step(data, TASKS, 3, out, weighting, space, backbone=backbone, batch=8, warmup=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"seconds": seconds, "peak_gib": peak}))


def vit_base_rows() -> list[tuple[str, float, float]]:
    rows = []
    for weighting, space in VIT_BASE_RUNS:
        result = subprocess.run(
            [sys.executable, __file__, "--vit-base-child", weighting, space],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"ViT-Base run {weighting} ({space}) failed:\n{result.stderr[-3000:]}")
        values = json.loads(result.stdout.strip().splitlines()[-1])
        label = f"{weighting} ({space})" if WEIGHTING_METHODS[weighting].uses_gradients else weighting
        rows.append((label, values["seconds"], values["peak_gib"]))
    return rows


def solve_milliseconds(name: str, tasks: int, calls: int = 30) -> float:
    """Median time of one `host_weights` call on a random K x K Gramian (the per-step host solve)."""
    generator = torch.Generator().manual_seed(0)
    method = WEIGHTING_METHODS[name]([f"t{i}" for i in range(tasks)])
    present = torch.ones(tasks, dtype=torch.bool)
    times = []
    for _ in range(calls):
        jacobian = torch.randn(tasks, 64, generator=generator, dtype=torch.float64)
        start = time.perf_counter()
        method.host_weights(jacobian @ jacobian.T, present)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def method_runs(names: list[str]) -> dict[str, tuple[str, str, dict | None]]:
    """Label -> (method, gradient space, options) for every row of section 4."""
    runs = {}
    for name in names:
        if WEIGHTING_METHODS[name].uses_gradients:
            for space in ("representation", "parameters"):
                runs[f"{name} ({space})"] = (name, space, None)
        else:
            runs[name] = (name, "representation", None)
        if name == "famo":
            runs["famo (update_every=4)"] = ("famo", "representation", {"update_every": 4})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (the first 10 are not timed)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians are reported)")
    parser.add_argument("--methods", default=",".join(WEIGHTING_METHODS), help="comma-separated methods to time")
    parser.add_argument("--no-vit-base", action="store_true", help="skip the ViT-Base step time and peak memory")
    parser.add_argument("--vit-base-child", nargs=2, metavar=("METHOD", "SPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.vit_base_child:
        vit_base_child(*args.vit_base_child)
        return
    names = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in names if name not in WEIGHTING_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; use some of {', '.join(WEIGHTING_METHODS)}")
    names = ["equal"] + [name for name in names if name != "equal"]
    steps = args.steps + WARMUP
    data = load_shop_dataset(4000, seed=0, missing_rate=0.2)
    out = tempfile.mkdtemp(prefix="mtl-bench-")

    # Interleaved: every repeat runs every configuration once, so slow drifts of the machine touch
    # all of them alike; ratios are taken within a repeat, then their median over the repeats.
    configurations = {"plain": lambda: plain_trainer_step(data, steps, out)}
    for task in TASKS:
        configurations[f"single_{task}"] = lambda t=task: multitask_step(data, [t], steps, out)
    runs = method_runs(names)
    for label, (name, space, options) in runs.items():
        configurations[label] = lambda n=name, s=space, o=options: multitask_step(data, TASKS, steps, out, n, s, o)
    timings = {name: [] for name in configurations}
    for _ in range(args.repeats):
        for name, measure in configurations.items():
            timings[name].append(measure())

    def median(name):
        return statistics.median(timings[name])

    def ratio(numerator, denominator):
        """Median over the repeats of numerator / denominator (each a configuration or a list of them)."""
        parts = lambda names, i: sum(timings[n][i] for n in ([names] if isinstance(names, str) else names))  # noqa: E731
        return statistics.median(parts(numerator, i) / parts(denominator, i) for i in range(args.repeats))

    singles = [f"single_{task}" for task in TASKS]
    rows = [
        ("Trainer+ViTForImageClassification, 1 task", median("plain"), "baseline", ""),
        (
            "MultiTaskTrainer, 1 task",
            median("single_category"),
            f"{ratio('plain', 'single_category'):.3f}",
            "samples/s ratio, target >= 0.97",
        ),
        (
            "MultiTaskTrainer, 4 tasks (equal weights)",
            median("equal"),
            f"{ratio('equal', 'single_category'):.3f}",
            "step time vs 1 task, target <= 1.10",
        ),
        (
            "4 single-task models, one after another",
            sum(median(n) for n in singles),
            f"{ratio('equal', singles):.3f}",
            "4-task time / 4 runs, target ~ 1/4",
        ),
    ]
    for label, (name, space, _) in runs.items():
        if name == "equal":
            continue
        ratio_to_equal = ratio(label, "equal")
        if name == "famo":
            note = f"vs equal, target <= 1.10: {'met' if ratio_to_equal <= 1.10 else 'NOT met'}"
        elif WEIGHTING_METHODS[name].uses_gradients and space == "representation":
            note = f"vs equal, target <= 1.30: {'met' if ratio_to_equal <= 1.30 else 'NOT met'}"
        else:
            note = "vs equal"
        rows.append((f"weighting {label}, 4 tasks", median(label), f"{ratio_to_equal:.3f}", note))

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); batch {BATCH}; {args.steps} timed steps, {args.repeats} repeats\n"
    )
    print(f"| {'run':<52} | {'s/step':>8} | {'ratio':>9} | note |")
    print(f"|{'-' * 54}|{'-' * 10}:|{'-' * 10}:|---|")
    for name, seconds, ratio, note in rows:
        print(f"| {name:<52} | {seconds:>8.4f} | {ratio:>9} | {note} |")

    gradient_methods = [name for name in names if WEIGHTING_METHODS[name].uses_gradients]
    if gradient_methods:
        print("\nThe host solve of each gradient method alone, per step (median of 30 random Gramians):\n")
        print(f"| {'method':<12} | {'K = 4, ms':>9} | {'K = 8, ms':>9} |")
        print(f"|{'-' * 14}|{'-' * 10}:|{'-' * 10}:|")
        for name in gradient_methods:
            print(f"| {name:<12} | {solve_milliseconds(name, 4):>9.2f} | {solve_milliseconds(name, 8):>9.2f} |")

    if not args.no_vit_base:
        base = vit_base_rows()
        equal_seconds, equal_peak = base[0][1], base[0][2]
        print("\nViT-Base-sized backbone (86M parameters, 224 px, batch 8, 4 tasks), one step on the CPU:\n")
        print(f"| {'run':<32} | {'s/step':>8} | {'vs equal':>8} | {'peak RSS GiB':>12} | {'vs equal':>8} |")
        print(f"|{'-' * 34}|{'-' * 10}:|{'-' * 10}:|{'-' * 14}:|{'-' * 10}:|")
        for name, seconds, peak in base:
            print(
                f"| {name:<32} | {seconds:>8.2f} | {seconds / equal_seconds:>8.2f} | {peak:>12.2f} | "
                f"{peak / equal_peak:>8.2f} |"
            )


if __name__ == "__main__":
    main()
