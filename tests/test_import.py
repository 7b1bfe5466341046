"""`import mtl_hf` stays light: the model and its Auto registration, none of the training stack."""

import json
import subprocess
import sys

HEAVY = ["transformers.trainer", "datasets", "matplotlib", "evaluate", "torchjd", "pyspark", "mtl_hf.training.trainer"]


def modules_after(statement: str) -> dict[str, bool]:
    probe = f"import json, sys\n{statement}\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_and_the_model_loads_no_training_stack():
    loaded = modules_after("import mtl_hf\nfrom mtl_hf import MultiTaskViTModel, MultiTaskViTConfig")
    assert not any(loaded.values()), loaded


def test_the_trainer_is_imported_on_first_use():
    loaded = modules_after("import mtl_hf\nmtl_hf.MultiTaskTrainer")
    assert loaded["transformers.trainer"] and loaded["mtl_hf.training.trainer"] and loaded["datasets"]
    assert not loaded["pyspark"] and not loaded["matplotlib"]
