"""What mtl_hf 0.1.0 saved still works: its model loads (with and without the package) and gives the same
logits, and its checkpoint resumes to the parameters its own uninterrupted run reached.

The fixtures were written by 0.1.0 itself (tests/fixtures/release_0_1_0/make_fixtures.py, run at commit 8266b33).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

import mtl_hf  # noqa: F401  (registers the Auto classes)
from mtl_hf import MultiTaskTrainer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release_0_1_0"
LOADER = Path(__file__).resolve().parent / "hub" / "load_without_mtl_hf.py"

sys.path.insert(0, str(FIXTURES))
import make_fixtures  # noqa: E402  (the same sources, model and arguments as the run that wrote the checkpoint)

sys.path.remove(str(FIXTURES))


def recorded_outputs():
    recorded = load_file(str(FIXTURES / "model" / "model_outputs.safetensors"))
    pixel_values = recorded.pop("pixel_values")
    return pixel_values, {key.removeprefix("logits."): value for key, value in recorded.items()}


def test_the_old_model_loads_with_the_package_and_gives_its_logits():
    pixel_values, expected = recorded_outputs()
    model = AutoModel.from_pretrained(FIXTURES / "model").eval()
    assert type(model) is mtl_hf.MultiTaskViTModel
    with torch.no_grad():
        logits = model(pixel_values).logits
    assert set(logits) == set(expected) == {"category", "tags", "colour", "size"}
    for task, value in expected.items():
        torch.testing.assert_close(logits[task], value, rtol=1e-5, atol=1e-6)
    processor = AutoImageProcessor.from_pretrained(FIXTURES / "model")
    assert processor.size == {"height": 16, "width": 16}
    # 0.1.0 trained its regression heads on raw targets; they keep doing so.
    size = model.config.get_task("size")
    assert (size.target_scaling, size.target_statistics) == ("none", None)
    assert model.config.tasks_format == 2


def test_the_old_model_loads_without_the_package(tmp_path):
    pixel_values, expected = recorded_outputs()
    torch.save(pixel_values, tmp_path / "inputs.pt")
    shutil.copytree(FIXTURES / "model", tmp_path / "model")  # the remote code is cached beside it, not in the repo
    result = subprocess.run([sys.executable, str(LOADER), str(tmp_path / "model"), str(tmp_path / "inputs.pt"),
                             "--trust"], capture_output=True, text=True, check=True)  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mtl_hf_importable"] is False and "error" not in report, report
    for task, value in expected.items():
        torch.testing.assert_close(torch.tensor(report["logits"][task]), value, rtol=1e-5, atol=1e-6)


def test_the_old_checkpoint_resumes_to_the_uninterrupted_runs_parameters(tmp_path):
    torch.set_num_threads(1)
    shutil.copytree(FIXTURES / "run" / "checkpoint-4", tmp_path / "checkpoint-4")
    sources = make_fixtures.sources()
    specs = [spec for source in sources for spec in source.task_specs]
    model = make_fixtures.new_model(specs)
    with torch.no_grad():  # another start: only the checkpoint's weights can lead to the recorded end
        for parameter in model.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(7))
    trainer = MultiTaskTrainer(model, make_fixtures.arguments(tmp_path), train_dataset=sources)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 8
    expected = load_file(str(FIXTURES / "run" / "final_parameters.safetensors"))
    parameters = dict(trainer.model.named_parameters())
    assert set(parameters) == set(expected)
    for name, value in expected.items():
        # A key projection's bias gets no gradient in exact arithmetic (softmax ignores a shift shared by a query's
        # scores): it moves by float rounding alone, ~1e-5 here, which differs between library builds.
        atol = 1e-5 if name.endswith("k_proj.bias") else 1e-6
        torch.testing.assert_close(parameters[name].detach(), value, rtol=1e-5, atol=atol, msg=name)
