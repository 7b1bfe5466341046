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
from mtl_hf.commands.compare.budgets import sweep_candidates
from mtl_hf.commands.compare.report import best_rows
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


def _result(method, tasks, seed, scores, seconds, chance=None, validation=None, validation_chance=None):
    return {
        "method": method,
        "tasks": tasks,
        "seed": seed,
        "scores": scores,
        **({"chance": chance} if chance is not None else {}),
        **({"validation_scores": validation} if validation is not None else {}),
        **({"validation_chance": validation_chance} if validation_chance is not None else {}),
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


def test_a_baseline_at_chance_on_validation_rows_is_marked_and_left_out_of_delta_m():
    # The own-catalogue case: a single-task price model no better than chance swamped delta_m. Which tasks are left
    # out is decided on the validation rows: here price is at chance on them, category is not, and the test rows
    # (where category's baseline happens to be at chance and price's is not) choose nothing.
    metrics = {"category": "accuracy", "price": "mae"}
    chance = {"category": 0.35, "price": 10.0}
    validation_chance = {"category": 0.3, "price": 12.0}
    results = [
        _result(SINGLE_TASK, ["category"], 0, {"category": 0.35}, 2.0, chance, {"category": 0.8}, validation_chance),
        _result(SINGLE_TASK, ["price"], 0, {"price": 4.0}, 2.0, chance, {"price": 11.95}, validation_chance),
        _result("equal", ["category", "price"], 0, {"category": 0.385, "price": 5.0}, 2.0, chance),
    ]
    weak = weak_baselines(results, metrics)
    assert weak == {"price": "single-task validation mae 11.950 is at or below chance 12.000"}
    summary = summarise(results, ["equal"], metrics, left_out=list(weak))
    assert summary["equal"]["delta_m"]["mean"] == pytest.approx(-10.0)  # category alone: -(0.385-0.35)/0.35
    with_price = (-10.0 + (5.0 - 4.0) / 4.0 * 100) / 2  # MAE is lower-is-better: +25 %
    assert summary["equal"]["delta_m_all_tasks"]["mean"] == pytest.approx(with_price)

    settings = {"tasks": metrics, "seeds": [0], "budget_rule": "per-task: ..."}
    table = markdown_table({"settings": settings, "summary": summary, "weak_baselines": weak})
    header = [cell.strip() for cell in table.splitlines()[2].strip("|").split("|")]
    assert header[1:3] == ["category accuracy", "price mae (at chance, left out of delta_m)"]
    assert "one seed, so no spread" in table and "+-" not in table
    assert "- price: single-task validation mae 11.950 is at or below chance 12.000" in table
    assert f"- delta_m % with them: equal {with_price:+.2f}" in table

    # An error 2 % under chance counts (the margin is 1 % of the chance error); no validation rows: nothing left
    # out; every task at chance leaves no delta_m.
    assert weak_baselines([{**results[1], "validation_scores": {"price": 11.75}}], {"price": "mae"}) == {}
    unvalidated = [{k: v for k, v in run.items() if not k.startswith("validation")} for run in results]
    assert weak_baselines(unvalidated, metrics) == {}
    everything = summarise(results, ["equal"], metrics, left_out=["category", "price"])
    assert math.isnan(everything["equal"]["delta_m"]["mean"])


def test_the_best_row_is_marked_only_where_the_seeds_separate_it_and_ties_are_said():
    def summary(**deltas):
        rows = {name: {"delta_m": {"mean": mean, "std": std}} for name, (mean, std) in deltas.items()}
        return {SINGLE_TASK: {"delta_m": {"mean": 0.0, "std": 0.0}}, **rows}

    assert best_rows(summary(a=(-5.0, 1.0), b=(-2.0, 1.5), c=(3.0, 0.5))) == {"a"}  # -4 < -3.5
    assert best_rows(summary(a=(-5.0, 1.0), b=(-3.5, 1.0), c=(3.0, 0.5))) == {"a", "b"}  # -4 >= -4.5
    assert best_rows(summary(a=(math.nan, math.nan), b=(1.0, 0.1))) == {"b"}

    def table(seeds, **deltas):
        rows = summary(**deltas)
        for row in rows.values():
            row.update(
                scores={"x": {"mean": 0.5, "std": 0.0}},
                train_seconds={"mean": 1.0, "std": 0.0},
                train_samples_per_second=1.0,
                peak_memory_mb=1.0,
                time_vs_single_task=1.0,
            )
        settings = {"tasks": {"x": "accuracy"}, "seeds": seeds, "budget_rule": "per-task"}
        return markdown_table({"settings": settings, "summary": rows})

    separated = table([0, 1, 2], a=(-5.0, 1.0), b=(-2.0, 1.5))
    assert "**-5.00 +- 1.00**" in separated and "tied" not in separated.lower()
    tied = table([0, 1, 2], a=(-5.0, 1.0), b=(-3.5, 1.0))
    assert "-5.00 +- 1.00 (tied)" in tied and "-3.50 +- 1.00 (tied)" in tied and "**" not in tied
    assert "Tied for the lowest delta_m: a, b" in tied
    single = table([0], a=(-5.0, 0.0), b=(-2.0, 0.0))
    assert "**" not in single and "No row is marked best: one seed" in single


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


def test_sweeps_plan_their_candidates_once_and_convergence_runs_stop_early():
    runs = plan_runs(["a", "b"], ["equal", "equal_lr_sweep", "static_sweep"], [0], 90, "convergence", 0.003)
    names = [run.name for run in runs]
    # equal is the first candidate of both sweeps, and trained once
    assert names[:5] == ["single-a", "single-b", "multi-equal", "multi-equal~lr-0.001", "multi-equal~lr-0.009"]
    assert len(names) == len(set(names)) == 2 + 3 + 4
    assert all(run.early_stopping and run.max_steps == 90 for run in runs)
    static = [run for run in runs if run.method == "static"]
    vectors = [tuple(weight for _, weight in run.weights) for run in static]
    assert len(set(vectors)) == 4 and all(len(set(vector)) > 1 for vector in vectors)
    assert all(weight in (1 / 3, 1.0, 3.0) for vector in vectors for weight in vector)
    # the same candidates for every seed and every run of the bench (a fixed draw)
    assert sweep_candidates("static_sweep", ["a", "b"], 0.003) == sweep_candidates("static_sweep", ["a", "b"], 0.1)
    assert not any(run.early_stopping for run in plan_runs(["a"], ["equal"], [0], 9, "per-task"))


def _candidate(method, seed, test, validation, seconds, variant="", weights=None):
    return {
        **_result(method, ["a", "b"], seed, test, seconds),
        "variant": variant,
        "weights": weights,
        "validation_scores": validation,
        "steps": 10,
    }


def test_a_sweep_reports_its_best_candidate_on_validation_rows_costed_as_all_of_them():
    metrics = {"a": "accuracy", "b": "accuracy"}
    results = [
        {**_result(SINGLE_TASK, ["a"], 0, {"a": 0.5}, 2.0), "validation_scores": {"a": 0.5}, "steps": 10},
        {**_result(SINGLE_TASK, ["b"], 0, {"b": 0.8}, 2.0), "validation_scores": {"b": 0.4}, "steps": 10},
        # validation delta_m: plain -(0.4-0.5)/0.5, -(0.4-0.4)/0.4 -> +10 %; lr-0.001: -(0.6-0.5)/0.5 ... -> -20 %
        _candidate("equal", 0, {"a": 0.7, "b": 0.8}, {"a": 0.4, "b": 0.4}, 1.0),
        _candidate("equal", 0, {"a": 0.5, "b": 0.8}, {"a": 0.6, "b": 0.44}, 1.5, variant="lr-0.001"),
        _candidate("equal", 0, {"a": 0.1, "b": 0.1}, {"a": 0.1, "b": 0.1}, 2.5, variant="lr-0.009"),
        _candidate("static", 0, {"a": 0.9, "b": 0.9}, {"a": 0.5, "b": 0.4}, 4.0, "w-1-3", {"a": 1.0, "b": 3.0}),
    ]
    summary = summarise(results, ["equal", "equal_lr_sweep", "static_sweep"], metrics)
    # picked on validation (lr-0.001), though the plain run scores better on the test rows
    assert summary["equal_lr_sweep"]["picked"] == ["lr-0.001"]
    assert summary["equal_lr_sweep"]["scores"]["a"]["mean"] == pytest.approx(0.5)
    assert summary["equal_lr_sweep"]["delta_m"]["mean"] == pytest.approx(0.0)  # its test scores equal the baselines
    assert summary["equal_lr_sweep"]["train_seconds"]["mean"] == pytest.approx(1.0 + 1.5 + 2.5)
    assert summary["equal_lr_sweep"]["time_vs_single_task"] == pytest.approx(5.0 / 4.0)
    assert summary["equal_lr_sweep"]["steps"]["mean"] == 30
    # static sweep: the plain equal run (validation +10 %) against w-1-3 (validation 0 %): w-1-3, at 1 + 4 s
    assert summary["static_sweep"]["picked"] == ["w-1-3"] and summary["static_sweep"]["candidates"] == 2
    assert summary["static_sweep"]["train_seconds"]["mean"] == pytest.approx(5.0)
    assert summary["equal"]["scores"]["a"]["mean"] == pytest.approx(0.7)  # the plain run alone
    table = markdown_table(
        {
            "settings": {"tasks": metrics, "seeds": [0], "budget_rule": "r", "sweeps": {"static_sweep": "s"}},
            "summary": summary,
            "runs": results,
        }
    )
    assert "| equal_lr_sweep (3 runs; picked lr-0.001) |" in table and "- static_sweep: s" in table


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
        (["--patience", "0"], "--patience must be at least 1, got 0"),
        (["--validation_fraction", "1"], "--validation_fraction must be in [0, 1), got 1.0"),
        (["--budget", "convergence", "--validation_fraction", "0"], "needs validation rows"),
        (["--methods", "static_sweep", "--validation_fraction", "0"], "needs validation rows"),
        (["--learning_rat", "1e-3"], "unknown command-line argument(s) ['--learning_rat'"),
    ],
)
def test_compare_refuses_bad_options_in_one_line(tiny_recipe, tmp_path, flags, message, capsys):
    assert cli(["compare", str(tiny_recipe), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtl-hf compare: error:") and message in lines[0]


def test_convergence_budget_stops_each_model_on_its_validation_score_and_restores_its_best(tiny_recipe, tmp_path):
    output = tmp_path / "converged"
    command = compare_command(tiny_recipe, output, "--budget", "convergence", "--patience", "1", "--eval_steps", "1")
    command[command.index("equal,famo")] = "equal"
    command[command.index("--seeds") + 1] = "1"
    result = subprocess.run(
        [*command, "--num_train_epochs", "10"], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = json.loads((output / "comparison.json").read_text())
    cap = comparison["settings"]["steps"]
    assert cap == 10  # the recipe's schedule is the cap: 128 rows less 13 for validation, one step an epoch
    stopped_early = 0
    for run in comparison["runs"]:
        curve = run["validation_curve"]
        assert [step for step, _ in curve] == list(range(1, run["steps"] + 1))  # one evaluation a step
        best_step, best = max(curve, key=lambda point: (point[1], -point[0]))
        assert run["best_step"] == best_step
        # the restored model is the best one: scored again on the validation rows, it gives the best score
        assert run["validation_relative_score"] == pytest.approx(best, abs=1e-6)
        if run["steps"] < cap:
            stopped_early += 1
            assert run["steps"] == best_step + 1  # patience 1: the first evaluation without improvement
    assert stopped_early >= 1
    assert not list(output.glob("runs/*/*/checkpoint-*"))  # checkpoints removed once the best is restored
    table = (output / "comparison.md").read_text()
    assert "convergence: every model trains until its own validation score" in table
    # Which rows were scored is said: the recipe's evaluation rows (64 of the digits' held-out rows here).
    assert (
        comparison["settings"]["scored_rows"].endswith("(64 rows)")
        and "Scored on the recipe's evaluation rows: " in table
    )


def _by_hand_delta_m(scores, baseline, tasks, metrics):
    """mean over tasks of the relative change, negated where higher is better (MAE: lower is better)."""
    signs = {task: 1.0 if metrics[task] == "mae" else -1.0 for task in tasks}
    return sum(signs[t] * (scores[t] - baseline[t]) / abs(baseline[t]) * 100 for t in tasks) / len(tasks)


# One setting by default (about a minute); both of the published ones, each with its own pretrained backbone, in slow.
QUICK_SETTINGS = {"digits": 3, "shop-16px": 5}
PRETRAINED_ARCHITECTURES = {"digits": "shapes-vit-32px-p8", "shop-16px": "shapes-vit-16px-p4"}


@pytest.mark.parametrize("names", [["digits"], pytest.param(["digits", "shop-16px"], marks=pytest.mark.slow)])
def test_bench_quality_quick_prints_every_setting_start_and_budget_and_delta_m_matches_its_runs(tmp_path, names):
    started = time.monotonic()
    command = [sys.executable, str(REPO / "bench" / "quality.py"), "--quick", "--output_dir", str(tmp_path)]
    result = subprocess.run(
        [*command, "--settings", ",".join(names)],
        env={**ENV, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "quality.md").read_text()
    for setting, tasks in ((name, QUICK_SETTINGS[name]) for name in names):
        for budget in ("convergence", "total"):
            for start in ("scratch", "pretrained"):
                title = f"### {setting}, {start} start, budget {budget}"
                assert title in report
                section = report.split(title)[1].split("###")[0]
                rows = [line for line in section.splitlines() if line.startswith("| ") and "| method |" not in line]
                labels = [row.split("|")[1].strip() for row in rows]
                assert labels[:2] == [f"single-task ({tasks} models)", "equal"]
                assert labels[2].startswith("equal_lr_sweep (3 runs; picked ") and len(labels) == 3
                assert all(row.count("|") == tasks + 8 for row in rows)
                _check_comparison_against_its_runs(tmp_path / setting / start / budget / "comparison.json", budget)
        assert f"### {setting}: delta_m % (time vs the single-task models) at a glance" in report
        assert f"### {setting}: what the pretrained start buys (convergence budget)" in report
        assert (tmp_path / f"quality-{setting}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Built once per architecture (digits: 32 px patch 8; shop-16px: 16 px patch 4), then reused.
    built = sorted(path.name for path in (tmp_path / "pretrained").glob("*") if not path.name.endswith("-run"))
    assert built == sorted(PRETRAINED_ARCHITECTURES[name] for name in names)
    print(f"bench/quality.py --quick took {time.monotonic() - started:.0f} s")


def _check_comparison_against_its_runs(path: Path, budget: str) -> None:
    """delta_m, the sweep's pick and its cost, recomputed from the run files by the formula, without mtl_hf."""
    comparison = json.loads(path.read_text())
    metrics = comparison["settings"]["tasks"]
    runs = comparison["runs"]
    singles = {run["tasks"][0]: run for run in runs if run["method"] == SINGLE_TASK}
    baseline = {task: run["scores"][task] for task, run in singles.items()}
    # Weak baselines: at or below chance on the VALIDATION rows (MAE, lower is better: within 1 % of chance).
    on_validation = {task: run["validation_scores"][task] for task, run in singles.items()}
    chance = {task: run["validation_chance"][task] for task, run in singles.items()}
    weak = sorted(
        task
        for task in metrics
        if (
            chance[task] - on_validation[task] <= 0.01 * abs(chance[task])
            if metrics[task] == "mae"
            else on_validation[task] - chance[task] <= 0.01
        )
    )
    assert sorted(comparison["weak_baselines"]) == weak
    counted = [task for task in metrics if task not in weak]
    steps = comparison["settings"]["steps"]
    for run in runs:
        assert (run["steps"] <= steps) if budget == "convergence" else (run["steps"] == run["max_steps"])
    summary = comparison["summary"]
    candidates = [run for run in runs if run["method"] == "equal"]
    assert len(candidates) == 3 and sum(run["variant"] == "" for run in candidates) == 1
    validation = {task: singles[task]["validation_scores"][task] for task in counted}
    if counted and 0.0 not in validation.values():
        picked = min(
            candidates, key=lambda run: _by_hand_delta_m(run["validation_scores"], validation, counted, metrics)
        )
        assert summary["equal_lr_sweep"]["picked"] == [picked["variant"] or "plain"]
    assert summary["equal_lr_sweep"]["train_seconds"]["mean"] == pytest.approx(
        sum(run["train_seconds"] for run in candidates)
    )
    for name, run in (("equal", next(run for run in candidates if run["variant"] == "")),):
        if not counted or 0.0 in [baseline[task] for task in counted]:
            assert math.isnan(summary[name]["delta_m"]["mean"])
            continue
        assert summary[name]["delta_m"]["mean"] == pytest.approx(
            _by_hand_delta_m(run["scores"], baseline, counted, metrics)
        )


@pytest.mark.parametrize("saves", [True, False])
def test_checkpoints_are_removed_by_the_saving_rank_after_every_rank_restored_the_best(
    tiny_recipe, tmp_path, monkeypatch, saves
):
    """Under DDP every rank loads the best checkpoint at the end of train(); the folders go only after a barrier,
    and only on the rank that wrote them (should_save), followed by another barrier before anything reads on."""
    import shutil

    from accelerate import Accelerator

    from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
    from mtl_hf.commands.compare import runner

    events, train = [], MultiTaskTrainer.train

    def train_then_note(self, *args, **kwargs):
        result = train(self, *args, **kwargs)
        events.append("trained")
        return result

    real_rmtree = shutil.rmtree
    monkeypatch.setattr(MultiTaskTrainer, "train", train_then_note)
    monkeypatch.setattr(Accelerator, "wait_for_everyone", lambda self: events.append("barrier"))
    monkeypatch.setattr(
        runner.shutil, "rmtree", lambda path, **kwargs: (events.append("removed"), real_rmtree(path, **kwargs))
    )
    if not saves:  # a rank that did not write the checkpoints
        monkeypatch.setattr(MultiTaskTrainingArguments, "should_save", property(lambda self: False))
    output = tmp_path / "converged"
    command = compare_command(tiny_recipe, output, "--budget", "convergence", "--patience", "1", "--eval_steps", "1")
    args = command[command.index("compare") :]
    args[args.index("equal,famo")] = "equal"
    args[args.index("--seeds") + 1] = "1"
    assert cli([*args, "--num_train_epochs", "3"]) == 0
    runs = [index for index, event in enumerate(events) if event == "trained"]
    assert len(runs) == 4  # three single-task models and one multi-task model
    for start in runs:
        after = events[start + 1 :]
        assert after[0] == "barrier", after  # every rank has restored the best checkpoint
        removals = next(index for index, event in enumerate(after[1:], 1) if event != "removed") - 1
        assert (removals > 0) == saves  # by the rank that saved them only
        assert after[1 + removals] == "barrier"  # and nobody goes on before they are gone
    assert bool(list(output.glob("runs/*/*/checkpoint-*"))) != saves


def test_a_convergence_table_says_how_many_runs_the_step_cap_ended():
    def run(method, steps, seed):
        return {"method": method, "steps": steps, "max_steps": 800, "seed": seed}

    def table(runs):
        row = {
            "delta_m": {"mean": 0.0, "std": 0.0},
            "scores": {"x": {"mean": 0.5, "std": 0.0}},
            "train_seconds": {"mean": 1.0, "std": 0.0},
            "train_samples_per_second": 1.0,
            "peak_memory_mb": 1.0,
            "time_vs_single_task": 1.0,
        }
        settings = {"tasks": {"x": "accuracy"}, "seeds": [0, 1], "budget_rule": "convergence", "budget": "convergence"}
        return markdown_table({"settings": settings, "summary": {SINGLE_TASK: row, "equal": row}, "runs": runs})

    # 2 of 3 multi-task runs stopped at the cap, no single-task run did: 2 of 6 in all, 33%, above the 10% aimed at.
    capped = [run(SINGLE_TASK, 320, seed) for seed in range(3)] + [run("equal", 800, 0), run("equal", 800, 1)]
    capped.append(run("equal", 560, 2))
    text = table(capped)
    assert (
        "Runs that reached the step cap: single-task 0 of 3, equal 2 of 3; 2 of 6 in all (33%), NOT under 10%" in text
    )
    converged = [run(SINGLE_TASK, 320, seed) for seed in range(10)] + [run("equal", 799, seed) for seed in range(10)]
    assert "0 of 20 in all (0%), under 10%: the patience rule, not the cap, ended the runs" in table(converged)
    # Other budgets stop at their step count by design: nothing to say.
    assert "step cap" not in markdown_table(
        {
            "settings": {"tasks": {}, "seeds": [0], "budget_rule": "per-task", "budget": "per-task"},
            "summary": {},
            "runs": capped,
        }
    )
