"""Builds the environments in which tests/test_supported_versions.py loads a saved model without mtl_hf.

    python tests/compat/build_envs.py FOLDER

FOLDER/lowest and FOLDER/newest each hold one transformers (the lowest and the newest version that the saved
model's requirements allow) with its dependencies and Pillow, installed as a user's environment would be
(`pip install --target`); FOLDER/torch links the running interpreter's torch and what torch imports, so that no
second torch is downloaded. A folder already built for the same requirement is kept.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from mtl_hf.models.mtl_vit.saving_mtl_vit import ENDPOINT_REQUIREMENTS

TORCH_MODULES = ("torch", "torchgen", "functorch", "sympy", "mpmath", "networkx", "jinja2", "markupsafe")


def transformers_requirement() -> Requirement:
    return next(Requirement(r) for r in ENDPOINT_REQUIREMENTS if Requirement(r).name == "transformers")


def lowest_version(requirement: Requirement) -> str:
    floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    if len(floors) != 1:
        raise SystemExit(f"{requirement}: name exactly one '>=' floor, the lowest supported version")
    return floors[0]


def build(folder: Path) -> None:
    requirement = transformers_requirement()
    wanted = {"lowest": f"transformers=={lowest_version(requirement)}", "newest": str(requirement)}
    for name, pin in wanted.items():
        target = folder / name
        stamp = target / "mtl_hf_requirement.json"
        if stamp.is_file() and json.loads(stamp.read_text()) == pin:
            continue
        subprocess.run(["rm", "-rf", str(target)], check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), pin, "pillow"], check=True
        )
        stamp.write_text(json.dumps(pin))
    view = folder / "torch"
    view.mkdir(parents=True, exist_ok=True)
    for module in TORCH_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None:
            continue
        origin = Path(spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin)
        link = view / origin.name
        if not link.exists():
            link.symlink_to(origin)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
