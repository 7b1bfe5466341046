"""Model cards: rendered from the template shipped in the package, from a model's config and its scores.

The card's metadata (`library_name`, `tags`, `datasets`, `base_model`, `inference: false` and a
`model-index` with one result per task and metric) is built with `huggingface_hub.ModelCardData`,
so the Hub reads it as it reads any other card.

No `pipeline_tag`: the Hub's tags each name one of transformers' pipelines, whose widgets and clients expect that
pipeline's output (`image-classification`: one list of labels with scores), while this model answers a dict of
tasks. So the card declares none, and `inference: false` keeps the Hub from offering a widget that would break;
the model is found by its tags (`image-classification`, `multi-task`), and deployed with the `handler.py` every
saved model carries (Inference Endpoints) or `mtl-hf serve`.
"""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, EvalResultEntry, ModelCard, ModelCardData, eval_result_entries_to_yaml

from ..metrics import PRIMARY_METRIC, TASK_METRICS
from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
from .lookup import is_hub_id

TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md"
CURVES_FILE = "training_curves.png"
_TAGS = ["mtl_hf", "multi-task", "image-classification", "vision"]
_HUB_TASK_TYPE = {
    "classification": "image-classification",
    "multilabel": "image-classification",
    "regression": "image-regression",
}
_METRIC_NAMES = {
    "accuracy": "Accuracy",
    "macro_f1": "Macro F1",
    "micro_f1": "Micro F1",
    "mAP": "mean Average Precision",
    "mse": "Mean squared error",
    "mae": "Mean absolute error",
    "r2": "R^2",
}


def task_scores(
    config: MultiTaskViTConfig, metrics: dict[str, Any], prefix: str = "eval"
) -> dict[str, dict[str, float]]:
    """Per-task metrics from flat Trainer metrics (`{prefix}_{task}_{metric}`), for the tasks of `config`."""
    scores: dict[str, dict[str, float]] = {}
    for spec in config.task_specs:
        for metric in TASK_METRICS[spec.type]:
            value = metrics.get(f"{prefix}_{spec.name}_{metric}")
            if value is not None and math.isfinite(float(value)):
                scores.setdefault(spec.name, {})[metric] = float(value)
    return scores


def build_model_card(
    config: MultiTaskViTConfig,
    *,
    model_name: str,
    model_id: str | None = None,
    metrics: dict[str, Any] | None = None,
    metrics_prefix: str = "eval",
    training: dict[str, Any] | None = None,
    datasets: list[str] | None = None,
    curves_file: str | None = None,
    multilabel_threshold: float = 0.5,
    license: str | None = None,
    chance: dict[str, Any] | None = None,
    added_tasks: dict[str, Any] | None = None,
    calibration_file: str | None = None,
) -> ModelCard:
    r"""
    The model card of a multi-task model.

    Args:
        config (`MultiTaskViTConfig`): the model's config (its tasks, labels and backbone).
        model_name (`str`): the card's title and the `model-index` name.
        model_id (`str`, *optional*): the Hub id (or folder) used in the code examples; defaults to `model_name`.
        metrics (`dict`, *optional*): flat evaluation metrics as `MultiTaskTrainer.evaluate` returns them.
        metrics_prefix (`str`, defaults to `"eval"`): the prefix of those metrics (`eval`, `test`).
        training (`dict`, *optional*): how the model was trained: `sources` (list of `name`, `rows`,
            `tasks`), `sampling_strategy`, `batch_mode`, `when_exhausted`, `weighting`,
            `weighting_options`, `gradient_space` (gradient methods), `hyperparameters` (dict), as
            `MultiTaskTrainer.training_summary` gives it.
        datasets (`list[str]`, *optional*): Hub dataset ids the model was trained on (card metadata).
        curves_file (`str`, *optional*): a picture of the training curves beside the card, shown in it.
        multilabel_threshold (`float`, defaults to 0.5): the threshold multilabel scores were measured at.
        license (`str`, *optional*): the model's license id.
        chance (`dict`, *optional*): each task's main score for a constant answer that ignores the
            image, as flat metrics (`eval_<task>_<metric>`, the recipe's `eval_chance_results.json`);
            shown beside the scores so a reader can tell learning from guessing.
        added_tasks (`dict`, *optional*): for tasks added to an earlier model, the gate's record
            (`added_tasks.json`, see `commands/recipe/old_task_gate.py`): the earlier tasks' scores before and after.
        calibration_file (`str`, *optional*): the reliability diagram beside the card, shown with the calibration
            table (`config.calibration`).
    """
    metrics = metrics or {}
    scores = task_scores(config, metrics, metrics_prefix)
    backbone_source = getattr(config.backbone_config, "_name_or_path", "") or None
    base_model = backbone_source if backbone_source and is_hub_id(backbone_source) else None
    local_backbone = backbone_source if backbone_source and not base_model else None
    evaluated_on = [source["name"] for source in (training or {}).get("evaluation", [])]
    eval_name = ", ".join(evaluated_on or datasets or []) or "evaluation data"

    eval_results = _eval_results(config, scores, datasets, eval_name, metrics_prefix)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        inference=False,
        tags=list(_TAGS),
        base_model=base_model,
        datasets=datasets or None,
        license=license,
        metrics=sorted({metric for task in scores.values() for metric in task}) or None,
        eval_results=eval_results or None,
    )
    tasks = _task_rows(config, scores, chance or {}, metrics_prefix)
    average = metrics.get(f"{metrics_prefix}_average_score")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        model_id=model_id or model_name,
        base_model=base_model,
        local_backbone=local_backbone,
        backbone_type=type(config.backbone_config).__name__.removesuffix("Config"),
        tasks=tasks,
        show_chance=bool(chance),
        average_score=None if average is None or not math.isfinite(average) else float(average),
        metrics_split=metrics_prefix,
        training=training,
        curves_file=curves_file,
        multilabel_threshold=multilabel_threshold,
        versions=_versions(),
        added_tasks=added_tasks,
        calibration=bool(config.calibration),
        calibration_section=calibration_section(config, calibration_file),
    )


