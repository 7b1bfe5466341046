"""Answers with a saved model where mtl_hf cannot be imported, the three ways a deployment does; prints JSON.

    python -S answer_without_mtl_hf.py MODEL INPUTS.pt PHOTO

Run in an environment that holds one transformers version and what it needs (tests/test_supported_versions.py
builds it): `AutoModel` on the pixel values of INPUTS.pt (logits), `pipeline(model=MODEL, trust_remote_code=True)`
on PHOTO, and the model's `handler.py` as Inference Endpoints call it.
"""

import base64
import importlib.util
import json
import sys
from pathlib import Path

sys.modules["mtl_hf"] = None  # any `import mtl_hf` now raises ImportError

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModel, pipeline  # noqa: E402


def main(model_folder: str, inputs_path: str, photo: str) -> None:
    report = {"transformers": transformers.__version__, "transformers_file": transformers.__file__}
    model = AutoModel.from_pretrained(model_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        report["logits"] = {task: value.tolist() for task, value in model(torch.load(inputs_path)).logits.items()}
    report["pipeline"] = pipeline(model=model_folder, trust_remote_code=True)(photo)
    spec = importlib.util.spec_from_file_location("handler", Path(model_folder) / "handler.py")
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    handler = handler_module.EndpointHandler(model_folder)
    encoded = base64.b64encode(Path(photo).read_bytes()).decode()
    report["handler"] = handler({"inputs": encoded, "parameters": {"top_k": 1}})
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4])
