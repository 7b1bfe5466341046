import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoImageProcessor, AutoModel

from mtl_hf import MultiTaskViTModel

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo_digits.py"


def run_demo(output_dir: Path, *flags: str) -> dict:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--output_dir", str(output_dir), *flags],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "digit    accuracy" in result.stdout
    return json.loads((output_dir / "metrics.json").read_text())


def test_short_demo_learns_and_saves_a_loadable_model(tmp_path):
    metrics = run_demo(tmp_path, "--max_steps", "150")
    assert metrics["test_digit_accuracy"] > 2 * metrics["digit_accuracy_baseline"]
    assert metrics["test_ink_r2"] > 0.5

    processor = AutoImageProcessor.from_pretrained(tmp_path)  # saved beside the model: same preprocessing
    assert processor.size == {"height": 32, "width": 32}
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, MultiTaskViTModel)
    assert model.config.task_names == ["digit", "traits", "ink"]
    assert model.config.get_task("traits").labels == ["even", "prime", "above_four"]


@pytest.mark.slow
def test_full_demo_reaches_its_documented_scores(tmp_path):
    metrics = run_demo(tmp_path)
    assert metrics["test_digit_accuracy"] > 0.9
    assert metrics["test_traits_micro_f1"] > 0.9
    assert metrics["test_ink_r2"] > 0.85
