"""What one multi-task model is worth against K single-task models: `mtl-hf compare` from a pretrained start and
from scratch, trained to convergence and on a fixed total budget, with tuned baselines.

    OMP_NUM_THREADS=1 python bench/quality.py                          # the published run (see bench/results)
    python bench/quality.py --quick                                    # 1 seed, a few steps: a test (~2 minutes)
    python bench/quality.py --settings digits --starts pretrained --budgets convergence --methods equal,famo

Settings (each from a shipped recipe):
- digits: recipes/configs/digits.yaml as it ships (3 tasks on 1,797 real scans; ViT 32 px, patch 8): at most
  40 epochs (792 steps on the 90% of the training rows that are not validation rows);
- shop-16px: recipes/configs/demo.yaml (5 tasks) on 2,000 photos drawn at 16 px (patch 4), 500 test photos: at
  most 16 epochs (448 steps);
- shop: the same at 32 px (64 tokens), at most 16 epochs; shop+digits: both mixed (8 tasks), at most 12 epochs.

Starts: `scratch` (the recipe's backbone_config, random weights) and `pretrained`: the same architecture
pretrained by recipes/configs/pretrain_shapes.yaml on 30,000 drawn figures (builtin:shapes: which figure, how
many, where, drawn how; none of them a downstream task), built once per architecture under
<output_dir>/pretrained/ and reused. It stands in for a Hub checkpoint, which cannot be downloaded here.

Budgets: `convergence` (every model, each single-task baseline included, stops on its own validation score:
patience 5 evaluations, one every 1/20 of the setting's epochs above, the best checkpoint restored; the cap is
CONVERGENCE_CAP times those epochs, so that the patience rule, not the cap, ends the runs: the report gives the
share that reached it) and `total` (the multi-task model trains the epochs above, each single-task model 1/K of
them). 10% of the training rows are the validation rows; the tables
score the test rows.

Every run goes under --output_dir (default outputs/bench-quality/): run it again and finished runs are read
back, not retrained. Finished runs' results are also kept in --runs_archive (bench/results/quality-runs.jsonl.gz,
committed), restored into the output folder before its comparison trains, so that a run split over several
machines or sessions goes on where the last one stopped; `--archive_only` stores what has finished and trains
nothing. Pretrained runs are restored only beside runs from the same backbone (its sha256, recorded in
<output_dir>/<setting>/pretrained/backbone.json and in the archive): a rebuilt backbone trains them again. The
archive also records the package code that trained each run (the last commit to mtl_hf/ or recipes/), and the
report says how many runs each trained: runs from two versions are two samples, not one run resumed (seen: 21 of
32 shop scratch runs trained again by the package of a day later stopped at another step, the scores moving by up
to 0.075, while single-task runs that stop early repeated to 1e-7). The
report (tables, the pretraining gain, the commands) goes to <output_dir>/quality.md and a plot per setting of
delta_m against compute to <output_dir>/quality-<setting>.png.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl_hf.commands.compare import SINGLE_TASK, compare, markdown_table  # noqa: E402
from mtl_hf.commands.recipe import RecipeParser  # noqa: E402

METHODS = (
    "equal",
    "equal_lr_sweep",
    "static_sweep",
    "uncertainty",
    "log_loss",
    "famo",
    "pcgrad",
    "upgrad",
    "fairgrad",
    "nash_mtl",
)
QUICK_METHODS = ("equal", "equal_lr_sweep")
STARTS = ("scratch", "pretrained")
BUDGETS = ("convergence", "total")
PATIENCE = 5
"""Convergence budget: evaluations without a better validation score before a model stops."""
CONVERGENCE_CAP = 4
"""Convergence budget: the step cap as a multiple of the setting's epochs. At 1x, 40 of 42 multi-task runs of the
2026-12-02 tables ended at the cap while most single-task runs stopped on their own, so "to convergence" held for
one side only; the evaluation interval stays 1/20 of the 1x steps, so the patience rule is the one those used."""
BACKBONE_STAMP = "backbone.json"
"""In <output_dir>/<setting>/pretrained/: the backbone its runs started from, and its sha256."""
REACHED = 0.95
"""Pretraining gain: steps until a model's validation score first reaches this share of the scratch model's best."""


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / "configs" / name).read_text())


def settings(quick: bool) -> dict[str, dict]:
    """Recipe values per setting; `quick` cuts them to a few steps on a few hundred rows."""
    common = {"report_to": "none", "logging_steps": 50, "eval_strategy": "no", "save_strategy": "no"}
    digits = {**_recipe("digits.yaml"), **common}
    shop = {**_recipe("demo.yaml"), **common, "num_train_epochs": 16}
    shop["dataset_options"] = {**shop["dataset_options"], "num_rows": 2000, "eval_rows": 500}
    shop_16 = copy.deepcopy(shop)
    shop_16["dataset_options"]["image_size"] = 16
    shop_16["backbone_config"] = {**shop["backbone_config"], "image_size": 16}
    mixed = {key: value for key, value in shop.items() if key not in ("dataset", "dataset_options", "tasks")}
    mixed["num_train_epochs"] = 12
    mixed["sources"] = [
        {"dataset": "builtin:shop", "name": "shop", "tasks": shop["tasks"], "dataset_options": shop["dataset_options"]},
        {"dataset": "builtin:digits", "name": "digits", "tasks": digits["tasks"]},
    ]
    chosen = {"digits": digits, "shop-16px": shop_16, "shop": shop, "shop+digits": mixed}
    if quick:
        for values in chosen.values():
            values.update(num_train_epochs=2, max_train_rows=160, max_eval_rows=64)
    return chosen


def pretrained_backbone(backbone_config: dict, folder: Path, quick: bool) -> Path:
    """The backbone of `backbone_config`'s architecture pretrained on builtin:shapes, built once into `folder`."""
    if (folder / "model.safetensors").is_file():
        return folder
    from mtl_hf.commands.train import run

    values = _recipe("pretrain_shapes.yaml")
    values.update(
        backbone_config=backbone_config,
        backbone_output_dir=str(folder),
        output_dir=str(folder.with_name(folder.name + "-run")),
        overwrite_output_dir=True,  # a pretraining killed before it saved the backbone starts again
        report_to="none",
    )
    values["dataset_options"] = {**values["dataset_options"], "image_size": backbone_config["image_size"]}
    if quick:
        values["dataset_options"].update(num_rows=256, eval_rows=64)
        values["num_train_epochs"] = 1
    started = time.perf_counter()
    run(*RecipeParser().parse_mapping(values, where="pretraining"))
    print(f"pretrained {folder.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def architecture_name(backbone_config: dict) -> str:
    return f"shapes-vit-{backbone_config['image_size']}px-p{backbone_config['patch_size']}"


def start_values(values: dict, start: str, output_dir: Path, quick: bool) -> dict:
    """The setting's recipe values for `start`: its backbone_config, or the pretrained backbone of that shape."""
    if start == "scratch":
        return values
    config = values["backbone_config"]
    folder = pretrained_backbone(config, output_dir / "pretrained" / architecture_name(config), quick)
    started = {key: value for key, value in values.items() if key != "backbone_config"}
    return {**started, "backbone": str(folder)}


def backbone_fingerprint(backbone: Path) -> str:
    """sha256 of a pretrained backbone's weights."""
    return hashlib.sha256((backbone / "model.safetensors").read_bytes()).hexdigest()


def stamp_start(start_dir: Path, backbone: Path) -> str:
    """Records in `start_dir` which backbone its runs start from, and returns its fingerprint.

    A backbone rebuilt by other code, or on another machine, may have other weights (the same code rebuilds the
    same bytes), so runs from two of them must not share a table: a folder whose runs started from another
    backbone, or from an unrecorded one, is refused."""
    fingerprint = backbone_fingerprint(backbone)
    stamp = start_dir / BACKBONE_STAMP
    recorded = json.loads(stamp.read_text())["sha256"] if stamp.is_file() else None
    if recorded is None and any(start_dir.glob("*/runs/*/seed-*/result.json")):
        raise SystemExit(
            f"bench/quality.py: the runs in {start_dir} have no record of the backbone they started from; "
            f"move {start_dir} aside to train them again from {backbone}"
        )
    if recorded not in (None, fingerprint):
        raise SystemExit(
            f"bench/quality.py: the runs in {start_dir} started from a backbone with sha256 {recorded[:12]}, but "
            f"{backbone} now holds {fingerprint[:12]} (rebuilt?); move {start_dir} aside to train them again from it"
        )
    start_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"backbone": str(backbone), "sha256": fingerprint}) + "\n")
    return fingerprint


