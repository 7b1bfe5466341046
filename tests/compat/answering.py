"""Running tests/compat/answer_without_mtl_hf.py on a saved model, in this venv or in a compat environment (one
supported transformers, no mtl_hf), and reading its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENVS = Path(os.environ.get("MTL_HF_COMPAT_ENVS", Path(__file__).resolve().parents[2] / ".cache" / "compat"))
ANSWER = Path(__file__).resolve().parent / "answer_without_mtl_hf.py"
THIS_VENV = "this venv's"


def answer_without_mtl_hf(model: Path, inputs: Path, photo: Path, transformers_version: str, cwd: Path) -> dict:
    """The report (logits, pipeline and handler answers) of `model` where mtl_hf cannot be imported, on this venv's
    transformers or the compat environment `transformers_version` ("lowest", "newest"); skipped where that
    environment was not built (failed in CI, which builds it)."""
    command, env = [sys.executable], {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    if transformers_version != THIS_VENV:
        environment = ENVS / transformers_version
        if not (environment / "transformers").is_dir():
            message = f"no {environment}: `make compat` builds the environments with the supported transformers"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
        command.append("-S")  # nothing of this venv's site-packages: only the environment and its torch
        env["PYTHONPATH"] = f"{environment}{os.pathsep}{ENVS / 'torch'}"
    completed = subprocess.run(
        [*command, str(ANSWER), str(model), str(inputs), str(photo)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])
