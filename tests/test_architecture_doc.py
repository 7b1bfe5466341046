"""docs/architecture.md is read against the tree: its module map names every module of mtl_hf/ and nothing else,
no module passes the size it states, and its table of upstream interfaces names every non-top-level transformers
import and every private Trainer method mtl_hf calls."""

import ast
import re
from pathlib import Path

from transformers import Trainer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mtl_hf"
DOC = (ROOT / "docs" / "architecture.md").read_text()
MAX_LINES = 400


def module_map() -> set[str]:
    block = DOC.split("## The module map", 1)[1].split("```", 2)[1]
    # The path column: a line's text up to the first run of two spaces (an indented line is a description).
    columns = [line.split("  ")[0] for line in block.splitlines() if line and not line.startswith(" ")]
    named = set()
    for match in re.finditer(r"([\w/]*?)(?:\{([\w,]+)\})?([\w]*)\.py\b", "\n".join(columns)):
        prefix, group, suffix = match.groups()
        for part in group.split(",") if group else [""]:
            named.add(f"{prefix}{part}{suffix}.py")
    return named


def modules() -> set[str]:
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}


def test_the_module_map_names_every_module_and_nothing_else():
    named, present = module_map(), modules()
    assert sorted(present - named) == [], "modules missing from docs/architecture.md's map"
    assert sorted(named - present) == [], "the map names modules that are gone"


def test_no_module_is_longer_than_the_doc_says():
    assert f"No module is longer than {MAX_LINES} lines" in DOC
    long = {name: len((PACKAGE / name).read_text().splitlines()) for name in modules()}
    assert {name: lines for name, lines in long.items() if lines > MAX_LINES} == {}


def upstream_section() -> str:
    return DOC.split("## Upstream interfaces that are not top-level API", 1)[1]


def test_every_upstream_interface_used_is_in_the_table():
    table = upstream_section()
    missing = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformers."):
                for alias in node.names:
                    if f"`{node.module}" not in table and node.module not in table or alias.name not in table:
                        missing.append(f"{path.relative_to(PACKAGE)}: {node.module}.{alias.name}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = node.value
                calls_trainer = (isinstance(owner, ast.Name) and owner.id == "self") or (
                    isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super"
                )
                if calls_trainer and "training" in path.parts and hasattr(Trainer, node.attr):
                    if f"Trainer.{node.attr}" not in table:
                        missing.append(f"{path.relative_to(PACKAGE)}: Trainer.{node.attr}")
    assert sorted(set(missing)) == []