CALIBRATION_HEADING = "## Calibration"


def calibration_section(config, calibration_file: str | None = None) -> str:
    """The card's calibration section (empty for an uncalibrated model): per task its temperature, rows, ECE
    before and after, and multilabel thresholds; `mtl-hf calibrate` writes it into an existing card too."""
    if not config.calibration:
        return ""
    lines = [
        CALIBRATION_HEADING,
        "",
        "The scores are calibrated: each task's logits are divided by a temperature fitted on labelled rows the "
        "model did not train on (the argmax and each label's ranking stay as they are), and each multilabel label "
        "is answered from the threshold that gave the best F1 on those rows. Expected calibration error (15 bins; 0 "
        "means that a score of 0.9 is right 9 times in 10) on those same rows, so the 'after' column is "
        "optimistic; `mtl-hf eval MODEL DATA --split test` measures it on rows no choice has seen.",
        "",
        "| task | rows | data | temperature | ECE before | ECE after | thresholds |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, entry in config.calibration.items():
        ece = entry.get("ece") or {}
        thresholds = ", ".join(f"{label} {value:.2f}" for label, value in (entry.get("thresholds") or {}).items())
        lines.append(
            f"| `{task}` | {entry.get('rows', '?')} | {entry.get('data', '?')} | {entry['temperature']:.3f} | "
            f"{_format_score(ece.get('before'))} | {_format_score(ece.get('after'))} | {thresholds or '-'} |"
        )
    if calibration_file:
        lines += ["", f"![Reliability before and after calibration]({calibration_file})"]
    return "\n".join(lines) + "\n\n"


def with_calibration_section(card_text: str, section: str) -> str:
    """`card_text` (a README.md) with its calibration section replaced by `section`, or `section` put before
    its Limitations (at the end where it has none)."""
    start = card_text.find(f"\n{CALIBRATION_HEADING}\n")
    if start >= 0:
        end = card_text.find("\n## ", start + 1)
        card_text = card_text[: start + 1] + (card_text[end + 1 :] if end >= 0 else "")
    where = card_text.find("\n## Limitations")
    if where < 0:
        return card_text.rstrip("\n") + "\n\n" + section
    return card_text[: where + 1] + section + card_text[where + 1 :]


def _eval_results(config, scores, datasets, eval_name: str, split: str) -> list[EvalResult]:
    # The model-index groups results by task type and dataset, so the task's name goes into each
    # metric's name rather than the (shared) task entry.
    return [
        EvalResult(
            task_type=_HUB_TASK_TYPE[spec.type],
            dataset_type=(datasets or ["custom"])[0],
            dataset_name=eval_name,
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{spec.name} {_METRIC_NAMES.get(metric, metric)}",
            metric_value=round(value, 4),
        )
        for spec in config.task_specs
        for metric, value in scores.get(spec.name, {}).items()
    ]


def _task_rows(config, scores, chance, prefix: str) -> list[dict[str, Any]]:
    """The card's table of tasks: type, outputs, labels, main metric, score and chance score."""
    rows = []
    for spec in config.task_specs:
        primary = PRIMARY_METRIC[spec.type]
        score = scores.get(spec.name, {}).get(primary)
        rows.append(
            {
                "name": spec.name,
                "type": spec.type,
                "outputs": len(spec.labels) if spec.labels else spec.num_outputs,
                "labels": ", ".join(spec.labels) if spec.labels else "",
                "metric": _METRIC_NAMES[primary],
                "score": "-" if score is None else f"{score:.4f}",
                "chance": _format_score(chance.get(f"{prefix}_{spec.name}_{primary}")),
            }
        )
    return rows


def card_from_folder(folder: str | Path, *, model_id: str | None = None) -> ModelCard:
    """The card of a saved model folder: its README.md if there is one, else one built from its files.

    A folder written by `MultiTaskTrainer.save_model` has its card already; a bare `save_pretrained`
    folder gets one from `config.json` and, when present, `all_results.json` / `eval_results.json`.
    """
    folder = Path(folder)
    readme = folder / "README.md"
    if readme.is_file():
        return ModelCard.load(readme)
    config = MultiTaskViTConfig.from_pretrained(folder)
    metrics: dict[str, Any] = {}
    for name in ("all_results.json", "eval_results.json"):
        if (folder / name).is_file():
            metrics = json.loads((folder / name).read_text())
            break
    return build_model_card(
        config,
        model_name=(model_id or folder.resolve().name).split("/")[-1],
        model_id=model_id,
        metrics=metrics,
        curves_file=CURVES_FILE if (folder / CURVES_FILE).is_file() else None,
    )


def _format_score(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{round(float(value), 4) + 0.0:.4f}"  # + 0.0: a chance R^2 of -1e-17 shows as 0.0000, not -0.0000


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("mtl_hf", "transformers", "torch", "datasets", "accelerate", "huggingface_hub"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


EVAL_RESULTS_FILE = ".eval_results/mtl_hf.yaml"


def eval_results_yaml(card: ModelCard) -> str | None:
    """The card's results in the Hub's `.eval_results/*.yaml` format (which the model page and the benchmark
    dataset's leaderboard read), for `EVAL_RESULTS_FILE` beside the card's `model-index` (which older tools read).
    That format names a Hub dataset for each result, so only results on one are kept; None when there are none
    (local data). Each entry: `dataset.id` (the Hub dataset), `dataset.task_id` (`<task>_<metric>`, e.g.
    `category_accuracy`), `value`, and `notes` (the split and the evaluation rows)."""
    import yaml

    entries = [
        EvalResultEntry(
            dataset_id=result.dataset_type,
            task_id=f"{result.metric_name.split(' ')[0]}_{result.metric_type}",
            value=result.metric_value,
            notes=f"split: {result.dataset_split}; evaluated on {result.dataset_name}",
        )
        for result in card.data.eval_results or []
        if is_hub_id(result.dataset_type)
    ]
    return yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False) if entries else None


def write_eval_results(card: ModelCard, folder: str | Path) -> None:
    """Writes (or, without results on a Hub dataset, removes) `folder/EVAL_RESULTS_FILE`."""
    path = Path(folder) / EVAL_RESULTS_FILE
    text = eval_results_yaml(card)
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


__all__ = [
    "CALIBRATION_HEADING",
    "CURVES_FILE",
    "EVAL_RESULTS_FILE",
    "TEMPLATE_PATH",
    "build_model_card",
    "calibration_section",
    "card_from_folder",
    "eval_results_yaml",
    "task_scores",
    "with_calibration_section",
    "write_eval_results",
]
