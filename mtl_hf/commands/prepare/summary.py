"""What `prepare` reports: rows in and out, drops by reason (each dropped row listed in `dropped_rows.jsonl`),
each task's type, labels and missing count, and the shards; printed and written to `prepare_summary.json`."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ...data.tables import in_split_order
from .shards import DROP_REASONS
from .storage import open_in

SUMMARY_FILE = "prepare_summary.json"
DROPPED_FILE = "dropped_rows.jsonl"


def summarise(catalogue, output, rows_in, tasks, reports, size, quality, storage_options, split_rule) -> dict[str, Any]:
    reports = sorted(reports, key=lambda report: report["partition"])
    dropped_rows = [row for report in reports for row in report["dropped"]]
    shards = sorted((file for report in reports for file in report["files"]), key=lambda file: file["file"])
    splits = Counter()
    for shard in shards:
        splits[shard["split"]] += shard["rows"]
    summary = {
        "catalogue": str(catalogue),
        "output": str(output),
        "rows_in": rows_in,
        "rows_out": sum(shard["rows"] for shard in shards),
        "dropped": dict(sorted(Counter(row["reason"] for row in dropped_rows).items())),
        "first_dropped": dropped_rows[0] if dropped_rows else None,
        "splits": in_split_order(splits),
        "split_rule": split_rule,
        "tasks": {task.name: _task_summary(task) for task in tasks},
        "shards": shards,
        "image_shortest_edge": size,
        "jpeg_quality": quality,
    }
    with open_in(output, SUMMARY_FILE, "w", storage_options) as file:
        json.dump(summary, file, indent=2)
    with open_in(output, DROPPED_FILE, "w", storage_options) as file:
        file.writelines(json.dumps(row) + "\n" for row in dropped_rows)
    return summary


def _task_summary(task) -> dict[str, Any]:
    summary = {"type": task.type, "labels": list(task.labels), "missing": task.missing}
    if task.type == "multilabel":
        summary["empty"] = "none" if task.from_array else task.empty
    if task.unknown_labels:
        summary["unknown_labels"] = dict(task.unknown_labels)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    shard_bytes = [shard["bytes"] for shard in summary["shards"]]
    lines = [
        f"catalogue {summary['catalogue']} -> {summary['output']}",
        f"rows: {summary['rows_in']} in, {summary['rows_out']} out, {summary['rows_in'] - summary['rows_out']} dropped",
    ]
    for reason, count in summary["dropped"].items():
        lines.append(f"  dropped {count:>6}  {reason}: {DROP_REASONS[reason]}")
    splits = ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    lines.append(f"splits ({summary['split_rule']}): {splits}")
    for name, task in summary["tasks"].items():
        labels = f"{len(task['labels'])} labels {task['labels'][:8]}{' ...' if len(task['labels']) > 8 else ''}"
        empty = {"none": ", an empty cell is none of the labels", "missing": ", an empty cell is missing"}
        lines.append(
            f"task {name} ({task['type']}): {labels if task['labels'] else 'numbers'}, {task['missing']} rows missing"
            + empty.get(task.get("empty"), "")
        )
        if task.get("unknown_labels"):
            rows = sum(task["unknown_labels"].values())
            lines.append(f"  {rows} row(s) with labels outside the vocabulary, left missing: {task['unknown_labels']}")
    if shard_bytes:
        mib = [count / 2**20 for count in shard_bytes]
        lines.append(
            f"shards: {len(mib)} Parquet files, {sum(mib):.1f} MiB ({min(mib):.1f}-{max(mib):.1f} MiB each); "
            f"photos at {summary['image_shortest_edge']} px shortest edge, JPEG quality "
            f"{summary['jpeg_quality']}"
        )
    lines.append(f"summary: {SUMMARY_FILE}, dropped rows: {DROPPED_FILE} (in the output folder)")
    return "\n".join(lines)


__all__ = ["DROPPED_FILE", "SUMMARY_FILE", "format_summary", "summarise"]
