"""`mtl-hf report MODEL DATA --output report.html`: what a model gets right and wrong on labelled rows, as one
static HTML page (pictures embedded; opens from disk, no server).

Per task: its score against chance; the confusion matrix (classification), precision against recall per label
(multilabel) or predicted against true (regression); the reliability diagram; what the review queue would let
through at 90-99% precision (cuts from the model's validation record, coverage and precision measured on these
rows); and the photos it got wrong most confidently, with the given and the answered labels. Rows the model
trained on are refused, or shown under a TRAINING-SET banner (`--allow_training_rows`), as `eval` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import UserError
from .evaluate import add_data_arguments
from .model_loading import add_pickled_weights_flag

SUMMARY = "one HTML page of each task's scores, confusions, calibration, review coverage and worst mistakes"
REVIEW_TARGETS = (0.9, 0.95, 0.98, 0.99)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    add_data_arguments(parser, split="test")
    parser.add_argument("--output", required=True, help="the HTML file to write (e.g. report.html)")
    parser.add_argument(
        "--allow_training_rows",
        action="store_true",
        help="report on rows the model was trained on (refused without it), under a TRAINING-SET banner",
    )
    parser.add_argument("--mistakes", type=int, default=8, help="photos in each task's gallery of mistakes (default 8)")
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate import model_to_score, rows_to_score

    output = Path(args.output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--output {output}: the report is one HTML file; name it e.g. report.html")
    if args.allow_training_rows and args.skip_training_rows:
        raise UserError("--allow_training_rows shows the training rows, --skip_training_rows leaves them out: give one")
    if args.mistakes < 0:
        raise UserError(f"--mistakes must be >= 0, got {args.mistakes}")
    scored = rows_to_score(args)
    config, source, training_rows, left_out, unscored = (
        scored.config,
        scored.source,
        scored.training_rows,
        scored.left_out,
        scored.unscored,
    )
    model, processor = model_to_score(args, scored)
    from ..data.transforms import ImageTransforms
    from ..metrics.label_issues import embedded_rows
    from ..report.page import render

    transform = ImageTransforms.from_image_processor(processor).eval()
    embedded = embedded_rows(model, transform, source, args.batch_size)
    sections = [
        task_section(config.get_task(name), embedded, config, source, transform, args.mistakes)
        for name in source.task_names
    ]
    summary = [
        f"{args.model} on {args.data}, split {args.split}: {len(embedded.positions)} of {source.num_rows} rows "
        f"scored ({embedded.skipped} photos left out: missing or not decodable).",
        "Chance: the score of a constant answer that ignores the photo (the most frequent class; every label; the "
        "mean value). ECE: expected calibration error over 15 bins of the scores the model answers with.",
    ]
    if left_out:
        summary.append(f"{left_out} rows the model was trained on left out (--skip_training_rows).")
    if unscored:
        summary.append(f"Not in this report: task(s) {unscored}, which have no column in the data (--tasks maps them).")
    banner = None
    if training_rows:
        banner = (
            f"TRAINING-SET REPORT: the model was trained on {training_rows} of these {source.num_rows} rows "
            "(--allow_training_rows); it shows how well it fits them, not how it does on photos it has not seen."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(f"mtl_hf report: {Path(scored.location).name}", summary, sections, banner))
    print(f"report on {len(sections)} task(s) written to {output} ({output.stat().st_size / 1e6:.1f} MB)")
    return 0


def task_section(spec, embedded, config, source, transform, mistakes: int):
    """One task's section of the page (`report/page.py`)."""
    from ..metrics import PRIMARY_METRIC
    from ..metrics.calibration import expected_calibration_error, scores_at
    from ..metrics.scoring import at_or_below_chance, chance_scores, task_metrics
    from ..metrics.selective import answer_confidence, answer_right
    from ..models.mtl_vit.calibration_mtl_vit import label_thresholds, task_temperature
    from ..report import figures
    from ..report.page import TaskSection

    logits, targets = embedded.logits[spec.name], embedded.targets[spec.name]
    metric = PRIMARY_METRIC[spec.type]
    score = task_metrics(spec, logits, targets)[metric]
    chance = chance_scores({spec.name: spec}, {spec.name: targets}, 0.5, "eval")[f"eval_{spec.name}_{metric}"]
    line = f"{metric} {score:.4f}, chance {chance:.4f}"
    section = TaskSection(spec.name, spec.type, line, at_or_below_chance(score, chance))
    if spec.type == "regression":
        section.figures.append(("predicted against true", figures.regression_figure(spec, logits, targets)))
        error = np.abs(logits - targets).reshape(len(targets), -1).max(-1)
        order = [i for i in np.argsort(-np.nan_to_num(error, nan=-1.0)) if not np.isnan(error[i])][:mistakes]
        captions = [f"true {np.ravel(targets[i])[0]:.3g}, predicted {np.ravel(logits[i])[0]:.3g}" for i in order]
        section.mistakes = _thumbnails(order, captions, embedded, source, transform)
        return section
    calibrated = spec.name in (config.calibration or {})
    temperature = task_temperature(config.calibration, spec.name)
    scores = scores_at(spec, logits, temperature)
    ece = expected_calibration_error(spec, logits, targets, temperature)
    section.score_line += f"; ECE {ece:.4f}" + (
        f" (uncalibrated {expected_calibration_error(spec, logits, targets):.4f}, temperature {temperature:.3f})"
        if calibrated
        else " (not calibrated: `mtl-hf calibrate` fits it on held-out rows)"
    )
    if spec.type == "classification":
        section.figures.append(("confusion matrix", figures.confusion_figure(spec, logits, targets)))
    else:
        section.figures.append(("precision against recall", figures.precision_recall_figure(spec, scores, targets)))
    reliability = figures.reliability_figure(spec, logits, targets, temperature if calibrated else None)
    section.figures.append(("reliability: share right against confidence", reliability))
    cuts = label_thresholds(config.calibration, spec.name, spec.labels) if spec.type == "multilabel" else None
    confidence, right = answer_confidence(spec, scores, cuts), answer_right(spec, scores, targets, cuts)
    section.tables.append(_review_table(config, spec.name, confidence, right))
    wrong = np.flatnonzero(right == 0)
    order = wrong[np.argsort(-confidence[wrong], kind="stable")][:mistakes]
    section.mistakes = _thumbnails(
        order, [_caption(spec, targets[i], scores[i], confidence[i], cuts) for i in order], embedded, source, transform
    )
    return section


