"""Is the Hub there? One request with a short timeout before a command loads a model by Hub id.

Without it, an unreachable Hub costs tens of seconds of retries (five, with back-off) before the one-line error,
and a cached model loads only after them. With it, an unreachable Hub is one line in a few seconds, or the cached
copy with a one-line notice.
"""

from __future__ import annotations

import difflib
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from ..errors import MissingPathError

HUB_ID = re.compile(r"[\w-][\w.-]*/[\w-][\w.-]*")
"""`owner/name`: the only form of model id mtl_hf looks up on the Hub."""
PROBE_TIMEOUT_SECONDS = 5.0
PROBED_FILE = "config.json"


def is_hub_id(name: str) -> bool:
    """`owner/name`, with no local path of that name: a model to look up (or link) on the Hub."""
    return HUB_ID.fullmatch(name) is not None and not Path(name).exists()


MISSING_ERROR_CODES = ("RepoNotFound", "EntryNotFound", "RevisionNotFound")
"""The Hub's `X-Error-Code` for a repo or file that is not there (it answers 401 to an anonymous caller asking for a
repo that may be private, with RepoNotFound)."""


def probe_hub(repo_id: str, *, revision: str | None = None) -> tuple[str, str]:
    """("found" | "missing" | "answered" | "unreachable", detail): one HEAD request for the model's config.json,
    with a short timeout. "answered" is any other answer (a gated repo, a server error): left to the loader."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        return "unreachable", "HF_HUB_OFFLINE is set"
    # The URL from the endpoint in force now (huggingface_hub's URL template fixes it at import).
    url = f"{constants.ENDPOINT}/{repo_id}/resolve/{quote(revision or 'main', safe='')}/{PROBED_FILE}"
    token = get_token()  # (build_hf_headers would make a request of its own)
    request = urllib.request.Request(url, method="HEAD", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS):
            return "found", ""
    except urllib.error.HTTPError as error:
        if error.code == 404 or error.headers.get("X-Error-Code") in MISSING_ERROR_CODES:
            return "missing", f"HTTP {error.code}"
        return "answered", f"HTTP {error.code}"
    except OSError as error:  # URLError, a timeout, a refused connection
        return "unreachable", str(getattr(error, "reason", error))


def hub_model_location(repo_id: str, *, revision: str | None = None) -> str:
    """`repo_id` when the Hub has it (or answers otherwise: a gated repo is left to the loader to report), else
    the folder of its cached copy, else a one-line error: no such model, or the Hub could not be reached."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE:
        return repo_id  # the loaders read the cache alone, without a request
    state, detail = probe_hub(repo_id, revision=revision)
    if state in ("found", "answered"):
        return repo_id
    if state == "missing":
        raise MissingPathError(
            f"no model {repo_id} on the Hub ({constants.ENDPOINT} answered {detail}) and no local folder of that "
            "name: check the name (owner/name, as on its Hub page)"
        )
    cached = try_to_load_from_cache(repo_id, PROBED_FILE, revision=revision)
    if isinstance(cached, str):
        folder = str(Path(cached).parent)
        notice = f"the Hub ({constants.ENDPOINT}) did not answer ({detail}); using the cached copy of {repo_id}"
        print(f"{notice} at {folder}", file=sys.stderr)
        return folder
    raise MissingPathError(
        f"no model at {repo_id}: no local folder of that name, and the Hub ({constants.ENDPOINT}) did not "
        f"answer within {PROBE_TIMEOUT_SECONDS:g} s ({detail}); check the path, or the network "
        "(HF_ENDPOINT, a proxy), or set HF_HUB_OFFLINE=1 to use the cache"
    ) from None


def require_path_or_hub_id(name: str, kind: str, *, where: str = "") -> None:
    """Refuses `name` when no such local path exists and it is not a Hub id: not of the form `owner/name`, the
    only form tried on the Hub, or with a first part that is a local folder (`outputs/demo` is a path: the Hub is
    not asked for an `outputs` account).

    So a typo in a local path fails at once with one line, instead of retrying the Hub.
    """
    path = Path(name)
    if path.exists():
        return
    if HUB_ID.fullmatch(name) is None:
        raise MissingPathError(f"{where}no {kind} at {name} (tried as a local path; a Hub id has the form owner/name)")
    if path.parent.is_dir():
        entries = sorted(entry.name for entry in path.parent.iterdir() if not entry.name.startswith("."))
        close = difflib.get_close_matches(path.name, entries, n=1)
        hint = f"; did you mean {path.parent / close[0]}?" if close else f"; it holds {entries[:8]}"
        raise MissingPathError(
            f"{where}no {kind} at {name}: {path.parent}/ is a local folder, so this is a local path, not a Hub id, "
            f"and it has no {path.name!r}{hint}"
        )


__all__ = [
    "HUB_ID",
    "PROBE_TIMEOUT_SECONDS",
    "hub_model_location",
    "is_hub_id",
    "probe_hub",
    "require_path_or_hub_id",
]
