"""Loads a saved multi-task model where mtl_hf cannot be imported; prints what happened as JSON.

    python load_without_mtl_hf.py MODEL INPUTS.pt [--trust]

MODEL is a folder or a Hub id (through HF_ENDPOINT). INPUTS.pt holds the pixel values to run.
"""

import json
import sys

sys.modules["mtl_hf"] = None  # any `import mtl_hf` now raises ImportError

import torch  # noqa: E402
from transformers import AutoModel  # noqa: E402


def main(model_id: str, inputs_path: str, trust: bool) -> None:
    try:
        import mtl_hf  # noqa: F401

        importable = True
    except ImportError:
        importable = False
    report = {"mtl_hf_importable": importable}
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=trust)
    except Exception as error:  # what a user without the package sees
        report["error"] = f"{type(error).__name__}: {error}"
    else:
        model.eval()
        with torch.no_grad():
            logits = model(torch.load(inputs_path)).logits
        report["class"] = f"{type(model).__module__}.{type(model).__name__}"
        report["logits"] = {task: value.tolist() for task, value in logits.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--trust" in sys.argv[3:])
