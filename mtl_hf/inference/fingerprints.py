"""What identifies a tagging run: the model's files hashed, and a digest of any JSON-able description."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def fingerprint(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def model_fingerprint(folder: Path) -> str:
    """The model's config and weights (an exported graph included), hashed: the same saved model gives the same
    fingerprint wherever it lies."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if (
            path.name in ("config.json", "preprocessor_config.json")
            or path.suffix in (".safetensors", ".onnx")
            or path.name.endswith(".bin")
        ):
            digest.update(path.name.encode())
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


__all__ = ["fingerprint", "model_fingerprint"]