def restore_runs(archive: Path, output_dir: Path, prefix: str = "", fingerprint: str | None = None) -> tuple[int, int]:
    """Writes each archived run under `prefix` that started from `fingerprint`'s backbone (None: from scratch)
    into `output_dir` where it is not there yet; returns how many, and how many started from another backbone."""
    if not archive.is_file():
        return 0, 0
    restored = other_start = 0
    with gzip.open(archive, "rt") as lines:
        for line in lines:
            entry = json.loads(line)
            if not entry["run"].startswith(prefix):
                continue
            if entry.get("backbone_sha256") != fingerprint:
                other_start += 1
                continue
            path = output_dir / entry["run"] / "result.json"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(entry["result"], indent=2) + "\n")
                restored += 1
    return restored, other_start


def package_code_version() -> str:
    """The last commit that changed the package or the recipes, with '+changes' where the checkout differs from it:
    what a run was trained by, whichever commits about documents and benchmarks came after."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("log", "-1", "--format=%h", "--abbrev=12", "--", "mtl_hf", "recipes").strip()
        changed = git("status", "--porcelain", "--", "mtl_hf", "recipes").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("+changes" if changed else "")


def archive_runs(output_dir: Path, archive: Path, code: str | None = None) -> int:
    """Stores every finished run's result under `output_dir` (and those already archived) in `archive`; a run
    not archived yet, or trained again since, is recorded as trained by `code` (package_code_version())."""
    entries = {}
    if archive.is_file():
        with gzip.open(archive, "rt") as lines:
            entries = {entry["run"]: entry for entry in map(json.loads, lines)}
    for path in sorted(output_dir.glob("**/runs/*/seed-*/result.json")):
        run = str(path.parent.relative_to(output_dir))
        result = json.loads(path.read_text())
        if run not in entries or entries[run]["result"] != result:
            entries[run] = {"run": run, "result": result, **({"code": code} if code else {})}
        stamp = output_dir.joinpath(*Path(run).parts[:2]) / BACKBONE_STAMP  # <setting>/<start>/
        if stamp.is_file():
            entries[run]["backbone_sha256"] = json.loads(stamp.read_text())["sha256"]
    archive.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same runs give the same bytes, so the committed file changes only when runs do
    with open(archive, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        for run in sorted(entries):
            packed.write((json.dumps(entries[run], sort_keys=True) + "\n").encode())
    return len(entries)


def code_versions(archive: Path, prefix: str) -> str:
    """How many archived runs under `prefix` each package code trained, e.g. 'abc (3 runs), unrecorded (1 run)'."""
    counts: dict[str, int] = {}
    if archive.is_file():
        with gzip.open(archive, "rt") as lines:
            for entry in map(json.loads, lines):
                if entry["run"].startswith(prefix):
                    code = entry.get("code", "unrecorded")
                    counts[code] = counts.get(code, 0) + 1
    shown = [f"{code} ({count} run{'s' if count > 1 else ''})" for code, count in sorted(counts.items())]
    return ", ".join(shown) or "no runs"


# -- the report ------------------------------------------------------------------------------------


def overview(results: dict[tuple[str, str], dict]) -> str:
    """delta_m (mean +- std over seeds) and time against the single-task models, per method and (start, budget)."""
    columns = list(results)
    methods = [name for name in next(iter(results.values()))["summary"] if name != SINGLE_TASK]
    header = ["method", *(f"{start}, {budget}" for start, budget in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [method]
        for column in columns:
            row = results[column]["summary"].get(method)
            if row is None:
                cells.append("not run")
                continue
            delta = row["delta_m"]
            shown = "n/a" if math.isnan(delta["mean"]) else f"{delta['mean']:+.2f} +- {delta['std']:.2f}"
            cells.append(f"{shown} ({row['time_vs_single_task']:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_to_reach(curve: list, target: float) -> float:
    """The first step whose validation score reaches `target` (NaN where none does)."""
    return next((step for step, score in curve if score >= target), math.nan)


def pretraining_gain(scratch: dict, pretrained: dict) -> str:
    """Per model (each single-task baseline, the equal-weights multi-task model): steps to its best validation
    score, and steps until it first reaches REACHED of the scratch model's best, from each start."""
    lines = [
        "| model | start | best validation score | steps to best | steps to reach "
        f"{REACHED:.0%} of scratch's best | seconds to reach it |",
        "|---|---|---|---|---|---|",
    ]
    names = [run["run"] for run in scratch["runs"] if run["seed"] == scratch["runs"][0]["seed"]]
    models = [name for name in names if name.startswith("single-")] + ["multi-equal"]
    for name in models:
        scratch_runs = _runs_named(scratch, name)
        pretrained_runs = _runs_named(pretrained, name)
        if not scratch_runs or not pretrained_runs:
            continue
        for start, runs in (("scratch", scratch_runs), ("pretrained", pretrained_runs)):
            best, steps, reach, seconds = [], [], [], []
            for run in runs:
                reference = next(r for r in scratch_runs if r["seed"] == run["seed"])
                best_of_scratch = max(score for _, score in reference["validation_curve"])
                target = best_of_scratch - (1 - REACHED) * abs(best_of_scratch)
                best.append(max(score for _, score in run["validation_curve"]))
                steps.append(run["best_step"])
                reached = steps_to_reach(run["validation_curve"], target)
                reach.append(reached)
                seconds.append(reached * run["train_seconds"] / max(run["steps"], 1))
            lines.append(
                f"| {name} | {start} | {_pm(best, 3)} | {_pm(steps, 0)} | {_pm(reach, 0)} | {_pm(seconds, 1)} |"
            )
    return "\n".join(lines)


