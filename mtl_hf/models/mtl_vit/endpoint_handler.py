"""A handler for Hugging Face Inference Endpoints: saved models carry this file as `handler.py`, with a
`requirements.txt`, so that an endpoint created from the repository serves the model without mtl_hf.

The endpoint calls `EndpointHandler(path)` once, then the handler with each request's payload:
`{"inputs": image or [images], "parameters": {"top_k": 3, "threshold": 0.5, "tasks": [...]}}`, an image being a
PIL image (the toolkit decodes an image request's body into one), bytes, or a base64 string. The answer is the
pipeline's: the answer object of `answers_mtl_vit.py` for one image (`{"schema_version": 1, "answers": {task:
...}}`), a list of those for a list; `"legacy_answers": true` gives the shape of earlier releases for one more.

What a caller may ask is bounded, since anyone who can reach the endpoint is a caller: only the parameters
above (anything else, e.g. the pipeline's `num_workers` or `batch_size`, is refused), at most `MAX_IMAGES` images
of at most `MAX_PIXELS` pixels each (read from the header, before decoding), and no image URLs: the endpoint would
fetch any address a caller names. The model's owner can allow URLs by setting the endpoint's environment variable
`MTL_HF_ALLOW_IMAGE_URLS=1`; they are then fetched with a timeout of `URL_TIMEOUT_S` seconds.
"""

import base64
import binascii
import io
import os
from typing import Any

from PIL import Image
from transformers import pipeline

PARAMETERS = ("top_k", "threshold", "tasks", "legacy_answers")
MAX_IMAGES = 16
MAX_PIXELS = 40_000_000
URL_TIMEOUT_S = 10.0


class EndpointHandler:
    def __init__(self, path: str = "", allow_image_urls: bool | None = None, url_timeout_s: float = URL_TIMEOUT_S):
        self.pipeline = pipeline(model=path, trust_remote_code=True)
        if allow_image_urls is None:
            allow_image_urls = os.environ.get("MTL_HF_ALLOW_IMAGE_URLS", "") == "1"
        self.allow_image_urls, self.url_timeout_s = allow_image_urls, url_timeout_s

    def __call__(self, data: dict[str, Any]) -> Any:
        if not isinstance(data, dict):
            raise ValueError('the payload must be a JSON object: {"inputs": image or [images], "parameters": {...}}')
        inputs = data.get("inputs", data)
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ValueError(f"parameters must be an object with some of {list(PARAMETERS)}")
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}: this endpoint takes {list(PARAMETERS)}")
        if isinstance(inputs, list):
            if not inputs or len(inputs) > MAX_IMAGES:
                raise ValueError(f"inputs: {len(inputs)} images; send 1 to {MAX_IMAGES} a request")
            images = [self._image(value, f"inputs[{index}]") for index, value in enumerate(inputs)]
        else:
            images = self._image(inputs, "inputs")
        if any(isinstance(image, str) for image in (images if isinstance(images, list) else [images])):
            parameters = {**parameters, "timeout": self.url_timeout_s}  # only URLs are strings by now
        return self.pipeline(images, **parameters)

    def _image(self, value: Any, name: str) -> Any:
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            if not self.allow_image_urls:
                raise ValueError(
                    f"{name}: image URLs are refused (the endpoint would fetch any address a caller names); send the "
                    "image's bytes, base64-encoded, or set MTL_HF_ALLOW_IMAGE_URLS=1 on the endpoint to allow URLs"
                )
            return value
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"{name}: a string must be an image's bytes in base64") from None
        if isinstance(value, (bytes, bytearray)):
            value = Image.open(io.BytesIO(value))  # reads the header only
        if not isinstance(value, Image.Image):
            raise ValueError(f"{name}: {type(value).__name__} is not an image; send its bytes, base64-encoded")
        width, height = value.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"{name}: {width} x {height} pixels is more than {MAX_PIXELS / 1e6:g} MP")
        return value