def _review_table(config, task: str, confidence: np.ndarray, right: np.ndarray):
    """What `--review_precision` would let through at each target: the cut and validation coverage from the model's
    record, the coverage and precision on these rows."""
    from ..metrics.selective import let_through, review_cut

    curve = ((config.calibration or {}).get(task) or {}).get("review")
    header = ["target precision", "cut", "validation coverage", "coverage here", "precision here"]
    if curve is None:
        return ("Review queue: no validation record (run `mtl-hf calibrate`)", header, [])
    rows = []
    for target in REVIEW_TARGETS:
        try:
            cut = review_cut(curve, target)
        except UserError as error:
            rows.append([f"{target}", "not reachable", str(error).split(": ", 1)[-1], "", ""])
            continue
        coverage, precision = let_through(confidence, right, cut["cut"])
        shown = "-" if np.isnan(precision) else f"{precision:.4f}"
        rows.append([f"{target}", f"{cut['cut']:.4f}", f"{cut['coverage']:.1%}", f"{coverage:.1%}", shown])
    return ("Review queue: the answers let through at each target precision", header, rows)


def _caption(spec, target, scores, confidence, cuts) -> str:
    if spec.type == "classification":
        return f"given {spec.labels[int(target)]}, answered {spec.labels[int(scores.argmax())]} ({confidence:.2f})"
    given = [label for label, value in zip(spec.labels, target, strict=True) if value == 1]
    answered = [label for label, score, cut in zip(spec.labels, scores, cuts, strict=True) if score >= cut]
    return f"given {', '.join(given) or '(none)'}; answered {', '.join(answered) or '(none)'} ({confidence:.2f})"


def _thumbnails(order, captions, embedded, source, transform) -> list[tuple[bytes, str]]:
    from ..report.figures import thumbnail

    shown = []
    for index, caption in zip(order, captions, strict=True):
        position = int(embedded.positions[index])
        row = source.dataset[position]
        name = str(row[source.id_column]) if source.id_column else f"row {position} of the split"
        shown.append((thumbnail(transform.decode(source.example(row, position).image)), f"{name}: {caption}"))
    return shown


__all__ = ["SUMMARY", "add_arguments", "run", "task_section"]
