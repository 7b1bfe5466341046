"""`mtl-hf compare`: the plan, delta_m by hand, the table and PNG, resuming after a kill, bench/quality.py --quick."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mtl_hf.commands.compare import SINGLE_TASK, delta_m, markdown_table, plan_runs, summarise, weak_baselines
from mtl_hf.commands.main import main as cli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


# -- delta_m and the summary, against numbers computed by hand ---------------------------------------


def test_delta_m_is_the_mean_sign_adjusted_relative_change():
    metrics = {"category": "accuracy", "tags": "micro_f1", "size": "mae"}
    baseline = {"category": 0.8, "tags": 0.5, "size": 2.5}
    scores = {"category": 0.9, "tags": 0.5, "size": 2.0}
    # category: -(0.9-0.8)/0.8 = -12.5 %; tags: 0; size (lower is better): +(2.0-2.5)/2.5 = -20 %.
    assert delta_m(scores, baseline, metrics) == pytest.approx((-12.5 + 0.0 - 20.0) / 3)
    # Worse on every task: positive. A negative baseline (an R^2 below 0) divides by its size.
    assert delta_m({"category": 0.6}, {"category": 0.8}, {"category": "accuracy"}) == pytest.approx(25.0)
    assert delta_m({"ink": -0.25}, {"ink": -0.5}, {"ink": "r2"}) == pytest.approx(-50.0)


def test_delta_m_refuses_mismatched_tasks_and_a_zero_baseline():
    with pytest.raises(ValueError, match="same tasks"):
        delta_m({"a": 1.0}, {"b": 1.0}, {"a": "accuracy"})
    with pytest.raises(ValueError, match="task 'a' has a baseline score of 0"):
        delta_m({"a": 1.0}, {"a": 0.0}, {"a": "accuracy"})


def _result(method, tasks, seed, scores, seconds, chance=None):
    return {
        "method": method,
        "tasks": tasks,
        "seed": seed,
        "scores": scores,
        **({"chance": chance} if chance is not None else {}),
        "train_seconds": seconds,
        "train_samples_per_second": 100.0,
        "peak_memory_mb": 500.0,
    }


def test_a_baseline_scoring_zero_on_several_seeds_gives_an_undefined_delta_m_not_a_crash():
    metrics = {"a": "accuracy"}
    results = [_result(SINGLE_TASK, ["a"], seed, {"a": 0.0}, 2.0) for seed in (0, 1)]
    results += [_result("equal", ["a"], seed, {"a": 0.3}, 1.0) for seed in (0, 1)]
    summary = summarise(results, ["equal"], metrics)
    assert math.isnan(summary["equal"]["delta_m"]["mean"]) and math.isnan(summary["equal"]["delta_m"]["std"])
    assert summary["equal"]["scores"]["a"] == {"mean": pytest.approx(0.3), "std": 0.0}


def test_summary_pairs_each_run_with_the_baselines_of_its_seed():
    metrics = {"a": "accuracy", "b": "mse"}
    results = [
        _result(SINGLE_TASK, ["a"], 0, {"a": 0.5}, 2.0),
        _result(SINGLE_TASK, ["b"], 0, {"b": 1.0}, 3.0),
        _result(SINGLE_TASK, ["a"], 1, {"a": 0.4}, 2.0),
        _result(SINGLE_TASK, ["b"], 1, {"b": 2.0}, 4.0),
        _result("equal", ["a", "b"], 0, {"a": 0.6, "b": 1.5}, 1.0),
        _result("equal", ["a", "b"], 1, {"a": 0.4, "b": 1.0}, 3.0),
    ]
    summary = summarise(results, ["equal"], metrics)
    # seed 0: a -(0.6-0.5)/0.5 = -20 %, b (lower is better) +(1.5-1)/1 = +50 % -> +15 %
    # seed 1: a 0 %, b +(1-2)/2 = -50 % -> -25 %
    assert summary["equal"]["delta_m"]["mean"] == pytest.approx(-5.0)
    assert summary["equal"]["delta_m"]["std"] == pytest.approx(math.sqrt(2 * 20.0**2))  # sample std of 15, -25
    assert summary["equal"]["scores"]["a"]["mean"] == pytest.approx(0.5)
    assert summary[SINGLE_TASK]["train_seconds"]["mean"] == pytest.approx((5.0 + 6.0) / 2)
    assert summary["equal"]["time_vs_single_task"] == pytest.approx((1.0 / 5.0 + 3.0 / 6.0) / 2)

    table = markdown_table(
        {"settings": {"tasks": metrics, "seeds": [0, 1], "budget_rule": "per-task: ..."}, "summary": summary}
    ).splitlines()
    header = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert header[:3] == ["method", "a accuracy", "b mse"] and header[3].startswith("delta_m")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[4:]]
    assert [row[0] for row in rows] == ["single-task (2 models)", "equal"]
    assert rows[1][3] == "**-5.00 +- 28.28**" and all(len(row) == len(header) for row in rows)


def test_a_baseline_at_chance_is_marked_and_left_out_of_delta_m():
    # The own-catalogue case: a single-task price model below chance (R^2 -0.444) made delta_m +32 %.
    metrics = {"category": "accuracy", "price": "r2"}
    chance = {"category": 0.35, "price": 0.0}
    results = [
        _result(SINGLE_TASK, ["category"], 0, {"category": 0.8}, 2.0, chance),
        _result(SINGLE_TASK, ["price"], 0, {"price": -0.444}, 2.0, chance),
        _result("equal", ["category", "price"], 0, {"category": 0.88, "price": 0.5}, 2.0, chance),
    ]
    weak = weak_baselines(results, metrics)
    assert weak == {"price": "single-task r2 -0.444 is at or below chance 0.000"}
    summary = summarise(results, ["equal"], metrics, left_out=list(weak))
    assert summary["equal"]["delta_m"]["mean"] == pytest.approx(-10.0)  # category alone: -(0.88-0.8)/0.8
    with_price = (-10.0 - (0.5 + 0.444) / 0.444 * 100) / 2
    assert summary["equal"]["delta_m_all_tasks"]["mean"] == pytest.approx(with_price)

    settings = {"tasks": metrics, "seeds": [0], "budget_rule": "per-task: ..."}
    table = markdown_table({"settings": settings, "summary": summary, "weak_baselines": weak})
    header = [cell.strip() for cell in table.splitlines()[2].strip("|").split("|")]
    assert header[1:3] == ["category accuracy", "price r2 (at chance, left out of delta_m)"]
    assert "one seed, so no spread" in table and "+-" not in table
    assert "- price: single-task r2 -0.444 is at or below chance 0.000" in table
    assert f"- delta_m % with them: equal {with_price:+.2f}" in table

    # Just above chance (by more than a point) counts; every task at chance leaves no delta_m.
    assert weak_baselines([{**results[1], "scores": {"price": 0.02}}], {"price": "r2"}) == {}
    everything = summarise(results, ["equal"], metrics, left_out=["category", "price"])
    assert math.isnan(everything["equal"]["delta_m"]["mean"])


def test_plan_has_the_baselines_then_one_run_per_method_for_every_seed():
    runs = plan_runs(["a", "b", "c"], ["equal", "famo"], [0, 1], 90, "per-task")
    assert [(run.name, run.seed) for run in runs[:5]] == [
        ("single-a", 0),
        ("single-b", 0),
        ("single-c", 0),
        ("multi-equal", 0),
        ("multi-famo", 0),
    ]
    assert len(runs) == 10 and {run.max_steps for run in runs} == {90}
    total = plan_runs(["a", "b", "c"], ["equal"], [0], 90, "total")
    assert [run.max_steps for run in total] == [30, 30, 30, 90]
    with pytest.raises(ValueError, match="unknown budget 'half'"):
        plan_runs(["a"], ["equal"], [0], 10, "half")


# -- the command, end to end ---------------------------------------------------------------------------


@pytest.fixture
def tiny_recipe(tmp_path):
    values = yaml.safe_load((REPO / "recipes" / "configs" / "digits.yaml").read_text())
    values.update(
        num_train_epochs=1, max_train_rows=128, max_eval_rows=64, output_dir=str(tmp_path / "digits"), logging_steps=5
    )
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def compare_command(recipe, output_dir, *extra):
    return [
        sys.executable,
        "-m",
        "mtl_hf",
        "compare",
        str(recipe),
        "--methods",
        "equal,famo",
        "--seeds",
        "2",
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def test_an_interrupted_comparison_resumes_without_retraining_finished_runs(tiny_recipe, tmp_path):
    output = tmp_path / "comparison"
    process = subprocess.Popen(
        compare_command(tiny_recipe, output), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(list(output.glob("runs/*/*/result.json"))) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "no run finished within 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {path: path.stat().st_mtime_ns for path in output.glob("runs/*/*/result.json")}
    assert 3 <= len(finished) < 10 and not (output / "comparison.json").exists()

    result = subprocess.run(compare_command(tiny_recipe, output), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"compare: {len(finished)} of 10 runs already finished" in result.stdout
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # not trained again
    assert len(list(output.glob("runs/*/*/result.json"))) == 10

    comparison = json.loads((output / "comparison.json").read_text())
    assert comparison["settings"]["seeds"] == [0, 1] and comparison["settings"]["budget"] == "per-task"
    assert {run["steps"] for run in comparison["runs"]} == {comparison["settings"]["steps"]}  # the planned steps ran
    assert list(comparison["summary"]) == [SINGLE_TASK, "equal", "famo"]
    assert set(comparison["summary"]["famo"]["scores"]) == {"digit", "traits", "ink"}
    table = (output / "comparison.md").read_text()
    assert "| single-task (3 models) |" in table and "| famo |" in table and table in result.stdout + "\n"
    assert (output / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Everything finished: a third run trains nothing and gives the same table.
    again = subprocess.run(compare_command(tiny_recipe, output), env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "compare: 10 of 10 runs already finished" in again.stdout
    assert (output / "comparison.md").read_text() == table


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--methods", "equal,gradnorm"], "unknown balancing method(s) ['gradnorm']"),
        (["--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["--learning_rat", "1e-3"], "unknown command-line argument(s) ['--learning_rat'"),
    ],
)
def test_compare_refuses_bad_options_in_one_line(tiny_recipe, tmp_path, flags, message, capsys):
    assert cli(["compare", str(tiny_recipe), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtl-hf compare: error:") and message in lines[0]


def test_bench_quality_quick_prints_every_setting_and_delta_m_matches_its_runs(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), "--quick", "--output_dir", str(tmp_path)],
        env={**ENV, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "quality.md").read_text()
    for setting, tasks in [("digits", 3), ("shop", 5), ("shop-16px", 5), ("shop+digits", 8)]:
        assert f"### {setting}" in report
        section = report.split(f"### {setting}")[1].split("###")[0]
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
        assert [row.split("|")[1].strip() for row in rows] == [f"single-task ({tasks} models)", "equal", "upgrad"]
        assert all(row.count("|") == tasks + 7 for row in rows)

        # delta_m recomputed here from the runs' own scores, by the formula, without mtl_hf.
        comparison = json.loads((tmp_path / setting / "comparison.json").read_text())
        metrics = comparison["settings"]["tasks"]
        baseline = {
            run["tasks"][0]: run["scores"][run["tasks"][0]]
            for run in comparison["runs"]
            if run["method"] == SINGLE_TASK
        }
        chance = {
            run["tasks"][0]: run["chance"][run["tasks"][0]]
            for run in comparison["runs"]
            if run["method"] == SINGLE_TASK
        }
        weak = sorted(task for task in metrics if baseline[task] <= chance[task] + 0.01)
        assert sorted(comparison["weak_baselines"]) == weak
        counted = [task for task in metrics if task not in weak]
        for run in comparison["runs"]:
            if run["method"] == SINGLE_TASK:
                continue
            if not counted or 0.0 in [baseline[task] for task in counted]:
                assert math.isnan(comparison["summary"][run["method"]]["delta_m"]["mean"])
                continue
            by_hand = sum(-(run["scores"][task] - baseline[task]) / abs(baseline[task]) * 100 for task in counted)
            assert comparison["summary"][run["method"]]["delta_m"]["mean"] == pytest.approx(by_hand / len(counted))
    print(f"bench/quality.py --quick took {time.monotonic() - started:.0f} s")
