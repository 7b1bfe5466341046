"""`mtl-hf calibrate MODEL DATA`: a saved model's confidences calibrated on labelled rows it did not train on.

Per classification or multilabel task the data labels, a temperature (the logits' divisor that makes softmax /
sigmoid scores mean what they say) and, per multilabel label, the threshold with the best F1 (or the lowest that
reaches `--target_precision`), stored in the model's config.json, with ECE before and after, a reliability diagram
(calibration.png) and the card's calibration section. Every way the model answers reads them: the pipeline (and so
the remote code and handler.py), `predict`, `serve` and an ONNX export made afterwards.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .evaluate import add_data_arguments
from .model_loading import add_pickled_weights_flag

SUMMARY = "fit each task's temperature and thresholds on held-out rows, stored with the model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder (its config.json is rewritten)")
    add_data_arguments(parser)
    parser.add_argument(
        "--target_precision",
        type=float,
        help="choose each multilabel label's threshold as the lowest that reaches this precision on the rows "
        "(default: the threshold with the best F1)",
    )
    parser.add_argument(
        "--no_thresholds", action="store_true", help="fit the temperatures only; multilabel labels keep 0.5"
    )
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate import model_to_score, predicted, rows_to_score

    if args.target_precision is not None and not 0.0 < args.target_precision < 1.0:
        raise UserError(f"--target_precision {args.target_precision}: a precision is a share in (0, 1), e.g. 0.95")
    if args.target_precision is not None and args.no_thresholds:
        raise UserError("--target_precision chooses thresholds, --no_thresholds keeps 0.5: give one")
    # Fitting on rows the model trained on would fit its over-confidence there: refused, or left out.
    scored = rows_to_score(args)
    folder, config, source = Path(scored.location), scored.config, scored.source
    if not folder.is_dir():
        raise UserError(f"{args.model}: calibrate writes into the model's folder; download it first (hf download)")
    answerable = [spec.name for spec in config.task_specs if spec.type != "regression"]
    if not answerable:
        raise UserError(f"{args.model} has regression tasks only: there are no confidences to calibrate")
    model, processor = model_to_score(args, scored)
    from ..hub.card import calibration_section, with_calibration_section
    from ..metrics.calibration import calibration_table
    from ..metrics.reliability import DIAGRAM_FILE, plot_reliability
    from ..training.calibration_update import update_calibration

    prediction, _ = predicted(model, processor, source, args.batch_size)
    where = f"{args.data} split {args.split} ({prediction.metrics.get('eval_rows_scored', source.num_rows)} rows)"
    fitted, left = update_calibration(
        model,
        prediction.predictions,
        prediction.label_ids,
        where,
        thresholds=not args.no_thresholds,
        target_precision=args.target_precision,
    )
    unreached = {
        f"{task.task}:{label}": why
        for task in fitted
        for label, why in task.unthresholded.items()
        if "precision" in why
    }
    if unreached:
        raise UserError(
            f"--target_precision {args.target_precision} is reached by no threshold for "
            + "; ".join(f"{label} ({why})" for label, why in unreached.items())
            + ": ask a lower precision, or calibrate without it (best F1); nothing was written"
        )
    for task in scored.unscored:
        left[task] = left[task].replace("no labels in these rows", "no column in the data (map it with --tasks)")
    print(calibration_table(fitted, {t: w for t, w in left.items() if t in answerable}, where))
    if scored.left_out:
        print(f"{scored.left_out} rows the model was trained on left out (--skip_training_rows)")
    if not fitted:
        raise UserError(f"no task of {args.model} could be calibrated on these rows (above: why); nothing was written")
    model.save_pretrained(folder)  # config.json, and the remote code that applies it
    temperatures = {task.task: task.temperature for task in fitted}
    diagram = plot_reliability(
        model.config.task_specs,
        prediction.predictions,
        prediction.label_ids,
        temperatures,
        folder / DIAGRAM_FILE,
        title=f"reliability on {where}, the rows the temperatures were fitted on",
    )
    card = folder / "README.md"
    if card.is_file():
        section = calibration_section(model.config, DIAGRAM_FILE if diagram else None)
        card.write_text(with_calibration_section(card.read_text(), section))
    print(f"calibration written to {folder}/config.json{' and ' + DIAGRAM_FILE if diagram else ''}")
    return 0


__all__ = ["SUMMARY", "add_arguments", "run"]
