"""`mtl-hf audit MODEL_OR_RECIPE DATA --output OUT`: the rows whose labels the photos contradict, ranked.

Every labelled row gets out-of-sample probabilities, from K-fold heads on a saved model's frozen embeddings
(seconds), or from K-fold fine-tuning of a recipe (`audit_folds.py`: K trainings, each fold scored by a model that
never saw its labels), and cleanlab names the rows whose given label they contradict (`metrics/label_issues.py`);
OUT/suspects.csv lists them per task, most suspect first, with the given label, the suggested one and the evidence,
and OUT/audit.json says how many rows each task had and how many it flagged. Rows the model trained on are audited
too (their labels are what an audit is for), and counted: its backbone has seen their labels, which hides some
errors among them (the fine-tuning audit has no such blind spot).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .evaluate import add_data_arguments
from .model_loading import add_pickled_weights_flag

SUMMARY = "rank the rows whose labels the photos contradict (cleanlab on out-of-sample probabilities)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="a saved model folder or Hub id (K-fold heads on its frozen embeddings), or a recipe YAML (K-fold "
        "fine-tuning: each fold scored by a model trained without it; K trainings)",
    )
    add_data_arguments(parser, split="train")
    parser.add_argument("--output", required=True, help="a new folder for suspects.csv and audit.json")
    parser.add_argument("--folds", type=int, default=5, help="folds (default: 5)")
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    # An audit by fine-tuning that stopped left its folds' models in OUT/folds: a rerun goes on from them.
    if output.exists() and any(path.name != "folds" for path in output.iterdir()):
        raise UserError(f"{output} exists and is not empty: give audit a new folder, so that nothing is overwritten")
    if args.folds < 2:
        raise UserError(
            f"--folds must be at least 2 (each row is scored by heads fitted on the others), got {args.folds}"
        )
    if Path(args.model).suffix.lower() in (".yaml", ".yml"):
        audit = _by_fine_tuning(args, output)
    else:
        audit = _by_embeddings(args)
    from ..metrics.label_issues import labelled_rows, ranked_issues

    summary = {
        "data": args.data,
        "split": args.split,
        "method": audit.method,
        "folds": args.folds,
        "rows": len(audit.rows),
        "photos_skipped": audit.skipped,
        "training_rows": audit.training_rows,
        "id_column": audit.id_column,
        "image_column": audit.image_column,
        "tasks": {},
    }
    suspects = []
    for spec in audit.specs:
        labelled = labelled_rows(spec, audit.targets[spec.name])
        targets = audit.targets[spec.name][labelled]
        issues = ranked_issues(spec, audit.scores(spec, labelled), targets)
        summary["tasks"][spec.name] = {"type": spec.type, "labelled_rows": len(labelled), "suspects": len(issues)}
        for rank, issue in enumerate(issues, 1):
            position = int(audit.positions[labelled[issue["index"]]])
            row = audit.rows[position]
            suspects.append(_suspect_row(spec.name, rank, issue, row, position, audit.id_column, audit.image_column))
    output.mkdir(parents=True, exist_ok=True)
    _write(output, suspects, summary)
    _print(summary, suspects, output)
    return 0


@dataclass
class Audit:
    """What either way of auditing hands the ranking: the audited rows, and per task each row's targets and a way to
    its out-of-sample scores (for the labelled rows asked)."""

    method: str
    specs: list
    rows: object  # every column of the audited rows, by position
    positions: np.ndarray  # each scored row's position in `rows`
    targets: dict[str, np.ndarray]
    scores: Callable[[object, np.ndarray], np.ndarray]  # (spec, labelled indices) -> their out-of-sample scores
    id_column: str | None
    image_column: str
    skipped: int = 0
    training_rows: int = 0


def _by_embeddings(args) -> Audit:
    """K-fold heads on the saved model's frozen embeddings; rows the model trained on are audited too (their
    labels are what an audit is for), and counted."""
    from .evaluate import model_to_score, rows_to_score

    scored = rows_to_score(args, count_training_rows=True)
    source = scored.source
    if source.num_rows < args.folds:
        raise UserError(
            f"{source.num_rows} rows in split {args.split!r} of {args.data}, fewer than --folds {args.folds}"
        )
    model, processor = model_to_score(args, scored)
    from ..data.transforms import ImageTransforms
    from ..metrics.label_issues import embedded_rows, out_of_fold

    embedded = embedded_rows(model, ImageTransforms.from_image_processor(processor).eval(), source, args.batch_size)
    return Audit(
        method=f"{args.folds}-fold heads on the frozen embeddings of {args.model}",
        specs=[scored.config.get_task(name) for name in source.task_names],
        rows=source.dataset,  # the rows scored, every column: with --skip_training_rows, fewer than scored.rows
        positions=embedded.positions,
        targets=embedded.targets,
        scores=lambda spec, labelled: out_of_fold(
            spec, embedded.features[spec.name][labelled], embedded.targets[spec.name][labelled], args.folds
        ),
        id_column=source.id_column,
        image_column=args.image_column,
        skipped=embedded.skipped,
        training_rows=scored.training_rows,
    )


def _by_fine_tuning(args, output: Path) -> Audit:
    """K-fold fine-tuning of the recipe (`audit_folds.py`): every row already has its out-of-sample scores."""
    from .audit_folds import folded_scores

    folded = folded_scores(args, output)
    return Audit(
        method=f"{args.folds}-fold fine-tuning of {args.model}",
        specs=folded.tasks,
        rows=folded.rows,
        positions=np.arange(len(folded.rows)),
        targets=folded.targets,
        scores=lambda spec, labelled: folded.scores[spec.name][labelled],
        id_column=folded.id_column,
        image_column=folded.image_column,
    )


def _suspect_row(task, rank, issue, row, position, id_column, image_column) -> dict:
    evidence = {key: value for key, value in issue.items() if key not in ("index", "given", "suggested")}
    return {
        "task": task,
        "rank": rank,
        "row": position,
        "id": row.get(id_column) if id_column else "",
        "image": row[image_column] if isinstance(row[image_column], str) else "",
        "given": _listed(issue["given"]),
        "suggested": _listed(issue["suggested"]),
        "evidence": json.dumps(evidence),
    }


def _listed(value):
    return "|".join(value) if isinstance(value, list) else value


def _write(output: Path, suspects: list[dict], summary: dict) -> None:
    with open(output / "suspects.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, ["task", "rank", "row", "id", "image", "given", "suggested", "evidence"])
        writer.writeheader()
        writer.writerows(suspects)
    (output / "audit.json").write_text(json.dumps(summary, indent=2) + "\n")


def _print(summary: dict, suspects: list[dict], output: Path) -> None:
    print(f"\n{'task':<16} {'type':<15} {'labelled rows':>13} {'suspects':>9}")
    for task, counts in summary["tasks"].items():
        print(f"{task:<16} {counts['type']:<15} {counts['labelled_rows']:>13} {counts['suspects']:>9}")
    if summary["training_rows"]:
        print(
            f"{summary['training_rows']} of the {summary['rows']} rows trained the model: its embeddings have seen "
            "their labels, which hides some of their errors"
        )
    for suspect in suspects[:10]:
        where = f"row {suspect['row']} {suspect['id']}".rstrip()
        print(f"  {suspect['task']} #{suspect['rank']}: {where} given {suspect['given']!r}, "
              f"suggested {suspect['suggested']!r} ({suspect['evidence']})")  # fmt: skip
    print(f"suspects.csv and audit.json written to {output}/")


__all__ = ["SUMMARY", "add_arguments", "run"]
