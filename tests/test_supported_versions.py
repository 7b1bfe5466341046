"""The versions the package claims are the versions it is tested on.

A saved model is loaded where mtl_hf is not installed, on the lowest and the newest transformers that its
requirements allow (`make compat` builds both environments; CI fails where they are missing), and answers as the
package does: its logits, its remote-code pipeline and its Inference Endpoints handler. The Python floor is held by
`vermin` in `make lint`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from transformers import ViTConfig, pipeline

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, load_shop_dataset
from mtl_hf.models.mtl_vit.saving_mtl_vit import ENDPOINT_REQUIREMENTS

from .compat.build_envs import lowest_version, transformers_requirement

ROOT = Path(__file__).resolve().parents[1]
ENVS = Path(os.environ.get("MTL_HF_COMPAT_ENVS", ROOT / ".cache" / "compat"))
ANSWER = Path(__file__).resolve().parent / "compat" / "answer_without_mtl_hf.py"


def test_one_transformers_range_everywhere():
    """pyproject, the saved model's requirements.txt (which the card and handler.py point to) and the compat
    environments read one requirement."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "transformers"]
    assert [str(r.specifier) for r in declared] == [str(transformers_requirement().specifier)]
    assert any(r.startswith("transformers") for r in ENDPOINT_REQUIREMENTS)
    assert project["requires-python"] == ">=3.10"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    tasks = [
        {"name": "category", "type": "classification", "labels": ["shirt", "shoe", "bag"]},
        {"name": "tags", "type": "multilabel", "labels": ["red", "striped"]},
        {"name": "price", "type": "regression"},
    ]
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=tasks)).eval()
    model.save_pretrained(folder / "model")
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder / "model")
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(pixel_values, folder / "inputs.pt")
    photo = folder / "photo.png"
    load_shop_dataset(1)[0]["image"].save(photo)
    with torch.no_grad():
        logits = {task: value.tolist() for task, value in model(pixel_values).logits.items()}
    classify = pipeline("multi-task-image-classification", model=str(folder / "model"))
    return folder, logits, classify(str(photo)), classify(str(photo), top_k=1)


@pytest.mark.parametrize("which", ["lowest", "newest"])
def test_a_saved_model_answers_without_mtl_hf_on_the_supported_transformers(which, saved):
    environment = ENVS / which
    if not (environment / "transformers").is_dir():
        message = f"no {environment}: `make compat` builds the environments with the supported transformers"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    folder, logits, answers, top_answers = saved
    completed = subprocess.run(
        # -S: nothing of this venv's site-packages; only the environment and the torch it links.
        [
            sys.executable,
            "-S",
            str(ANSWER),
            str(folder / "model"),
            str(folder / "inputs.pt"),
            str(folder / "photo.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{environment}{os.pathsep}{ENVS / 'torch'}", "HF_HUB_OFFLINE": "1"},
        cwd=folder,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["transformers_file"].startswith(str(environment))
    if which == "lowest":
        assert Version(report["transformers"]) == Version(lowest_version(transformers_requirement()))
    else:
        assert report["transformers"] in transformers_requirement().specifier
    for task, values in logits.items():
        assert torch.allclose(torch.tensor(report["logits"][task]), torch.tensor(values), atol=1e-5), task
    assert report["pipeline"]["schema_version"] == answers["schema_version"] == 1
    for task, expected in answers["answers"].items():
        shown = report["pipeline"]["answers"][task]
        assert shown.get("label", shown.get("labels")) == expected.get("label", expected.get("labels")), task
        if "value" in expected:
            assert shown["value"] == pytest.approx(expected["value"], abs=1e-5), task
        for got, want in zip(shown.get("scores", []), expected.get("scores", []), strict=True):
            assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-5), task
    assert set(report["handler"]["answers"]) == set(top_answers["answers"])
    for task, expected in top_answers["answers"].items():  # the handler was asked for top_k 1
        assert report["handler"]["answers"][task].get("scores") == expected.get("scores"), task
