"""Faults with real signals and real processes: a run killed with SIGKILL (one process; one rank of two)
while a checkpoint is half-written resumes from the last complete one and ends with the parameters
of an uninterrupted run; one rank raising ends every rank within a bounded time, showing its error.
Each takes under a minute (26 s, 36 s and 10 s on 2 cores), so they run in the default test command."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModel

from tests.training_helpers import assert_same_parameters

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "tests" / "fault_run.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
# Same float32 kernels on the same thread count, so the only differences would come from the resume
# itself (optimizer, scheduler, RNG, mixture position, FAMO's state); 1e-5 allows reordered sums.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, SCRIPT]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--monitor_interval",
        "0.5",
        SCRIPT,
    ]


def run(processes: int, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(processes), *arguments], env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def wait_for(paths: list[Path], process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run never reached the checkpoint"
        time.sleep(0.2)


# Two processes: 40 s, the same checkpoint code as one process plus the multi-rank launch that the other
# two-rank fault tests below exercise; run by `make test-slow`.
@pytest.mark.parametrize("processes", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_while_saving_then_resume_gives_the_uninterrupted_parameters(tmp_path, processes):
    straight = run(processes, str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]

    out, marker = tmp_path / "killed", tmp_path / "saving"
    arguments = [*command(processes), str(out), "--pause_at_save", "6", "--marker", str(marker)]
    process = subprocess.Popen(arguments, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    markers = [Path(f"{marker}.{rank}") for rank in range(processes)]
    wait_for(markers, process)
    victim = int(markers[-1].read_text())  # the last rank: with one process, the only one
    os.kill(victim, signal.SIGKILL)
    try:
        process.wait(timeout=60)  # with two ranks the launcher ends the survivor itself
    finally:
        process.kill()
    assert process.returncode != 0
    assert (out / "checkpoint-6" / "model.safetensors").exists()  # half-written: model saved, state not
    assert not (out / "checkpoint-6" / "multitask_state.json").exists()

    resumed = run(processes, str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-6 is incomplete" in resumed.stderr and "resuming from" in resumed.stderr
    uninterrupted = AutoModel.from_pretrained(tmp_path / "straight" / "final")
    assert_same_parameters(AutoModel.from_pretrained(out / "final"), uninterrupted, **TOLERANCE)


def test_one_rank_raising_ends_every_rank_within_seconds_showing_the_error(tmp_path):
    started = time.monotonic()
    result = run(2, str(tmp_path / "out"), "--fail_on_rank", "1", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "rank 1 cannot read its batch (a test failure)" in result.stderr
    assert elapsed < 90, elapsed  # the survivor did not wait out its collective's timeout


def test_an_overflow_that_only_one_rank_sees_stops_both_ranks_at_the_same_step(tmp_path):
    result = run(2, str(tmp_path / "out"), "--overflow_on_rank", "0", timeout=120)
    assert result.returncode != 0
    # The guard reads the losses after the ranks' reduction, so rank 1 stops at step 3 too, not in a collective.
    for rank in (0, 1):
        assert f"[rank{rank}]: FloatingPointError: step 3: non-finite loss in task 'size'" in result.stderr


def test_skipped_images_on_two_ranks_are_counted_once_and_keep_the_ranks_in_step(tmp_path):
    import json

    from tests.test_bad_images import GOOD_ROWS, salted_rows

    salted_rows().to_parquet(str(tmp_path / "salted.parquet"))
    # 6 steps x batch 8 x 2 ranks = 96 rows = 2 passes over the 48: each broken photo is met twice in all, and
    # counted once (distinct photos, their rows gathered over the two ranks).
    result = run(
        2, str(tmp_path / "out"), "--salted", str(tmp_path / "salted.parquet"), "--max_steps", "6", timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.split("TRAIN_METRICS", 1)[1].splitlines()[0])
    assert metrics["bad_images_catalogue"] == 2 and GOOD_ROWS == 48
    # Gloo's threads outliving the interpreter abort a rank at exit, now and then (SIGABRT, "terminate called
    # without an active exception"): a run that ended well destroys its process group while Python is alive.
    for rank in (0, 1):
        assert f"PROCESS_GROUP_AT_EXIT rank {rank}: initialized=False" in result.stdout


EXIT_SCRIPT = """
import atexit, sys
import torch.distributed as dist
from mtl_hf.utils.collectives import destroy_process_group_at_exit

atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))  # runs last
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
destroy_process_group_at_exit()
destroy_process_group_at_exit()  # twice registers once: a second destroy would raise
if sys.argv[1] == "crash":
    raise RuntimeError("a rank fails")
"""


@pytest.mark.parametrize("ending, destroyed", [("normal", True), ("crash", False)])
def test_the_process_group_is_destroyed_at_a_normal_exit_only(ending, destroyed):
    # After an uncaught exception the other ranks may wait in a collective; destroying the group then can hang.
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, ending], env=ENV, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == (0 if ending == "normal" else 1), result.stderr[-2000:]
    assert f"initialized at exit: {not destroyed}" in result.stdout
    assert ("a rank fails" in result.stderr) == (ending == "crash")
