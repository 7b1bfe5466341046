import math

import pytest

from mtl_hf.metrics import load_task_metric


def test_classification_metric_skips_missing_targets():
    scores = load_task_metric("classification").compute(
        predictions=[0, 1, 2, 1, 0], references=[0, 1, 1, -100, 2], num_labels=3
    )
    assert scores["count"] == 4 and scores["accuracy"] == pytest.approx(0.5)
    # per class F1: class 0: P=1/2, R=1 -> 2/3; class 1: P=1, R=1/2 -> 2/3; class 2: P=0 -> 0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_multilabel_metric_by_hand():
    scores = load_task_metric("multilabel").compute(
        predictions=[[0.9, 0.2], [0.6, 0.7], [0.1, 0.8]],
        references=[[1, 0], [0, 1], [1, -100]],
        threshold=0.5,
    )
    # label 0: TP 1, FP 1, FN 1 -> F1 1/2; label 1: TP 1, FP 0, FN 0 -> F1 1; micro: TP 2, FP 1, FN 1 -> 2/3
    assert scores["micro_f1"] == pytest.approx(2 / 3)
    assert scores["macro_f1"] == pytest.approx(0.75)
    # AP label 0 (scores 0.9+, 0.6-, 0.1+): ranks -> precision at hits 1/1 and 2/3 -> (1 + 2/3) / 2; label 1: 1
    assert scores["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert scores["count"] == 5


def test_regression_metric_skips_nan_targets():
    nan = float("nan")
    scores = load_task_metric("regression").compute(
        predictions=[[1.0], [2.0], [4.0], [9.0]], references=[[1.0], [3.0], [5.0], [nan]]
    )
    assert scores["count"] == 3
    assert scores["mse"] == pytest.approx((0 + 1 + 1) / 3) and scores["mae"] == pytest.approx(2 / 3)
    assert scores["r2"] == pytest.approx(1 - 2 / 8)  # residual 2, total ((1-3)^2 + 0 + (5-3)^2) = 8
    empty = load_task_metric("regression").compute(predictions=[[1.0]], references=[[nan]])
    assert empty["count"] == 0 and math.isnan(empty["mse"])


def test_unknown_task_type_is_refused():
    with pytest.raises(ValueError, match="no metric for task type 'ranking'"):
        load_task_metric("ranking")
