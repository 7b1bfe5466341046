"""Why FAMO trails equal weights on short budgets, and what fixes it: its weights and the tasks' losses, step by
step, for FAMO as published and with each remedy, against equal weights, on the same model and data.

    OMP_NUM_THREADS=1 python bench/famo_analysis.py [--setting digits] [--steps 440] [--seeds 3]

Variants: `equal`; `famo` (the paper's: weights that sum to 1, logits from 0, logits' learning rate 0.025);
`famo lr x4` (0.1: mtl_hf's default since this analysis) and `x10` (0.25); `famo warm start` (logits from
the first losses, so that the first weights are equal); `famo lr x4 + warm start`; `famo scaled` (weights
that sum to K, as equal's do); `famo scaled + warm start`; `famo min_losses` (digits only: m_k half of each
task's final training loss under equal weights).
Each trains the setting's multi-task model for --steps steps (a cosine schedule over them) from scratch and is
scored on the test rows; `mean score` is the mean over tasks of the score relative to chance (1 is perfect,
0 is chance). The plot shows, per variant, each task's weight and loss over the steps (the logs' `weight_<task>`
and `loss_<task>`, every step). Writes <output_dir>/famo_analysis.md and famo_analysis.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from quality import settings  # noqa: E402
from transformers import PrinterCallback, set_seed  # noqa: E402

from mtl_hf import MultiTaskTrainer  # noqa: E402
from mtl_hf.commands.recipe import RecipeParser, build_model, load_data, recipe_task_specs  # noqa: E402
from mtl_hf.data.transforms import ImageTransforms  # noqa: E402
from mtl_hf.metrics import PRIMARY_METRIC  # noqa: E402

PAPER_RATE = 0.025
"""The logits' learning rate of the FAMO paper (mtl_hf's default is 0.1 since this analysis)."""
VARIANTS = {
    "equal": ("equal", {}),
    "famo": ("famo", {"learning_rate": PAPER_RATE}),
    "famo lr x4": ("famo", {"learning_rate": 4 * PAPER_RATE}),
    "famo lr x10": ("famo", {"learning_rate": 10 * PAPER_RATE}),
    "famo lr x4 + warm start": ("famo", {"learning_rate": 4 * PAPER_RATE, "warm_start": True}),
    "famo warm start": ("famo", {"learning_rate": PAPER_RATE, "warm_start": True}),
    "famo scaled": ("famo", {"learning_rate": PAPER_RATE, "scale_to_tasks": True}),
    "famo scaled + warm start": ("famo", {"learning_rate": PAPER_RATE, "scale_to_tasks": True, "warm_start": True}),
    # digits only: half of each task's training loss at the end of the equal-weights run
    "famo min_losses": (
        "famo",
        {"learning_rate": PAPER_RATE, "min_losses": {"digit": 0.25, "traits": 0.12, "ink": 0.017}},
    ),
}


def train_variant(values: dict, variant: str, seed: int, steps: int, folder: Path) -> dict:
    """One variant's run: test scores and the per-step logs of weights and losses."""
    result_path = folder / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    weighting, options = VARIANTS[variant]
    values = {
        **values,
        "output_dir": str(folder),
        "seed": seed,
        "max_steps": steps,
        "weighting": weighting,
        "weighting_options": options,
        "logging_steps": 1,
        "disable_tqdm": True,
    }
    model_args, data_args, training_args = RecipeParser().parse_mapping(values, where=variant)
    train, test = load_data(data_args, seed=0)
    set_seed(seed)
    model, processor = build_model(model_args, recipe_task_specs(train))
    trainer = MultiTaskTrainer(
        model,
        training_args,
        train_dataset=train,
        processing_class=processor,
        image_transforms=ImageTransforms.from_image_processor(processor, train=data_args.augment),
    )
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    metrics = trainer.predict(test, metric_key_prefix="test").metrics
    tasks = list(trainer.task_specs)
    logs = [entry for entry in trainer.state.log_history if any(key.startswith("weight_") for key in entry)]
    result = {
        "variant": variant,
        "seed": seed,
        "seconds": seconds,
        "scores": {task: metrics[f"test_{task}_{PRIMARY_METRIC[trainer.task_specs[task].type]}"] for task in tasks},
        "mean_score": metrics["test_relative_score"],
        "steps": [entry["step"] for entry in logs],
        "weights": {task: [entry.get(f"weight_{task}") for entry in logs] for task in tasks},
        "losses": {task: [entry.get(f"loss_{task}") for entry in logs] for task in tasks},
    }
    folder.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result))
    return result


def table(results: list[dict], tasks: list[str]) -> str:
    lines = [
        "| variant | " + " | ".join(tasks) + " | mean score (relative to chance) | weights' sum, first 10 steps | s |",
        "|---|" + "---|" * (len(tasks) + 3),
    ]
    for variant in VARIANTS:
        runs = [run for run in results if run["variant"] == variant]
        if not runs:
            continue
        cells = [variant]
        for task in tasks:
            cells.append(_pm([run["scores"][task] for run in runs]))
        cells.append(_pm([run["mean_score"] for run in runs]))
        early = [
            sum(run["weights"][task][step] or 0.0 for task in tasks)
            for run in runs
            for step in range(min(10, len(run["steps"])))
        ]
        cells.append(f"{statistics.fmean(early):.2f}")
        cells.append(f"{statistics.fmean(run['seconds'] for run in runs):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pm(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {spread:.3f}"


def plot(results: list[dict], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [variant for variant in VARIANTS if any(run["variant"] == variant for run in results)]
    figure, axes = plt.subplots(2, len(variants), figsize=(3.2 * len(variants), 6), sharex=True, squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for column, variant in enumerate(variants):
        run = next(run for run in results if run["variant"] == variant)  # the first seed
        for index, task in enumerate(tasks):
            axes[0][column].plot(run["steps"], run["weights"][task], color=colours[index], label=task, lw=1)
            axes[1][column].plot(run["steps"], run["losses"][task], color=colours[index], label=task, lw=1)
        axes[0][column].set_title(variant, fontsize=9)
        axes[1][column].set_yscale("log")
        axes[1][column].set_xlabel("optimizer step")
    axes[0][0].set_ylabel("task weight")
    axes[1][0].set_ylabel("task loss (training batches, log)")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("Task weights (top) and losses (bottom) over training, first seed", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--setting", default="digits", help="a bench/quality.py setting (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=440, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", help=f"comma-separated (default: all: {', '.join(VARIANTS)})")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "famo-analysis"))
    args = parser.parse_args(argv)
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    values = settings(quick=False)[args.setting]
    output_dir = Path(args.output_dir) / args.setting
    started = time.perf_counter()
    results = []
    for seed in range(args.seeds):
        for variant in variants:
            folder = output_dir / variant.replace(" ", "_").replace("+", "and") / f"seed-{seed}"
            results.append(train_variant(values, variant, seed, args.steps, folder))
            print(f"{variant} seed {seed}: mean score {results[-1]['mean_score']:.3f}", flush=True)
    tasks = list(results[0]["scores"])
    report = (
        f"`python bench/famo_analysis.py --setting {args.setting} --steps {args.steps} --seeds {args.seeds}`, "
        f"{time.strftime('%Y-%m-%d')}: {args.steps} steps, test rows, mean +- std over {args.seeds} seed(s).\n\n"
        f"{table(results, tasks)}\n\nWall time {time.perf_counter() - started:.0f} s.\n"
    )
    (output_dir / "famo_analysis.md").write_text(report)
    plot(results, tasks, output_dir / "famo_analysis.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
