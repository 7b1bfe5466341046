"""Two real processes on this CPU (torchrun, gloo): the distributed path end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent / "distributed"


def run_script(script: str, out: Path, *, ranks: int) -> None:
    """Runs tests/distributed/<script> OUT in one process, or under torchrun on `ranks` processes."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    launcher = [sys.executable] if ranks == 1 else [torchrun, "--standalone", "--nproc_per_node", str(ranks)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, str(SCRIPTS / script), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=480, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run_script("train_two_ranks.py", out, ranks=2)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def runs(results):
    return list(zip(*results, strict=True))


def test_both_ranks_train_in_one_world_of_two(two_rank_results):
    for rank0, rank1 in runs(two_rank_results):
        assert rank0["world_size"] == rank1["world_size"] == 2
        assert (rank0["rank"], rank1["rank"]) == (0, 1)
        assert rank0["mixture_world_size"] == 2


def test_ranks_read_disjoint_rows_and_serve_the_same_tasks_each_step(two_rank_results):
    for rank0, rank1 in runs(two_rank_results):
        assert rank0["tasks_per_step"] == rank1["tasks_per_step"], rank0["run"]
        for source, rows in rank0["first_pass"].items():
            other = rank1["first_pass"][source]
            assert rows and len(rows) == len(other) and len(set(rows)) == len(rows)
            assert set(rows).isdisjoint(other), (rank0["run"], source)


def test_parameters_and_task_weights_end_identical_on_both_ranks(two_rank_results):
    assert {rank0["run"]["weighting"] for rank0, _ in runs(two_rank_results)} == {
        "famo",
        "pcgrad",
        "upgrad",
        "nash_mtl",
    }
    for rank0, rank1 in runs(two_rank_results):
        assert rank0["parameters_sha1"] == rank1["parameters_sha1"], rank0["run"]
        assert rank0["weighting_state"] == rank1["weighting_state"]
        assert rank0["losses_logged"] == rank1["losses_logged"]  # logged losses are the ranks' average
    famo = [rank0 for rank0, _ in runs(two_rank_results) if rank0["run"]["weighting"] == "famo"]
    assert all(len(set(r["weighting_state"]["logits"])) > 1 for r in famo)  # FAMO's weights moved from uniform


@pytest.fixture(scope="module")
def union_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("union")
    run_script("union_batch.py", out, ranks=1)
    run_script("union_batch.py", out, ranks=2)
    return {name: torch.load(out / f"{name}.pt") for name in ("world1_rank0", "world2_rank0", "world2_rank1")}


def test_a_frozen_backbone_stays_put_on_every_rank_and_an_unfrozen_one_trains_alike(union_results):
    """freeze_backbone: no rank's backbone moves; LP-FT (unfrozen at step 3, with layer decay and a head rate, or
    a gradient method): the backbone trains after the step on both ranks as in one process (checked above)."""
    for world in ("world1_rank0", "world2_rank0", "world2_rank1"):
        runs = union_results[world]
        assert not runs["equal-homogeneous-freeze_backbone=True"]["backbone_moved"], world
        assert runs[
            "equal-mixed-freeze_backbone=True-unfreeze_backbone_at_step=3-layer_decay=0.5-head_learning_rate=0.05"
        ]["backbone_moved"], world
        assert runs["pcgrad-mixed-parameters-freeze_backbone=True-unfreeze_backbone_at_step=3"]["backbone_moved"], world


def test_two_ranks_on_half_batches_reach_the_parameters_of_one_process_on_the_union(union_results):
    """Loss and gradient paths, both gradient spaces, mixed and homogeneous batches, a task with targets
    on one rank only and tasks with no target in a step, a frozen backbone, LP-FT, activation checkpointing with
    unused heads, weighted means (balanced class weights with label smoothing, positive weights) for a loss and a
    gradient method: 6 SGD steps, equal within float32 rounding."""
    single, rank0, rank1 = (union_results[n] for n in ("world1_rank0", "world2_rank0", "world2_rank1"))
    assert len(single) == 22 and sum(name.endswith("-loss_options") for name in single) == 3
    for name, run in single.items():
        assert run["world_size"] == 1 and rank0[name]["world_size"] == rank1[name]["world_size"] == 2
        assert torch.equal(rank0[name]["parameters"], rank1[name]["parameters"]), name
        torch.testing.assert_close(rank0[name]["parameters"], run["parameters"], rtol=1e-5, atol=1e-6, msg=name)
        # The logs agree too: per-task losses over both ranks' targets, only where a task had targets.
        for one, two in zip(run["logs"], rank0[name]["logs"], strict=True):
            assert set(one) == set(two), name
            for key in one:
                if key.startswith(("loss_", "weight_")):
                    assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), (name, key)
    mixed = single["equal-mixed"]["logs"]
    assert "loss_digit" not in mixed[0] and "loss_digit" in mixed[1]  # step 0 has no digit target anywhere


@pytest.fixture(scope="module")
def evaluation_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    run_script("evaluate_ranks.py", out, ranks=1)
    run_script("evaluate_ranks.py", out, ranks=2)
    return {
        name: json.loads((out / f"{name}.json").read_text())
        for name in ("world1_rank0", "world2_rank0", "world2_rank1")
    }


def test_two_ranks_evaluate_exactly_as_one_process(evaluation_results):
    """41 + 17 map-style rows and a 25-row stream, batches of 4 on 2 ranks: the same rows, in the same order, with
    the same logits and the same metrics as one process (padding never counted)."""
    alone, rank0, rank1 = (evaluation_results[n] for n in ("world1_rank0", "world2_rank0", "world2_rank1"))
    assert (rank0["world_size"], rank1["world_size"]) == (2, 2)
    assert rank0["predictions"].keys() == alone["predictions"].keys()
    assert len(alone["predictions"]["category"]) == 41 + 25 and len(alone["predictions"]["digit"]) == 17
    for ranked in (rank0, rank1):  # every rank gets the gathered results
        for task, values in alone["predictions"].items():
            np.testing.assert_allclose(ranked["predictions"][task], values, rtol=1e-5, atol=1e-6, err_msg=task)
            assert ranked["label_ids"][task] == alone["label_ids"][task], task
        assert ranked["metrics"].keys() == alone["metrics"].keys()
        for key, value in alone["metrics"].items():
            assert ranked["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_every_rank_makes_the_same_number_of_forwards(evaluation_results):
    """Rank 0 holds 21 shop rows (6 batches), rank 1 20 (5); digits 9 and 8 (3 and 2); the stream 13 and 12 (4 and
    3): rank 1 runs a padding batch at the end of each source, since FSDP needs every rank in every forward."""
    rank0, rank1 = evaluation_results["world2_rank0"], evaluation_results["world2_rank1"]
    assert rank0["forwards"] == rank1["forwards"] == 6 + 3 + 4
    assert evaluation_results["world1_rank0"]["forwards"] == 11 + 5 + 7
