"""Two real processes on this CPU (torchrun, gloo): the distributed path end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "distributed" / "train_two_ranks.py"


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(out)],
        capture_output=True, text=True, timeout=480, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
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
    for rank0, rank1 in runs(two_rank_results):
        assert rank0["parameters_sha1"] == rank1["parameters_sha1"], rank0["run"]
        assert rank0["weights"] == rank1["weights"]
        assert rank0["losses_logged"] == rank1["losses_logged"]  # logged losses are the ranks' average
    famo = [rank0 for rank0, _ in runs(two_rank_results) if rank0["run"]["weighting"] == "famo"]
    assert any(len(set(r["weights"])) > 1 for r in famo)  # FAMO's weights moved away from uniform
