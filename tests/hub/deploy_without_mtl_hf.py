"""Runs a pushed model the ways a deployment does; prints the answers as JSON.

    FRESH_VENV/bin/python deploy_without_mtl_hf.py REPO_ID PHOTO

Run with the interpreter of a virtual environment that has torch, transformers and Pillow but not mtl_hf
(`tests/test_hub.py::fresh_venv`).
Through the Hub endpoint in HF_ENDPOINT: `pipeline(model=REPO_ID, trust_remote_code=True)`, then the repository's
`handler.py` as Inference Endpoints calls it (a PIL image; a list of base64 strings with parameters).
"""

import base64
import importlib.util
import json
import sys

from huggingface_hub import hf_hub_download
from PIL import Image
from transformers import pipeline

FILES = [
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "handler.py",
    "requirements.txt",
    *(
        f"{part}_mtl_vit.py"
        for part in ("configuration", "modeling", "backbone", "heads", "tasks", "saving", "pipeline", "images")
    ),
]


def main(repo_id: str, photo: str) -> None:
    classify = pipeline(model=repo_id, trust_remote_code=True)
    report = {
        "mtl_hf_importable": importlib.util.find_spec("mtl_hf") is not None,
        "pipeline_class": f"{type(classify).__module__}.{type(classify).__name__}",
        "pipeline": classify(photo),
    }
    # The repository as an endpoint receives it (file by file: the local Hub stand-in has no tree listing).
    folder = None
    for name in FILES:
        folder = hf_hub_download(repo_id, name).rsplit("/", 1)[0]
    spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    handler = handler_module.EndpointHandler(folder)
    report["handler_image"] = handler({"inputs": Image.open(photo)})
    encoded = base64.b64encode(open(photo, "rb").read()).decode()
    report["handler_list"] = handler({"inputs": [encoded, encoded], "parameters": {"top_k": 1}})
    report["requirements"] = open(f"{folder}/requirements.txt").read().split()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
