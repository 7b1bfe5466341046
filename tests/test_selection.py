"""Choosing a checkpoint: the relative score (bounded, comparable across task types), per-task metrics of the
user's own, and early stopping on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from transformers import EarlyStoppingCallback

from mtl_hf import MultiTaskTrainer
from mtl_hf.errors import UserError
from mtl_hf.metrics import PRIMARY_METRIC
from mtl_hf.metrics.scoring import chance_scores, relative_score
from tests.training_helpers import arguments, new_model, shop_source


def test_relative_score_is_zero_at_chance_one_when_perfect_and_floored():
    assert relative_score(0.625, 0.25) == pytest.approx(0.5)
    assert relative_score(0.25, 0.25) == 0.0 and relative_score(1.0, 0.4) == 1.0
    assert relative_score(-7.0, 0.0) == -1.0  # an R^2 far below the mean's answer
    assert math.isnan(relative_score(0.9, 1.0))  # one label in every row: chance is perfect, nothing to compare
    assert math.isnan(relative_score(math.nan, 0.3))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    train, held_out = shop_source(rows=48), shop_source(rows=40, start=1000, name="held_out")
    seen = {}

    def top2(task, logits, targets):
        seen[task] = (logits.shape, targets.shape)
        if logits.ndim != 2 or task != "category":
            return {}
        best_two = np.argsort(-logits, axis=1)[:, :2]
        return {"top2": float((best_two == targets[:, None]).any(axis=1).mean())}

    trainer = MultiTaskTrainer(
        new_model(train),
        arguments(tmp_path_factory.mktemp("run"), max_steps=4),
        train_dataset=train,
        eval_dataset=held_out,
        compute_task_metrics=top2,
    )
    trainer.train()
    return trainer, trainer.predict(held_out), seen


def test_every_task_gets_a_relative_score_and_their_mean_is_reported(evaluated):
    trainer, output, _ = evaluated
    metrics, labels = output.metrics, output.label_ids
    chance = chance_scores(trainer.task_specs, labels, prefix="test")
    relatives = []
    for name, spec in trainer.task_specs.items():
        key = f"test_{name}_{PRIMARY_METRIC[spec.type]}"
        expected = relative_score(metrics[key], chance[key])
        assert metrics[f"test_{name}_relative_score"] == pytest.approx(expected)
        relatives.append(expected)
    assert -1.0 <= metrics["test_relative_score"] <= 1.0
    assert metrics["test_relative_score"] == pytest.approx(np.mean(relatives))


def test_compute_task_metrics_gets_each_tasks_labelled_rows_and_reports_its_metrics(evaluated):
    trainer, output, seen = evaluated
    labels = output.label_ids["category"]
    logits = output.predictions["category"][labels >= 0]
    targets = labels[labels >= 0]
    best_two = np.argsort(-logits, axis=1)[:, :2]
    assert output.metrics["test_category_top2"] == pytest.approx((best_two == targets[:, None]).any(axis=1).mean())
    assert seen["category"] == ((len(targets), 5), (len(targets),))
    assert output.metrics["test_category_top2"] >= output.metrics["test_category_accuracy"]
    assert not any(key.startswith("test_colour_top2") for key in output.metrics)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ({"accuracy": 1.0}, "metric 'accuracy' is one of the task's own metrics; give yours another name"),
        ({"top2": "high"}, "metric 'top2' is 'high'; metrics must be numbers"),
        ([0.5], "returned list; return a dict of metric name -> number"),
    ],
)
def test_bad_task_metrics_are_refused_in_one_line(tmp_path, returned, message):
    source = shop_source(rows=16, tasks=["category"])
    trainer = MultiTaskTrainer(
        new_model(source), arguments(tmp_path), eval_dataset=source, compute_task_metrics=lambda *_: returned
    )
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        trainer.evaluate()


def test_early_stopping_on_the_relative_score_stops_and_restores_the_best_checkpoint(tmp_path):
    train, held_out = shop_source(rows=48), shop_source(rows=32, start=1000, name="held_out")
    args = arguments(
        tmp_path,
        max_steps=12,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="relative_score",
    )
    assert args.greater_is_better
    # No step can improve the score by a whole unit: the run stops after `patience` evaluations past the first.
    stopper = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=1.0)
    trainer = MultiTaskTrainer(new_model(train), args, train_dataset=train, eval_dataset=held_out, callbacks=[stopper])
    trainer.train()
    scores = [entry["eval_relative_score"] for entry in trainer.state.log_history if "eval_relative_score" in entry]
    assert trainer.state.global_step == 3 and len(scores) == 3
    assert trainer.state.best_metric == max(scores)
    assert trainer.evaluate()["eval_relative_score"] == pytest.approx(max(scores), abs=1e-6)