def _runs_named(comparison: dict, name: str) -> list[dict]:
    return [run for run in comparison["runs"] if run["run"] == name and run.get("validation_curve")]


def _pm(values: list[float], digits: int) -> str:
    if any(math.isnan(value) for value in values):
        reached = sum(not math.isnan(value) for value in values)
        return f"not reached ({len(values) - reached} of {len(values)} seeds)"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} +- {spread:.{digits}f}"


def plot_setting(name: str, results: dict[tuple[str, str], dict], path: Path) -> None:
    """delta_m against compute (training time as a share of the K single-task models'), per (start, budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 6))
    markers = {"scratch": "o", "pretrained": "s"}
    colours = {"convergence": "tab:blue", "total": "tab:orange"}
    for (start, budget), comparison in results.items():
        for method, row in comparison["summary"].items():
            if method == SINGLE_TASK:
                continue
            delta, ratio = row["delta_m"], row["time_vs_single_task"]
            axis.errorbar(
                ratio, delta["mean"], yerr=delta["std"], fmt=markers[start], color=colours[budget], capsize=2, ms=5
            )
            axis.annotate(method, (ratio, delta["mean"]), textcoords="offset points", xytext=(4, 3), fontsize=6)
    for start, marker in markers.items():
        axis.plot([], [], marker, color="grey", label=f"{start} start")
    for budget, colour in colours.items():
        axis.plot([], [], "s", color=colour, label=f"budget {budget}")
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.axhspan(-1.0, 1.0, color="green", alpha=0.08, label="within 1% of the single-task models")
    axis.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("training time, as a share of the K single-task models' (log)")
    axis.set_ylabel("delta_m vs single-task (%), lower is better")
    axis.set_title(f"{name}: one multi-task model against K single-task models", fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 methods, a few steps (a test)")
    parser.add_argument("--settings", default="digits,shop-16px", help="comma-separated (default: %(default)s)")
    parser.add_argument("--starts", default=",".join(STARTS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--methods", help=f"comma-separated (default: {','.join(METHODS)})")
    parser.add_argument(
        "--total_methods", help="comma-separated methods for the total budget alone (default: those of --methods)"
    )
    parser.add_argument("--seeds", type=int, help="seeds per run (default: 3; 1 with --quick)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-quality"))
    parser.add_argument("--runs_archive", default=str(REPO / "bench" / "results" / "quality-runs.jsonl.gz"))
    parser.add_argument("--archive_only", action="store_true", help="archive the finished runs; train nothing")
    args = parser.parse_args(argv)
    archive, output_dir = Path(args.runs_archive), Path(args.output_dir)
    code = package_code_version()  # now: the code this process trains with, whatever is committed meanwhile
    if args.archive_only:  # runs not archived yet are recorded as trained by this checkout's code
        print(f"{archive_runs(output_dir, archive, code)} runs in {archive}")
        return 0

    chosen = settings(args.quick)
    names, starts, budgets = args.settings.split(","), args.starts.split(","), args.budgets.split(",")
    for kind, given, known in (("setting", names, chosen), ("start", starts, STARTS), ("budget", budgets, BUDGETS)):
        unknown = [name for name in given if name not in known]
        if unknown:
            parser.error(f"unknown {kind}(s) {unknown}; choose from {list(known)}")
    methods = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else METHODS)
    total_methods = args.total_methods.split(",") if args.total_methods else methods
    seeds = args.seeds or (1 if args.quick else 3)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"bench/quality.py: settings {names}, starts {starts}, budgets {budgets}, methods {methods} (total budget: "
        f"{total_methods}), {seeds} seed(s); torch threads {threads}; package code {code};"
        f" {time.strftime('%Y-%m-%d %H:%M')}",
        flush=True,
    )
    sections = []
    started = time.perf_counter()
    for name in names:
        results = {}
        for budget in budgets:
            for start in starts:
                values = start_values(chosen[name], start, output_dir, args.quick)
                folder = output_dir / name / start / budget
                fingerprint = None
                if start == "pretrained":
                    fingerprint = stamp_start(output_dir / name / start, Path(values["backbone"]))
                if not args.quick:
                    restored, other_start = restore_runs(archive, output_dir, f"{name}/{start}/{budget}/", fingerprint)
                    print(f"{restored} finished runs restored from {archive} into {folder}", flush=True)
                    if other_start:
                        print(f"{other_start} archived runs started from another backbone: not restored", flush=True)
                evaluations_per_cap = 20
                if budget == "convergence":
                    evaluations_per_cap *= CONVERGENCE_CAP
                    values = {**values, "num_train_epochs": values["num_train_epochs"] * CONVERGENCE_CAP}
                model_args, data_args, training_args = RecipeParser().parse_mapping(
                    {**values, "output_dir": str(folder)}, where=f"setting {name}"
                )
                results[start, budget] = compare(
                    model_args,
                    data_args,
                    training_args,
                    methods=total_methods if budget == "total" else methods,
                    seeds=seeds,
                    budget=budget,
                    output_dir=folder,
                    patience=PATIENCE,
                    evaluations_per_cap=evaluations_per_cap,
                    progress=False,
                )
                sections.append(
                    f"### {name}, {start} start, budget {budget}\n\n{markdown_table(results[start, budget])}\n"
                )
                print(f"\n{sections[-1]}", flush=True)
        sections.append(f"### {name}: delta_m % (time vs the single-task models) at a glance\n\n{overview(results)}\n")
        if ("scratch", "convergence") in results and ("pretrained", "convergence") in results:
            gain = pretraining_gain(results["scratch", "convergence"], results["pretrained", "convergence"])
            sections.append(f"### {name}: what the pretrained start buys (convergence budget)\n\n{gain}\n")
        print(f"\n{sections[-2]}\n{sections[-1]}", flush=True)
        plot_setting(name, results, output_dir / f"quality-{name}.png")
    machine = next(iter(results.values()))["settings"]["machine"] if results else "n/a"
    header = (
        f"# bench/quality.py, {time.strftime('%Y-%m-%d')}\n\n"
        f"`OMP_NUM_THREADS={threads} python bench/quality.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"on {machine}. Seeds: {seeds}. Runs already finished under the output folder were read back, so the "
        "wall time below is this invocation's, not the runs'; each table gives the runs' own times.\n\n"
    )
    if not args.quick:
        archive_runs(output_dir, archive, code)
        trained_by = "; ".join(f"{name}: {code_versions(archive, name + '/')}" for name in names)
        header += f"Runs trained by the package at (last commit to mtl_hf/ or recipes/): {trained_by}.\n\n"
    report = header + "\n".join(sections) + f"\nTotal wall time {time.perf_counter() - started:.0f} s.\n"
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "quality.md").write_text(report)
    print(f"Total wall time {time.perf_counter() - started:.0f} s; tables in {output_dir}/quality.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
