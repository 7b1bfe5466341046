"""Rows per label against held-out score, from scratch and from a pretrained start: the measurement behind the
rule `mtl-hf init` applies when it chooses between a from-scratch recipe and a pretrained backbone.

    OMP_NUM_THREADS=1 python bench/learning_curve.py            # the published run (bench/results/learning_curve.md)
    python bench/learning_curve.py --quick                      # 1 seed, 2 sizes, a few hundred steps: a test

Each run trains what `mtl-hf init` writes for a table of that size (its epochs rule, batch size, learning rate,
schedule and weight decay; the setting's own architecture) on the first rows of a built-in dataset, and scores
the held-out rows the setting ships (digits: its 20% test split; shop: 1,000 photos drawn after the training
rows). Settings:
- digits: recipes/configs/digits.yaml (1,797 real scans; digit, traits, ink); rows per label = training rows / 10;
- shop: recipes/configs/demo.yaml (drawn product photos at 32 px; category, colour, pattern, tags, size with a
  fifth of each label cell blank); rows per label = the median training rows of a colour (8 labels).

Starts: `scratch` (random weights) and `pretrained`: the same architecture pretrained on builtin:shapes by
recipes/configs/pretrain_shapes.yaml (figures, none of them a downstream task; built once under
<output_dir>/pretrained/, the stand-in for a Hub checkpoint, which cannot be downloaded here). The report gives,
per setting, the task with the most labels and the mean over tasks of the gain over chance (score - chance) /
(1 - chance), per rows-per-label and start, and the smallest rows per label from which the scratch start stays
within CATCH_UP of the pretrained one on the labelled tasks (regression has no labels to count).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from quality import _recipe, architecture_name, pretrained_backbone  # noqa: E402

from mtl_hf.commands import init  # noqa: E402
from mtl_hf.commands.recipe import RecipeParser  # noqa: E402
from mtl_hf.metrics import PRIMARY_METRIC  # noqa: E402

QUICK_ROWS_PER_LABEL = (4, 16)
STARTS = ("scratch", "pretrained")
CATCH_UP = 0.05
"""The scratch start has caught up at a size when its mean gain over chance on the labelled tasks (classification
and multilabel: those rows per label count) is within this of the pretrained start's, there and at every larger
size measured."""
SETTINGS = {
    # name: (recipe, the task whose labels count the rows, labels of that task, share of its cells filled,
    #        the most training rows the setting has, the rows per label measured)
    "digits": ("digits.yaml", "digit", 10, 1.0, 1437, (4, 16, 64, 143)),
    "shop": ("demo.yaml", "colour", 8, 0.8, None, (4, 16, 64, 256, 1024)),
}


def run_values(setting: str, rows_per_label: int, quick: bool) -> dict:
    """The recipe values `mtl-hf init` would write for a table of that many rows, on the setting's data."""
    recipe, _, labels, filled, most, _ = SETTINGS[setting]
    values = _recipe(recipe)
    rows = round(rows_per_label * labels / filled)
    if most is not None:
        rows = min(rows, most)
    if setting == "shop":
        values["dataset_options"] = {**values["dataset_options"], "num_rows": rows}
    else:
        values["max_train_rows"] = rows
    epochs = 2 if quick else init.epochs_for(rows)
    values.update(
        num_train_epochs=epochs,
        per_device_train_batch_size=init.BATCH_SIZE,
        learning_rate=init.SCRATCH_LEARNING_RATE,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.05,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        weighting="equal",
    )
    if quick:
        values["max_eval_rows"] = 128
    return values


def train_once(values: dict, folder: Path) -> dict:
    """Train (or read back) one run; its held-out metrics and chance scores."""
    done = folder / "learning_curve_run.json"
    if done.is_file():
        return json.loads(done.read_text())
    from mtl_hf.commands.train import run

    started = time.perf_counter()
    metrics = run(*RecipeParser().parse_mapping({**values, "output_dir": str(folder)}, where="learning curve"))
    chance = json.loads((folder / "eval_chance_results.json").read_text())
    result = {"metrics": metrics, "chance": chance, "seconds": time.perf_counter() - started}
    done.write_text(json.dumps(result))
    return result


