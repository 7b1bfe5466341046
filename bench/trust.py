"""What calibration and the review queue promise, against what they deliver on rows no choice has seen.

    OMP_NUM_THREADS=2 python bench/trust.py                  # the published run (bench/results/trust.md)
    python bench/trust.py --quick                            # a few steps: a test of the script

Two settings, each one model trained as a user would (`mtl-hf train`), calibrated at the end of training on its
evaluation (validation) rows, then scored on separate TEST rows:
- shop: recipes/configs/demo.yaml as it ships (the built-in product photos; 4,000 training, 1,000 validation rows),
  tested on 2,000 photos drawn after them;
- digits-table: scikit-learn's 1,797 scanned digits written as a catalogue table (photos + CSV, split by id
  60 / 20 / 20), which the package did not generate: the same path a shop's own CSV takes;
- digits-80: the same table and recipe, trained on 80 of its training rows for 300 epochs: a model that is right
  on those and sure of itself everywhere (over-confident), the case calibration is for.

Per task: the test score at raw and calibrated scores (equal: calibration moves no argmax), the expected
calibration error on the test rows before and after, and, for each target precision, the review cut chosen on the
validation rows by the bound rule (`mtl-hf predict --review_precision`) and by a plain cut, with the coverage and
precision each reaches on the test rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtl_hf.errors import UserError  # noqa: E402
from mtl_hf.metrics.calibration import expected_calibration_error, scores_at  # noqa: E402
from mtl_hf.metrics.selective import answer_confidence, answer_right, let_through, review_cut  # noqa: E402
from mtl_hf.models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature  # noqa: E402

TARGETS = (0.95, 0.98, 0.99)
RULES = ("bound", "plain")


def digits_table(folder: Path) -> Path:
    """The digits as photos and a CSV (sku, image_path, digit, traits, ink)."""
    from mtl_hf.data import load_digits_dataset
    from mtl_hf.data.builtin.tables import write_catalogue_table

    return write_catalogue_table(load_digits_dataset(), folder, "digits")


def train(recipe: list[str], output: Path) -> None:
    from mtl_hf.commands.main import main as cli

    if (output / "model.safetensors").is_file():
        return
    started = time.perf_counter()
    assert cli(["train", *recipe, "--output_dir", str(output), "--report_to", "none", "--disable_tqdm", "true"]) == 0
    print(f"trained {output.name} in {time.perf_counter() - started:.0f} s", flush=True)


def test_prediction(model_folder: Path, source):
    from mtl_hf.commands.evaluate import predicted
    from mtl_hf.data.backbone_processor import model_image_processor
    from mtl_hf.models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    model = MultiTaskViTModel.from_pretrained(model_folder)
    prediction, _ = predicted(model, model_image_processor(str(model_folder), model.config), source, 256)
    return model.config, prediction


def setting_rows(name: str, config, prediction) -> tuple[list[str], list[str]]:
    """(calibration table rows, review table rows) of one setting."""
    calibration_rows, review_rows = [], []
    for spec in config.task_specs:
        if spec.type == "regression" or spec.name not in prediction.predictions:
            continue
        logits, targets = prediction.predictions[spec.name], prediction.label_ids[spec.name]
        entry = (config.calibration or {}).get(spec.name) or {}
        temperature = task_temperature(config.calibration, spec.name)
        score = prediction.metrics[f"eval_{spec.name}_{'accuracy' if spec.type == 'classification' else 'mAP'}"]
        fitted = entry.get("ece", {})
        calibration_rows.append(
            f"| {name} | {spec.name} | {spec.type} | {entry.get('rows', '-')} | {temperature:.3f} | "
            f"{fitted.get('before', float('nan')):.4f} -> {fitted.get('after', float('nan')):.4f} | "
            f"{len(targets)} | {score:.4f} | {expected_calibration_error(spec, logits, targets):.4f} | "
            f"{expected_calibration_error(spec, logits, targets, temperature):.4f} |"
        )
        if "review" not in entry:
            continue
        scores = scores_at(spec, logits, temperature)
        cuts = label_thresholds(config.calibration, spec.name, spec.labels) if spec.type == "multilabel" else None
        confidence, right = answer_confidence(spec, scores, cuts), answer_right(spec, scores, targets, cuts)
        for target in TARGETS:
            for rule in RULES:
                try:
                    cut = review_cut(entry["review"], target, rule=rule)
                except UserError as error:
                    reason = str(error).split(": ", 1)[1].split(" (observed")[0]
                    review_rows.append(f"| {name} | {spec.name} | {target} | {rule} | not reachable ({reason}) |||||")
                    continue
                coverage, precision = let_through(confidence, right, cut["cut"])
                shown = "- (none let through)" if np.isnan(precision) else f"{precision:.4f}"
                met = "yes" if precision >= target else "**no**"  # NaN (none let through) is not >=
                review_rows.append(
                    f"| {name} | {spec.name} | {target} | {rule} | {cut['cut']:.4f} | {cut['coverage']:.1%} | "
                    f"{coverage:.1%} | {shown} | {met} |"
                )
    return calibration_rows, review_rows


def trained_models(output: Path, quick: bool, *, digits_test_rows: int):
    """Trains (or reads back) `output/shop` (the demo recipe) and `output/digits-table` (the digits recipe on the
    digits written as a table); returns (the shop's test rows, the table's test split, the digits-table recipe).
    `quick`: 20 steps on few rows, and the first `digits_test_rows` test rows."""
    from mtl_hf.data import TaskSource, load_shop_dataset
    from mtl_hf.data.selection import first_rows

    steps = ["--max_steps", "20"] if quick else []
    shop_recipe = [str(REPO / "recipes" / "configs" / "demo.yaml"), *steps]
    if quick:
        shop_recipe += ["--dataset_options", '{"num_rows": 400, "eval_rows": 300}']
    train(shop_recipe, output / "shop")
    start = 400 + 300 if quick else 5000  # after the training and validation rows
    shop_test = TaskSource(
        load_shop_dataset(300 if quick else 2000, start=start, missing_rate=0.0, seed=0),
        ["category", "colour", "pattern", "tags", "size"],
        name="shop_test",
    )
    table = digits_table(output / "digits-data")
    tasks = {"digit": "digit", "traits": {"type": "multilabel"}}
    split = {"train": 0.6, "validation": 0.2, "test": 0.2}
    digits_recipe = [
        str(REPO / "recipes" / "configs" / "digits.yaml"),
        *["--dataset", str(table), "--tasks", json.dumps(tasks)],
        *["--id_column", "sku", "--image_column", "image_path", "--split_fractions", json.dumps(split), *steps],
    ]
    train(digits_recipe, output / "digits-table")
    digits_test = TaskSource(
        table, tasks, image_column="image_path", id_column="sku", split="test", split_fractions=split
    )
    if quick:
        digits_test = first_rows(digits_test, digits_test_rows)
    return shop_test, digits_test, digits_recipe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a few steps, few rows: a test of the script")
    parser.add_argument("--output_dir", default=str(REPO / "outputs" / "bench-trust"))
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    shop_test, digits_test, digits_recipe = trained_models(output, args.quick, digits_test_rows=200)
    few = ["--max_train_rows", "80", "--num_train_epochs", "300", "--learning_rate", "0.003"]
    train([*digits_recipe, *(few if not args.quick else [])], output / "digits-80")

    calibration_rows, review_rows = [], []
    for name, folder, source in (
        ("shop", output / "shop", shop_test),
        ("digits-table", output / "digits-table", digits_test),
        ("digits-80", output / "digits-80", digits_test),
    ):
        config, prediction = test_prediction(folder, source)
        rows = setting_rows(name, config, prediction)
        calibration_rows += rows[0]
        review_rows += rows[1]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    report = "\n".join(
        [
            f"# bench/trust.py, {time.strftime('%Y-%m-%d')}",
            "",
            f"`OMP_NUM_THREADS={threads} python bench/trust.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" ({time.perf_counter() - started:.0f} s this run; models already trained under the output folder are "
            "read back). Each model was calibrated at the end of its training, on its "
            "validation rows; every figure on the right of each table is on TEST rows, which no choice saw.",
            "",
            "## Calibration (expected calibration error, 15 bins; lower is better)",
            "",
            "| setting | task | type | validation rows | temperature | validation ECE (fitted) | test rows | "
            "test score (accuracy / mAP, raw = calibrated) | test ECE raw | test ECE calibrated |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *calibration_rows,
            "",
            "## Review queue: the answers let through at a target precision",
            "",
            "The cut is chosen on the validation rows: `bound` is what `--review_precision` uses (the lowest of 20 "
            "candidate cuts whose 90% Clopper-Pearson lower bound, Bonferroni-corrected, reaches the target); `plain` "
            "the lowest cut whose validation precision reaches it. Coverage: the share of answers let through "
            "(not sent to review). A multilabel answer is right when every label's decision is.",
            "",
            "| setting | task | target precision | rule | cut | validation coverage | test coverage | "
            "test precision | target met on test |",
            "|---|---|---|---|---|---|---|---|---|",
            *review_rows,
            "",
        ]
    )
    (output / "trust.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
