"""A handler for Hugging Face Inference Endpoints: saved models carry this file as `handler.py`, with a
`requirements.txt`, so that an endpoint created from the repository serves the model without mtl_hf.

The endpoint calls `EndpointHandler(path)` once, then the handler with each request's payload:
`{"inputs": image or [images], "parameters": {"top_k": 3, "threshold": 0.5, "tasks": [...]}}`, an image being a
PIL image (the toolkit decodes an image request's body into one), bytes, or a base64 string. The answer is the
pipeline's: task -> answers for one image, a list of those for a list.
"""

import base64
import io
from typing import Any

from PIL import Image
from transformers import pipeline


class EndpointHandler:
    def __init__(self, path: str = ""):
        self.pipeline = pipeline(model=path, trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> Any:
        inputs = data.get("inputs", data)
        parameters = data.get("parameters") or {}
        if isinstance(inputs, list):
            return self.pipeline([_image(value) for value in inputs], **parameters)
        return self.pipeline(_image(inputs), **parameters)


def _image(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str) and not value.startswith(("http://", "https://")):
        return Image.open(io.BytesIO(base64.b64decode(value)))
    return value