def gains(result: dict, tasks: list[tuple[str, str]]) -> dict[str, float]:
    """Per task, (score - chance) / (1 - chance) on its primary metric (R2's chance is 0, its best 1)."""
    out = {}
    for name, kind in tasks:
        key = f"eval_{name}_{PRIMARY_METRIC[kind]}"
        score, chance = result["metrics"][key], result["chance"][key]
        out[name] = (score - chance) / (1.0 - chance) if chance < 1.0 else 0.0
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 sizes, 2 epochs each (a test)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--seeds", type=int, help="seeds per point (default: 2; 1 with --quick)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-learning-curve"))
    args = parser.parse_args(argv)
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    seeds = args.seeds or (1 if args.quick else 2)
    output_dir = Path(args.output_dir)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"bench/learning_curve.py: {names}, {seeds} seed(s), torch threads {threads}", flush=True)
    started = time.perf_counter()
    sections, catch_up = [], {}
    for name in names:
        rows, sizes = {}, QUICK_ROWS_PER_LABEL if args.quick else SETTINGS[name][-1]
        for rows_per_label in sizes:
            for start in STARTS:
                values = run_values(name, rows_per_label, args.quick)
                if start == "pretrained":
                    config = values.pop("backbone_config")
                    folder = output_dir / "pretrained" / architecture_name(config)
                    values["backbone"] = str(pretrained_backbone(config, folder, args.quick))
                for seed in range(seeds):
                    folder = output_dir / name / f"{rows_per_label}-per-label" / start / f"seed{seed}"
                    result = train_once({**values, "seed": seed}, folder)
                    rows.setdefault((rows_per_label, start), []).append(result)
                    print(f"{name} {rows_per_label}/label {start} seed {seed}: {result['seconds']:.0f} s", flush=True)
        table, caught = report(name, rows, sizes)
        sections.append(table)
        catch_up[name] = caught
        print(table, flush=True)
    summary = "\n".join(
        f"- {name}: the scratch start stays within {CATCH_UP} of the pretrained start's mean gain on the labelled "
        "tasks from "
        + (f"{caught} rows per label on" if caught else "none of the sizes measured (it trails at every one)")
        for name, caught in catch_up.items()
    )
    text = (
        f"# bench/learning_curve.py, {time.strftime('%Y-%m-%d')}\n\n"
        f"`OMP_NUM_THREADS={threads} python bench/learning_curve.py {' '.join(argv or sys.argv[1:])}`; "
        f"{seeds} seed(s) per point (mean +- std); gain = (score - chance) / (1 - chance) on held-out rows.\n\n"
        + "\n".join(sections)
        + f"\n## Where scratch catches up\n\n{summary}\n\n![learning curves](learning_curve.png)\n\n"
        f"Runs already finished under the output folder are read back (their own times are in the tables); this "
        f"invocation took {time.perf_counter() - started:.0f} s.\n"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "learning_curve.md").write_text(text)
    plot(output_dir / "learning_curve.png")
    print(f"\n{summary}\nreport: {output_dir}/learning_curve.md")
    return 0


def report(name: str, rows: dict, sizes) -> tuple[str, int | None]:
    """The setting's table, and the smallest rows per label at which scratch is within CATCH_UP of pretrained."""
    recipe, counted, *_ = SETTINGS[name]
    tasks = [(task, kind) for task, kind in _task_types(next(iter(rows.values()))[0])]
    lines = [
        f"## {name} ({recipe}; rows per label counted on `{counted}`)\n",
        f"| rows per label | start | {counted} score (chance) | mean gain over chance, all tasks | "
        + " | ".join(f"{task} gain" for task, _ in tasks)
        + " | seconds |",
        "|" + "---|" * (5 + len(tasks)),
    ]
    gaps = {}
    for rows_per_label in sizes:
        labelled_gain = {}
        for start in STARTS:
            runs = rows[rows_per_label, start]
            per_task = [gains(run, tasks) for run in runs]
            mean_gain = [statistics.fmean(g.values()) for g in per_task]
            labelled = [task for task, kind in tasks if kind != "regression"]
            labelled_gain[start] = statistics.fmean(g[task] for g in per_task for task in labelled)
            key = f"eval_{counted}_accuracy"
            score = [run["metrics"][key] for run in runs]
            lines.append(
                f"| {rows_per_label} | {start} | {_pm(score)} ({runs[0]['chance'][key]:.3f}) | {_pm(mean_gain)} | "
                + " | ".join(_pm([g[task] for g in per_task]) for task, _ in tasks)
                + f" | {statistics.fmean(run['seconds'] for run in runs):.0f} |"
            )
        gaps[rows_per_label] = labelled_gain["pretrained"] - labelled_gain["scratch"]
        for start in STARTS:
            CURVES.setdefault(name, {}).setdefault(start, []).append((rows_per_label, labelled_gain[start]))
    lines.append(
        "\nMean gain over the labelled tasks, pretrained minus scratch: "
        + ", ".join(f"{size} per label {gap:+.3f}" for size, gap in gaps.items())
    )
    caught = next((size for size in sizes if all(gaps[s] <= CATCH_UP for s in sizes if s >= size)), None)
    return "\n".join(lines) + "\n", caught


CURVES: dict[str, dict[str, list[tuple[int, float]]]] = {}
"""setting -> start -> (rows per label, mean gain over the labelled tasks), filled by `report`."""


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 4), squeeze=False)
    for axis, (name, starts) in zip(axes[0], CURVES.items(), strict=True):
        for start, points in starts.items():
            axis.plot(*zip(*points, strict=True), marker="o", label=f"{start} start")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("training rows per label (log)")
        axis.set_ylabel("gain over chance, mean of the labelled tasks")
        axis.set_title(f"{name}: held-out rows", fontsize=10)
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _task_types(result: dict) -> list[tuple[str, str]]:
    found = []
    for key in result["metrics"]:
        for kind, metric in PRIMARY_METRIC.items():
            suffix = f"_{metric}"
            if key.startswith("eval_") and key.endswith(suffix) and key != f"eval{suffix}":
                found.append((key[len("eval_") : -len(suffix)], kind))
    return found


def _pm(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {spread:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
