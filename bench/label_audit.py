"""How many planted label errors `mtl-hf audit` finds: 5% of a catalogue's labels flipped, a model trained on the
noisy catalogue as a shop would train it, then the audit of its training rows.

    OMP_NUM_THREADS=2 python bench/label_audit.py            # the published run (bench/results/label_audit.md)
    python bench/label_audit.py --quick                       # few rows, few steps: a test of the script

Catalogues (each written as photos + a CSV, split by id 80 / 10 / 10):
- shop: 4,000 built-in product photos (category, colour, pattern, tags), recipes/configs/demo.yaml's model;
- digits: scikit-learn's 1,797 scanned digits (digit, traits), recipes/configs/digits.yaml's model: data the
  package did not generate.

A flip: a classification label replaced by another drawn at random; a multilabel row's label set with one label
toggled. Per task: N = the flipped rows among the audited ones; precision and recall of the flipped rows among the
top-N suspects (and among all the suspects cleanlab names).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl_hf.commands.main import main as cli  # noqa: E402

FLIP_SHARE = 0.05
SPLIT = {"train": 0.8, "validation": 0.1, "test": 0.1}


def write_catalogue(folder: Path, name: str, rows: int) -> tuple[Path, dict[str, dict]]:
    """The catalogue's photos and clean CSV; returns the CSV and its audited tasks (task -> type, labels)."""
    from mtl_hf.data import load_digits_dataset, load_shop_dataset
    from mtl_hf.data.builtin.tables import write_catalogue_table

    if name == "shop":
        data = load_shop_dataset(rows, missing_rate=0.0, seed=0)
        columns = {"category": "classification", "colour": "classification", "pattern": "classification",
                   "tags": "multilabel"}  # fmt: skip
    else:
        data = load_digits_dataset().select(range(min(rows, 1797)))
        columns = {"digit": "classification", "traits": "multilabel"}
    tasks = {}
    for task, kind in columns.items():
        feature = data.features[task]
        tasks[task] = {"type": kind, "labels": (feature.feature if kind == "multilabel" else feature).names}
    return write_catalogue_table(data, folder, name), tasks


def flip(table: Path, tasks: dict[str, dict], seed: int = 0) -> tuple[Path, dict[str, set[str]]]:
    """A copy of `table` with FLIP_SHARE of each task's rows flipped; returns it and each task's flipped skus."""
    rng = np.random.default_rng(seed)
    with open(table) as file:
        records = list(csv.DictReader(file))
    flipped = {task: set() for task in tasks}
    for task, spec in tasks.items():
        for index in rng.choice(len(records), int(round(FLIP_SHARE * len(records))), replace=False):
            record = records[index]
            if spec["type"] == "classification":
                others = [label for label in spec["labels"] if label != record[task]]
                record[task] = others[int(rng.integers(len(others)))]
            else:
                given = set(filter(None, record[task].split("|")))
                given ^= {spec["labels"][int(rng.integers(len(spec["labels"])))]}
                record[task] = "|".join(label for label in spec["labels"] if label in given)
            flipped[task].add(record["sku"])
    noisy = table.with_name(table.stem + "-noisy.csv")
    with open(noisy, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return noisy, flipped


def audited(name: str, folder: Path, rows: int, quick: bool) -> list[str]:
    table, tasks = write_catalogue(folder, name, rows)
    noisy, flipped = flip(table, tasks)
    recipe = REPO / "recipes" / "configs" / ("demo.yaml" if name == "shop" else "digits.yaml")
    if quick:  # the recipe as it ships, a few steps long (the fine-tuning audit trains it once per fold)
        import yaml

        values = {**yaml.safe_load(recipe.read_text()), "max_steps": 30}
        recipe = folder / f"quick-{recipe.name}"
        recipe.write_text(yaml.safe_dump(values))
    task_map = {task: {"type": spec["type"]} if spec["type"] == "multilabel" else task for task, spec in tasks.items()}
    flags = ["--image_column", "image_path", "--id_column", "sku"]
    model = folder / "model"
    if not (model / "model.safetensors").is_file():
        started = time.perf_counter()
        code = cli(
            ["train", str(recipe), "--dataset", str(noisy), "--tasks", json.dumps(task_map), *flags]
            + ["--split_fractions", json.dumps(SPLIT), "--output_dir", str(model), "--report_to", "none"]
            + ["--disable_tqdm", "true", "--eval_strategy", "no", "--save_strategy", "no", "--dataset_options", "{}"]
        )
        assert code == 0
        print(f"{name}: trained on the noisy catalogue in {time.perf_counter() - started:.0f} s", flush=True)
    audited_ids = _split_ids(noisy, "train")
    lines = []
    folds = ["--folds", "2"] if quick else []
    methods = {
        "embeddings of the model trained on the noisy labels": (str(model), folder / "audit"),
        "5-fold fine-tuning of the recipe": (str(recipe), folder / "audit-fine-tuned"),
    }
    for method, (audited_by, audit) in methods.items():
        if not (audit / "suspects.csv").is_file():
            started = time.perf_counter()
            task_flags = ["--tasks", json.dumps(task_map)] if audited_by == str(recipe) else []
            assert cli(["audit", audited_by, str(noisy), "--output", str(audit), *flags, *task_flags, *folds]) == 0
            print(f"{name}: audited by {method} in {time.perf_counter() - started:.0f} s", flush=True)
        summary = json.loads((audit / "audit.json").read_text())
        with open(audit / "suspects.csv") as file:
            suspects = list(csv.DictReader(file))
        for task, spec in tasks.items():
            planted = flipped[task] & audited_ids
            ranked = [row["id"] for row in suspects if row["task"] == task]
            top = ranked[: len(planted)]
            found_top, found_all = len(set(top) & planted), len(set(ranked) & planted)
            lines.append(
                f"| {name} | {task} | {spec['type']} | {method} | {summary['tasks'][task]['labelled_rows']} | "
                f"{len(planted)} | {found_top / max(len(top), 1):.2f} | {found_top / max(len(planted), 1):.2f} | "
                f"{len(ranked)} | {found_all / max(len(ranked), 1):.2f} | {found_all / max(len(planted), 1):.2f} |"
            )
    return lines


def _split_ids(table: Path, split: str) -> set[str]:
    from mtl_hf.data.locations import TableOptions, load_rows

    options = TableOptions(key_column="sku", fractions=SPLIT)
    return set(load_rows(str(table), split=split, streaming=False, table=options).dataset["sku"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="few rows, few steps: a test of the script")
    parser.add_argument("--catalogues", default="shop,digits", help="comma-separated (default: %(default)s)")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-label-audit"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = {"shop": 400 if args.quick else 4000, "digits": 400 if args.quick else 1797}
    lines = []
    for name in args.catalogues.split(","):
        lines += audited(name, Path(args.output_dir) / name, rows[name], args.quick)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    command = f"python bench/label_audit.py {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    report = "\n".join(
        [
            f"# bench/label_audit.py, {time.strftime('%Y-%m-%d')}",
            "",
            f"`OMP_NUM_THREADS={threads} {command}` ({time.perf_counter() - started:.0f} s). "
            f"{FLIP_SHARE:.0%} of each task's labels flipped; a model trained"
            " on the noisy catalogue's training split (the recipe as it ships), then `mtl-hf audit` of that split: "
            "5-fold logistic heads on the model's frozen embeddings, cleanlab's find_label_issues.",
            "",
            "| catalogue | task | type | out-of-sample probabilities from | audited rows | flipped among them (N) | "
            "precision in top N | recall in top N | suspects named | precision of all named | recall of all named |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "label_audit.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
