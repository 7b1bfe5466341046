"""`mtl-hf audit MODEL DATA --output OUT`: the catalogue rows whose labels the photos contradict, ranked.

Every labelled row gets out-of-sample probabilities from K-fold heads on the model's frozen embeddings, and
cleanlab names the rows whose given label they contradict (`metrics/label_issues.py`); OUT/suspects.csv lists them
per task, most suspect first, with the given label, the suggested one and the evidence, and OUT/audit.json says
how many rows each task had and how many it flagged. Rows the model trained on are audited too (their labels are
what an audit is for), and counted: its backbone has seen their labels, which hides some errors among them.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from ..errors import UserError
from .evaluate import add_data_arguments
from .model_loading import add_pickled_weights_flag

SUMMARY = "rank the rows whose labels the photos contradict (cleanlab on out-of-sample probabilities)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id (its backbone embeds the photos)")
    add_data_arguments(parser, split="train")
    parser.add_argument("--output", required=True, help="a new folder for suspects.csv and audit.json")
    parser.add_argument("--folds", type=int, default=5, help="folds of the out-of-sample heads (default: 5)")
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate import model_to_score, rows_to_score

    output = Path(args.output)
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} exists and is not empty: give audit a new folder, so that nothing is overwritten")
    if args.folds < 2:
        raise UserError(
            f"--folds must be at least 2 (each row is scored by heads fitted on the others), got {args.folds}"
        )
    # Rows the model trained on are audited too (their labels are what an audit is for), and counted.
    scored = rows_to_score(args, count_training_rows=True)
    config, source, training_rows = scored.config, scored.source, scored.training_rows
    if source.num_rows < args.folds:
        raise UserError(
            f"{source.num_rows} rows in split {args.split!r} of {args.data}, fewer than --folds {args.folds}"
        )
    model, processor = model_to_score(args, scored)
    from ..data.transforms import ImageTransforms
    from ..metrics.label_issues import embedded_rows, labelled_rows, out_of_fold, ranked_issues

    transform = ImageTransforms.from_image_processor(processor).eval()
    embedded = embedded_rows(model, transform, source, args.batch_size)
    suspects, summary = [], {"data": args.data, "split": args.split, "folds": args.folds, "tasks": {}}
    for name in source.task_names:
        spec = config.get_task(name)
        labelled = labelled_rows(spec, embedded.targets[name])
        targets = embedded.targets[name][labelled]
        predicted = out_of_fold(spec, embedded.features[name][labelled], targets, args.folds)
        issues = ranked_issues(spec, predicted, targets)
        summary["tasks"][name] = {"type": spec.type, "labelled_rows": len(labelled), "suspects": len(issues)}
        for rank, issue in enumerate(issues, 1):
            position = int(embedded.positions[labelled[issue["index"]]])
            suspects.append(_suspect_row(name, rank, issue, scored.rows[position], position, source, args.image_column))
    summary.update(rows=source.num_rows, photos_skipped=embedded.skipped, training_rows=training_rows)
    output.mkdir(parents=True, exist_ok=True)
    _write(output, suspects, summary)
    _print(summary, suspects, output)
    return 0


def _suspect_row(task, rank, issue, row, position, source, image_column) -> dict:
    evidence = {key: value for key, value in issue.items() if key not in ("index", "given", "suggested")}
    return {
        "task": task,
        "rank": rank,
        "row": position,
        "id": row.get(source.id_column) if source.id_column else "",
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
