"""Label errors found in a catalogue: out-of-sample probabilities for every labelled row, and the rows whose given
label they contradict.

- Embeddings: the saved model's backbone, frozen, read at each head's input (its pooled features), on the shared
  inference path (`inference/batches.py`).
- Out-of-sample probabilities: K-fold heads on those embeddings (scikit-learn's logistic regression, one per
  multilabel label; ridge regression for a regression task): each row is scored by heads that never saw it. Cheap
  (seconds for thousands of rows); K-fold fine-tuning would also keep each row's label out of the backbone, at K
  trainings' cost.
- The suspects: cleanlab's `filter.find_label_issues` (classification) and
  `multilabel_classification.filter.find_label_issues` (multilabel), ranked by the given label's out-of-sample
  probability (self-confidence); for a regression task, the rows whose residual is more than `RESIDUAL_CUT` robust
  standard deviations (1.4826 x the median absolute residual) from its median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError, missing_extra
from ..models.mtl_vit.configuration_mtl_vit import TaskSpec
from ..models.mtl_vit.heads_mtl_vit import MISSING_CLASS

RESIDUAL_CUT = 4.0


class _FeaturesAndLogits(torch.nn.Module):
    """The model as the inference path sees it, answering each task with `[its head's input, its logits]` side by
    side (one tensor a task, so that the path's single host copy and its targets stay as they are)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, tasks=None):
        captured = {}
        hooks = [
            head.register_forward_pre_hook(lambda _, inputs, name=name: captured.__setitem__(name, inputs[0]))
            for name, head in self.model.heads.items()
        ]
        try:
            logits = self.model(pixel_values=pixel_values, tasks=tasks).logits
        finally:
            for hook in hooks:
                hook.remove()
        joined = {
            name: torch.cat([captured[name].float(), value.float().reshape(len(value), -1)], 1)
            for name, value in logits.items()
        }
        return type("Output", (), {"logits": joined})()


@dataclass
class EmbeddedRows:
    """Per task: the rows' positions in the source, their embeddings, the model's own logits and the targets."""

    positions: np.ndarray
    features: dict[str, np.ndarray]
    logits: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    skipped: int


def embedded_rows(model, transform, source, batch_size: int = 64) -> EmbeddedRows:
    """Every decodable row of `source` through the frozen model (photos that do not decode are counted)."""
    from ..data.collator import MultiTaskCollator
    from ..inference.batches import inference_loader, padding_pixels, run_batches, source_batches

    specs = [model.config.get_task(name) for name in source.task_names]
    loader = inference_loader(
        source_batches(source, batch_size), MultiTaskCollator(specs, transform, for_inference=True), num_workers=0
    )
    widths = {spec.name: spec.num_outputs for spec in specs}
    positions, joined, targets, skipped = [], {s.name: [] for s in specs}, {s.name: [] for s in specs}, 0
    network = _FeaturesAndLogits(model)
    with torch.no_grad():
        for batch in run_batches(
            network,
            loader,
            padding=padding_pixels(transform),
            prepare=lambda inputs: inputs,
            tasks=source.task_names,
            with_labels=True,
        ):
            skipped += len(batch.skipped_rows)
            positions.append(batch.positions)
            for name in joined:
                joined[name].append(batch.logits[name])
                targets[name].append(batch.labels[name])
    stacked = {name: np.concatenate(parts) for name, parts in joined.items()}
    return EmbeddedRows(
        positions=np.concatenate(positions) if positions else np.zeros(0, np.int64),
        features={name: value[:, : -widths[name]] for name, value in stacked.items()},
        logits={name: value[:, -widths[name] :] for name, value in stacked.items()},
        targets={name: np.concatenate(parts) for name, parts in targets.items()},
        skipped=skipped,
    )


def labelled_rows(spec: TaskSpec, targets: np.ndarray) -> np.ndarray:
    """The indices of the rows that label `spec`'s task (every label known, for a multilabel task)."""
    if spec.type == "classification":
        return np.flatnonzero(targets != MISSING_CLASS)
    if spec.type == "multilabel":
        return np.flatnonzero((targets != MISSING_CLASS).all(-1))
    return np.flatnonzero(~np.isnan(targets).any(-1) if targets.ndim > 1 else ~np.isnan(targets))


def out_of_fold(spec: TaskSpec, features: np.ndarray, targets: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Each row's out-of-sample probabilities (classification: (rows, classes); multilabel: (rows, labels)) or
    predicted values (regression), from heads fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(targets) < folds:
        raise UserError(f"task {spec.name!r}: {len(targets)} labelled rows, fewer than --folds {folds}; lower --folds")
    if spec.type == "classification":
        counts = np.bincount(targets.astype(int), minlength=spec.num_outputs)
        stratify = counts[counts > 0].min() >= folds
        splitter = (StratifiedKFold if stratify else KFold)(folds, shuffle=True, random_state=seed)
        result = np.zeros((len(targets), spec.num_outputs))
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
        result = np.zeros(targets.shape if targets.ndim > 1 else (len(targets), 1))
    for train, held in splitter.split(features, targets if spec.type == "classification" else None):
        if spec.type == "regression":
            fitted = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(features[train], targets[train])
            result[held] = fitted.predict(features[held]).reshape(len(held), -1)
            continue
        columns = [None] if spec.type == "classification" else range(targets.shape[1])
        for column in columns:
            y = targets[train] if column is None else targets[train, column]
            if len(np.unique(y)) == 1:  # one class in these folds: its probability is that class's, everywhere
                probability = np.full(len(held), float(y[0]))
                if column is None:
                    result[held, int(y[0])] = 1.0
                else:
                    result[held, column] = probability
                continue
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features[train], y)
            scores = model.predict_proba(features[held])
            if column is None:
                result[np.ix_(held, model[-1].classes_.astype(int))] = scores
            else:
                result[held, column] = scores[:, list(model[-1].classes_).index(1)]
    return result if spec.type != "regression" or targets.ndim > 1 else result[:, 0]


def ranked_issues(spec: TaskSpec, predicted: np.ndarray, targets: np.ndarray) -> list[dict]:
    """The suspect rows of one task (indices into `targets`), most suspect first, each with its evidence: `given`,
    `suggested`, and `given_probability` (classification / multilabel) or `residual_sd` (regression)."""
    if spec.type == "regression":
        residual = (targets - predicted).reshape(len(targets), -1).max(-1)
        centre = np.median(residual)
        scale = 1.4826 * np.median(np.abs(residual - centre)) or 1e-12
        distance = np.abs(residual - centre) / scale
        order = np.argsort(-distance, kind="stable")
        return [
            {"index": int(i), "given": float(np.ravel(targets[i])[0]), "suggested": float(np.ravel(predicted[i])[0]),
             "residual_sd": float(distance[i])}
            for i in order if distance[i] > RESIDUAL_CUT
        ]  # fmt: skip
    try:
        from cleanlab import filter as cleanlab_filter
        from cleanlab.multilabel_classification import filter as multilabel_filter
    except ImportError:
        raise missing_extra("mtl-hf audit", "audit", "cleanlab") from None
    if spec.type == "classification":
        labels = targets.astype(int)
        found = cleanlab_filter.find_label_issues(
            labels, predicted, return_indices_ranked_by="self_confidence", n_jobs=1
        )
        return [
            {"index": int(i), "given": spec.labels[labels[i]], "suggested": spec.labels[int(predicted[i].argmax())],
             "given_probability": float(predicted[i, labels[i]])}
            for i in found
        ]  # fmt: skip
    label_lists = [list(np.flatnonzero(row == 1)) for row in targets]
    found = multilabel_filter.find_label_issues(
        label_lists, predicted, return_indices_ranked_by="self_confidence", n_jobs=1
    )
    issues = []
    for i in found:
        given = targets[i] == 1
        agreement = np.where(given, predicted[i], 1.0 - predicted[i])
        issues.append(
            {
                "index": int(i),
                "given": [spec.labels[j] for j in np.flatnonzero(given)],
                "suggested": [spec.labels[j] for j in np.flatnonzero(predicted[i] >= 0.5)],
                "given_probability": float(agreement.min()),  # the least supported of its decisions
            }
        )
    return issues


__all__ = ["RESIDUAL_CUT", "EmbeddedRows", "embedded_rows", "labelled_rows", "out_of_fold", "ranked_issues"]
