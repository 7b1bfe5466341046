"""recipes/accelerate_configs/multi_node.yaml as two "machines" on 127.0.0.1: the demo recipe on two ranks."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "recipes" / "accelerate_configs" / "multi_node.yaml"
REPORTER = ROOT / "tests" / "distributed" / "recipe_rank_report.py"
TRAIN_ROWS = 256


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_machines_on_the_loopback_train_the_demo_in_one_process_group(tmp_path):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    machines = []
    for machine_rank in (0, 1):
        # The README's commands, with the CPU / loopback settings as flags over the shipped config.
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(CONFIG),
            "--machine_rank",
            str(machine_rank),
            "--num_processes",
            "2",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
            str(REPORTER),
            str(tmp_path),
            str(ROOT / "recipes" / "configs" / "demo.yaml"),
            "--output_dir",
            str(tmp_path / "out"),
            "--max_steps",
            "6",
            "--dataset_options",
            json.dumps({"num_rows": TRAIN_ROWS, "eval_rows": 64}),
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
        ]
        machines.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outputs = [machine.communicate(timeout=300)[0] for machine in machines]
    for machine, output in zip(machines, outputs, strict=True):
        assert machine.returncode == 0, output[-4000:]

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for machine_rank, report in enumerate(reports):
        # One process on each machine: local rank 0 on both, global ranks 0 and 1 in a world of 2.
        assert (report["machine_rank"], report["local_rank"], report["rank"]) == (machine_rank, 0, machine_rank)
        assert report["world_size"] == report["mixture_world_size"] == 2
        assert report["mixture_rank"] == report["rank"]  # the mixture shards by global rank, not local rank
        assert report["global_step"] == 6
    assert reports[0]["parameters_sha1"] == reports[1]["parameters_sha1"]
    first, second = (set(report["rows"]) for report in reports)
    assert len(first) == len(second) == TRAIN_ROWS // 2 and first.isdisjoint(second)
    assert first | second == {f"shop:{row}" for row in range(TRAIN_ROWS)}
    assert (tmp_path / "out" / "model.safetensors").exists()  # the main machine saved the model
