"""Does multi-task learning help on the built-in data, and which balancing method? `mtl-hf compare` on four settings.

    OMP_NUM_THREADS=2 python bench/quality.py                  # every method, 3 seeds: about an hour on 2 cores
    python bench/quality.py --quick                            # 1 seed, 2 methods, a few steps: under 3 minutes
    python bench/quality.py --settings digits --methods equal,famo --seeds 2

Settings (each from a shipped recipe, shortened so that the whole benchmark fits about an hour):
- digits: recipes/configs/digits.yaml (3 tasks on 1,797 real scans), 8 epochs instead of 40 (176 steps);
- shop: recipes/configs/demo.yaml (5 tasks), 2,000 training / 500 evaluation photos, 4 epochs
  instead of 20 on 4,000 (124 steps);
- shop-16px: the same photos drawn at 16 px (patch 4: 16 tokens), where the few-pixel badges and
  patterns blur, so the tasks are not all solved and methods have room to differ;
- shop+digits: both datasets mixed (two sources, disjoint tasks: 8 in all), as `shop` and `digits`,
  3 epochs of the mixture (159 steps).

The schedules are a fraction of the recipes' so that 267 models (every method of the package and
the single-task baselines, 4 settings, 3 seeds) train in about an hour on 2 CPU cores; no task is
trained to convergence, so the figures compare methods at a small, equal budget.

Every run goes under --output_dir (default outputs/bench-quality/<setting>/): run it again and
finished runs are read back, not retrained. The tables are printed and written to
<output_dir>/quality.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl_hf.balancing import WEIGHTING_METHODS  # noqa: E402
from mtl_hf.commands.compare import compare, markdown_table  # noqa: E402
from mtl_hf.commands.recipe import RecipeParser  # noqa: E402

QUICK_METHODS = ("equal", "upgrad")


def _recipe(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / "configs" / name).read_text())


def settings(quick: bool) -> dict[str, dict]:
    """Recipe values per setting; `quick` cuts them to a few steps on a few hundred rows."""
    common = {"report_to": "none", "logging_steps": 50, "eval_strategy": "no", "save_strategy": "no"}
    digits = {**_recipe("digits.yaml"), **common, "num_train_epochs": 8}
    shop = {**_recipe("demo.yaml"), **common, "num_train_epochs": 4}
    shop["dataset_options"] = {**shop["dataset_options"], "num_rows": 2000, "eval_rows": 500}
    shop_16 = copy.deepcopy(shop)
    shop_16["dataset_options"]["image_size"] = 16
    shop_16["backbone_config"] = {**shop["backbone_config"], "image_size": 16}
    mixed = {key: value for key, value in shop.items() if key not in ("dataset", "dataset_options", "tasks")}
    mixed["num_train_epochs"] = 3
    mixed["sources"] = [
        {"dataset": "builtin:shop", "name": "shop", "tasks": shop["tasks"], "dataset_options": shop["dataset_options"]},
        {"dataset": "builtin:digits", "name": "digits", "tasks": digits["tasks"]},
    ]
    chosen = {"digits": digits, "shop": shop, "shop-16px": shop_16, "shop+digits": mixed}
    if quick:
        for values in chosen.values():
            values.update(num_train_epochs=1, max_train_rows=128, max_eval_rows=64)
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="1 seed, equal and upgrad, a few steps (a test)")
    parser.add_argument("--settings", help="comma-separated settings (default: all four)")
    parser.add_argument("--methods", help="comma-separated methods (default: every method of the package)")
    parser.add_argument("--seeds", type=int, help="seeds per run (default: 3; 1 with --quick)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-quality"))
    args = parser.parse_args(argv)

    chosen = settings(args.quick)
    names = args.settings.split(",") if args.settings else list(chosen)
    unknown = [name for name in names if name not in chosen]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; settings are {list(chosen)}")
    methods = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else WEIGHTING_METHODS)
    seeds = args.seeds or (1 if args.quick else 3)

    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"bench/quality.py: settings {names}, methods {methods}, {seeds} seed(s); "
        f"torch threads {threads}; {time.strftime('%Y-%m-%d %H:%M')}"
    )
    sections = []
    started = time.perf_counter()
    for name in names:
        values = {**chosen[name], "output_dir": str(Path(args.output_dir) / name)}
        model_args, data_args, training_args = RecipeParser().parse_mapping(values, where=f"setting {name}")
        comparison = compare(
            model_args, data_args, training_args, methods=methods, seeds=seeds, output_dir=training_args.output_dir
        )
        sections.append(f"### {name}\n\n{markdown_table(comparison)}\n")
        print(f"\n{sections[-1]}", flush=True)
    report = "\n".join(sections) + f"\nTotal wall time {time.perf_counter() - started:.0f} s.\n"
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "quality.md").write_text(report)
    print(f"Total wall time {time.perf_counter() - started:.0f} s; tables in {args.output_dir}/quality.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
