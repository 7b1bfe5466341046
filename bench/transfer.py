"""What a multi-task backbone is worth to the next task: a task held out of training, learnt afterwards from N labelled
rows, starting from nothing, from the offline pretrained backbone, from a single-task model and from the multi-task
model, in each way `mtl-hf add-task` offers (heads, lora, full).

    OMP_NUM_THREADS=2 python bench/transfer.py          # the published run (bench/results/transfer.md)
    python bench/transfer.py --quick                    # 1 seed, N = 25 and 100, a few steps: a test

Settings (recipes/configs/demo.yaml and digits.yaml, their architectures and learning rates):
- shop: the held-out task is `pattern` (4 classes). The multi-task model learns category, colour, tags and size on
  the 4,000 training photos of builtin:shop (20 epochs, as the demo); the single-task model learns category alone
  on the same photos and steps. The new task's rows are photos none of them saw (builtin:shop drawn with another
  seed): N for training, 1,000 others for scoring, every one labelled.
- digits: the held-out task is `digit` (10 classes); the multi-task model learns traits and ink, the single-task
  model traits alone, on the training split's scans (their labels of `digit` unused); the new task is then
  learnt from N of those scans with their digit and scored on the test split. With two old tasks only, it
  measures the same question on real scans.

Starts: `nothing` (a from-scratch model of the same architecture, all of it trained), `pretrained` (the
architecture pretrained on builtin:shapes, as bench/learning_curve.py builds it: heads = linear probe,
lora = peft LoRA of rank 8, full = fine-tuning), `single` and `multi` (`add_tasks_to:` the trained model). Every
run trains RUN_STEPS steps of batch 32 (so that N = 25 and N = 1,600 see the same number of updates) at one set
of learning rates for every start (heads and lora 3e-3; full 3e-4 for the backbone, 3e-3 for the heads; from
scratch the demo's 2e-3), tuned for none. Reported: the new task's held-out accuracy (mean +- std over seeds) per
N, the fewest labelled rows measured with which a start reaches 90% of the task's full-data score (the best mean
accuracy any start reaches at N = 1,600), and the old tasks' change of score per mode (the add-task gate's own
measurement, on the old tasks' held-out rows).
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

from mtl_hf.commands.recipe import RecipeParser  # noqa: E402

SIZES, QUICK_SIZES = (25, 100, 400, 1600), (25, 100)
RUN_STEPS, QUICK_STEPS = 400, 20
NEW_TASK_SEED = 7  # the shop photos of the new task: drawn with another seed than the models' training photos
SETTINGS = {
    # name: (recipe, the held-out task, the multi-task model's tasks, the single-task model's task)
    "shop": ("demo.yaml", "pattern", ["category", "colour", "tags", "size"], ["category"]),
    "digits": ("digits.yaml", "digit", ["traits", "ink"], ["traits"]),
}
ARMS = [("nothing", "full")] + [
    (start, mode) for start in ("pretrained", "single", "multi") for mode in ("heads", "lora", "full")
]
RATES = {
    "heads": {"learning_rate": 3e-3},
    "lora": {"learning_rate": 3e-3},
    "full": {"learning_rate": 3e-4, "head_learning_rate": 3e-3},
}


def base_values(setting: str) -> dict:
    values = _recipe(SETTINGS[setting][0])
    values.update(
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=50,
        use_cpu=True,
        weighting="equal",
    )
    values.pop("save_total_limit", None)
    return values


def trained_once(values: dict, folder: Path) -> dict:
    """Train (or read back) one recipe run into `folder`; its evaluation metrics and seconds."""
    done = folder.with_name(folder.name + ".json")
    if done.is_file():
        return json.loads(done.read_text())
    from mtl_hf.commands.train import run

    started = time.perf_counter()
    metrics = run(*RecipeParser().parse_mapping({**values, "output_dir": str(folder)}, where="transfer"))
    result = {"metrics": metrics, "seconds": time.perf_counter() - started}
    gate = folder / "added_tasks.json"
    if gate.is_file():
        result["old_tasks"] = json.loads(gate.read_text()).get("scores", [])
    done.write_text(json.dumps(result))
    return result


def old_models(setting: str, output_dir: Path, quick: bool) -> dict[str, Path]:
    """The single-task and multi-task models the new task is added to, trained once."""
    _, held_out, multi, single = SETTINGS[setting]
    models = {}
    for start, tasks in (("single", single), ("multi", multi)):
        values = base_values(setting)
        values["tasks"] = (
            {task: values["tasks"][task] for task in tasks} if isinstance(values["tasks"], dict) else tasks
        )
        if quick:
            values.update(max_steps=QUICK_STEPS, max_eval_rows=64)
            if setting == "shop":
                values["dataset_options"] = {**values["dataset_options"], "num_rows": 256, "eval_rows": 64}
        folder = output_dir / setting / f"{start}-task-model"
        trained_once(values, folder)
        models[start] = folder
    return models


def new_task_data(setting: str, output_dir: Path, quick: bool) -> dict:
    """The recipe's data keys for the held-out task's rows (training and scored)."""
    _, held_out, *_ = SETTINGS[setting]
    if setting == "digits":
        return {"dataset": "builtin:digits", "tasks": [held_out]}
    folder = output_dir / "shop-new-task-data"
    if not (folder / "dataset_dict.json").is_file():
        from datasets import DatasetDict

        from mtl_hf.data import load_shop_dataset

        pool, scored = (100, 64) if quick else (max(SIZES), 1000)
        train = load_shop_dataset(pool, seed=NEW_TASK_SEED, missing_rate=0.0, image_size=32)
        test = load_shop_dataset(scored, start=pool, seed=NEW_TASK_SEED, missing_rate=0.0, image_size=32)
        DatasetDict(
            train=train.select_columns(["image", held_out]), validation=test.select_columns(["image", held_out])
        ).save_to_disk(str(folder))
    return {"dataset": str(folder), "tasks": [held_out], "eval_split": "validation"}


def arm_values(
    setting: str, start: str, mode: str, models: dict, pretrained: Path | None, data: dict, rows: int, quick: bool
) -> dict:
    values = base_values(setting)
    for key in ("dataset", "dataset_options", "tasks", "backbone_config", "eval_split"):
        values.pop(key, None)
    values.update(
        data, max_train_rows=rows, max_steps=QUICK_STEPS if quick else RUN_STEPS, per_device_train_batch_size=32
    )
    values.pop("num_train_epochs", None)
    if quick:
        values["max_eval_rows"] = 64
    if start == "nothing":
        values["backbone_config"] = base_values(setting)["backbone_config"]
    elif start == "pretrained":
        values.update(RATES[mode], backbone=str(pretrained))
        if mode == "heads":
            values["freeze_backbone"] = True
        elif mode == "lora":
            values["lora_rank"] = 8
    else:
        values.update(RATES[mode], add_tasks_to=str(models[start]), add_task_mode=mode)
        values["old_data"] = "builtin:shop" if setting == "shop" else "builtin:digits"
        if setting == "shop":
            values["old_split"] = "validation"
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="1 seed, N = 25 and 100, a few steps (a test)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--seeds", type=int, help="seeds per point (default 3; 1 with --quick)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-transfer"))
    parser.add_argument(
        "--pretrained_dir",
        default=str(REPO / "outputs" / "bench-learning-curve" / "pretrained"),
        help="where the shapes-pretrained backbones are (built there once, shared with bench/learning_curve.py)",
    )
    args = parser.parse_args(argv)
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    seeds, sizes = args.seeds or (1 if args.quick else 3), QUICK_SIZES if args.quick else SIZES
    output_dir = Path(args.output_dir)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"bench/transfer.py: {names}, {seeds} seed(s), N = {sizes}, torch threads {threads}", flush=True)
    started = time.perf_counter()
    sections = []
    for setting in names:
        config = base_values(setting)["backbone_config"]
        pretrained = pretrained_backbone(config, Path(args.pretrained_dir) / architecture_name(config), args.quick)
        models = old_models(setting, output_dir, args.quick)
        data = new_task_data(setting, output_dir, args.quick)
        results: dict[tuple[str, str, int], list[dict]] = {}
        for rows in sizes:
            for start, mode in ARMS:
                for seed in range(seeds):
                    values = {
                        **arm_values(setting, start, mode, models, pretrained, data, rows, args.quick),
                        "seed": seed,
                    }
                    folder = output_dir / setting / f"{rows}-rows" / f"{start}-{mode}" / f"seed{seed}"
                    result = trained_once(values, folder)
                    results.setdefault((start, mode, rows), []).append(result)
                    print(f"{setting} N={rows} {start}/{mode} seed {seed}: {result['seconds']:.0f} s", flush=True)
        section = report(setting, results, sizes)
        print(section, flush=True)
        sections.append(section)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    steps = QUICK_STEPS if args.quick else RUN_STEPS
    text = (
        f"# bench/transfer.py, {time.strftime('%Y-%m-%d')}\n\n"
        f"`OMP_NUM_THREADS={threads} python bench/transfer.py {command}`; {seeds} seed(s) per point (mean +- std); "
        f"every run {steps} steps of batch 32.\n\n"
        + "\n".join(sections)
        + "\n![transfer](transfer.png)\n\nRuns already finished under the output folder are read back; this "
        f"invocation took {time.perf_counter() - started:.0f} s.\n"
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "transfer.md").write_text(text)
    plot(output_dir / "transfer.png")
    print(f"report: {output_dir}/transfer.md")
    return 0


CURVES: dict[str, dict[str, list[tuple[int, float]]]] = {}


def report(setting: str, results: dict, sizes) -> str:
    """The setting's table: accuracy per N, rows to 90% of the task's full-data score, the old tasks' change."""
    task = SETTINGS[setting][1]
    key = f"eval_{task}_accuracy"
    means = {
        arm: [statistics.fmean(run["metrics"][key] for run in results[(*arm, rows)]) for rows in sizes] for arm in ARMS
    }
    full_data = max(values[-1] for values in means.values())  # the best any start reaches with the most rows
    target = 0.9 * full_data
    lines = [
        f"## {setting}: `{task}` held out, learnt afterwards\n",
        f"The task's full-data score: {full_data:.3f}, the best mean accuracy at N = {sizes[-1]}; 90% of it: "
        f"{target:.3f}.\n",
        "| start | mode | "
        + " | ".join(f"N = {rows}" for rows in sizes)
        + " | rows to reach 90% of the full-data score"
        " | old tasks' change (mean over N and seeds; worst run) | seconds per run |",
        "|" + "---|" * (len(sizes) + 5),
    ]
    for start, mode in ARMS:
        cells = [_pm([run["metrics"][key] for run in results[start, mode, rows]]) for rows in sizes]
        enough = next((rows for rows, mean in zip(sizes, means[start, mode], strict=True) if mean >= target), None)
        change = (
            "n/a (no old tasks)"
            if start in ("nothing", "pretrained")
            else _old_task_change(results, start, mode, sizes)
        )
        seconds = statistics.fmean(run["seconds"] for rows in sizes for run in results[start, mode, rows])
        reached = f"{enough}" if enough else f"not within {sizes[-1]}"
        lines.append(f"| {start} | {mode} | " + " | ".join(cells) + f" | {reached} | {change} | {seconds:.0f} |")
        CURVES.setdefault(setting, {})[f"{start}/{mode}"] = list(zip(sizes, means[start, mode], strict=True))
    return "\n".join(lines) + "\n"


def _old_task_change(results: dict, start: str, mode: str, sizes) -> str:
    per_task: dict[str, list[float]] = {}
    for rows in sizes:
        for run in results[start, mode, rows]:
            for row in run.get("old_tasks", []):
                per_task.setdefault(f"{row['task']} ({row['metric']})", []).append(row["after"] - row["before"])
    return "; ".join(
        f"{task} {statistics.fmean(values):+.3f} (worst {min(values):+.3f})" for task, values in per_task.items()
    )


def _pm(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} +- {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.5), squeeze=False)
    for axis, (setting, arms) in zip(axes[0], CURVES.items(), strict=True):
        for label, points in arms.items():
            style = {"heads": ":", "lora": "--", "full": "-"}[label.split("/")[1]]
            axis.plot(*zip(*points, strict=True), style, marker="o", label=label)
        axis.set_xscale("log")
        axis.set_xlabel("labelled rows of the new task")
        axis.set_ylabel(f"held-out accuracy of {SETTINGS[setting][1]}")
        axis.set_title(setting)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
