"""Uploading a saved model folder to the Hub in one commit, with its card pointed at the repository.

The local folder keeps its own card until that commit has landed, so a failed push leaves it exactly
as it was. Checkpoints and private scratch files (`_*`) stay local.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import MissingPathError, UnreachableError, UserError, one_line


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload multi-task model with mtl_hf",
    token: str | None = None,
):
    """Uploads `folder` to `repo_id` (created if needed); returns (the repository's URL, the commit)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingPathError(f"{folder} is not a saved model folder (no config.json); save the model first")
    lora = json.loads((folder / "config.json").read_text()).get("lora")
    if lora:
        raise UserError(
            f"{folder} holds LoRA adapters, which load only where peft and mtl_hf are installed; push a merged copy: "
            f"mtl-hf merge {folder} MERGED, then mtl-hf push MERGED {repo_id}"
        )
    from huggingface_hub import CommitOperationAdd, HfApi  # the card and the Hub client: once the folder is sound

    from .card import EVAL_RESULTS_FILE, card_from_folder, eval_results_yaml

    card = card_from_folder(folder, model_id=repo_id)
    card.text = with_model_id(card.text, repo_id)
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and _is_pushed(path.relative_to(folder))]
    generated = {"README.md": str(card).encode()}  # made from the folder now: the card and its results
    results = eval_results_yaml(card)
    if results is not None:
        generated[EVAL_RESULTS_FILE] = results.encode()
    operations = [
        CommitOperationAdd(path.relative_to(folder).as_posix(), str(path))
        for path in files
        if path.relative_to(folder).as_posix() not in (*generated, EVAL_RESULTS_FILE)
    ]
    operations += [CommitOperationAdd(name, content) for name, content in generated.items()]
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id=repo_id, operations=operations, revision=revision, commit_message=commit_message
        )
    except OSError as error:  # the Hub unreachable or refusing (offline mode, no token, no rights): nothing changed
        raise UnreachableError(f"could not push {folder} to {repo_id}: {one_line(error)}") from error
    card.save(folder / "README.md")
    return url, commit


def _is_pushed(relative: Path) -> bool:
    return not any(part.startswith(("checkpoint-", "_")) for part in relative.parts)


def with_model_id(text: str, repo_id: str) -> str:
    """The card's code examples pointed at the Hub repository instead of the local folder."""
    match = re.search(r'model="([^"]+)"', text)
    if match is None or match.group(1) == repo_id:
        return text
    local = match.group(1)
    return text.replace(f'"{local}"', f'"{repo_id}"').replace(f"predict {local} ", f"predict {repo_id} ")


__all__ = ["push_folder", "with_model_id"]
