"""A minimal Hub endpoint on 127.0.0.1 for push tests: the real huggingface_hub client talks to it.

It answers what an upload needs - repo creation, `preupload` (every file "regular", so no LFS or
Xet transfer is involved) and `commit` (NDJSON with base64 file contents) - and keeps each repo's
files in a folder, which the tests then load with `from_pretrained`. It also serves those files
back (`/api/models/{repo}/revision/{rev}` and `/{repo}/resolve/{rev}/{path}`), so that loading by
repo id through `HF_ENDPOINT` works too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class LocalHub:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[dict] = []  # method, path, authorization header of every request
        self.commits: list[dict] = []
        self.validated_cards: list[str] = []  # README contents that passed /api/validate-yaml
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def repo_folder(self, repo_id: str) -> Path:
        return self.root / repo_id

    def __enter__(self) -> LocalHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _record(self) -> str:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(
                {"method": self.command, "path": path, "authorization": self.headers.get("Authorization")}
            )
            return path

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _json(self, payload, status: int = 200, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            path = self._record()
            body = self._body()
            if path == "/api/validate-yaml":
                content = json.loads(body)["content"]
                errors = card_metadata_errors(content)
                if errors:
                    return self._json({"errors": [{"message": e} for e in errors]}, status=400)
                hub.validated_cards.append(content)
                return self._json({"warnings": []})
            if path == "/api/repos/create":
                request = json.loads(body)
                repo_id = "/".join(part for part in (request.get("organization"), request["name"]) if part)
                hub.repo_folder(repo_id).mkdir(parents=True, exist_ok=True)
                return self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})
            parts = path.strip("/").split("/")
            # /api/models/{owner}/{name}/{preupload|commit}/{revision}
            if len(parts) >= 6 and parts[0] == "api" and parts[1] == "models":
                repo_id, action = f"{parts[2]}/{parts[3]}", parts[4]
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                    )
                if action == "commit":
                    return self._commit(repo_id, body)
            self._json({"error": f"not served here: POST {path}"}, status=404)

        def _commit(self, repo_id: str, body: bytes) -> None:
            folder = hub.repo_folder(repo_id)
            written = []
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    target = folder / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
                    written.append(item["value"]["path"])
                elif item["key"] == "deletedFile":
                    (folder / item["value"]["path"]).unlink(missing_ok=True)
            oid = hashlib.sha1(json.dumps(sorted(written)).encode() + str(len(hub.commits)).encode()).hexdigest()
            hub.commits.append({"repo_id": repo_id, "files": written, "oid": oid})
            self._json({"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid})

        def do_GET(self):
            self._serve(send_body=True)

        def do_HEAD(self):
            self._serve(send_body=False)

        def _serve(self, send_body: bool) -> None:
            path = self._record()
            parts = path.strip("/").split("/")
            # /api/models/{owner}/{name}[/revision/{rev}]: the repo's info and file list
            if len(parts) >= 4 and parts[:2] == ["api", "models"]:
                repo_id = f"{parts[2]}/{parts[3]}"
                folder = hub.repo_folder(repo_id)
                if not folder.is_dir():
                    return self._json(
                        {"error": "Repository not found"}, status=404, headers={"X-Error-Code": "RepoNotFound"}
                    )
                files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
                return self._json(
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": _sha(hub, repo_id),
                        "siblings": [{"rfilename": f} for f in files],
                        "private": False,
                    }
                )
            # /{owner}/{name}/resolve/{rev}/{file path}
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, file_path = f"{parts[0]}/{parts[1]}", "/".join(parts[4:])
                target = hub.repo_folder(repo_id) / file_path
                if not target.is_file():
                    return self._json(
                        {"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"}
                    )
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", _sha(hub, repo_id))
                self.end_headers()
                if send_body:
                    self.wfile.write(data)
                return
            self._json({"error": f"not served here: GET {path}"}, status=404)

    return Handler


# The model card metadata fields the Hub's schema requires or types (a subset: what mtl_hf writes).
_PIPELINE_TAGS = {"image-classification", "image-feature-extraction", "image-segmentation", "object-detection"}


def card_metadata_errors(content: str) -> list[str]:
    """The ways a README's YAML metadata breaks the Hub's model card schema (empty when it is valid)."""
    import yaml

    if not content.startswith("---\n"):
        return ["no YAML metadata block"]
    try:
        metadata = yaml.safe_load(content.split("---\n", 2)[1]) or {}
    except yaml.YAMLError as error:
        return [f"YAML does not parse: {error}"]
    errors = []
    for key in ("library_name", "pipeline_tag", "license", "model_name"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f'"{key}" must be a string')
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in _PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" {metadata["pipeline_tag"]!r} is not a known pipeline tag')
    for key in ("tags", "datasets", "metrics"):
        if key in metadata and not (isinstance(metadata[key], list) and all(isinstance(v, str) for v in metadata[key])):
            errors.append(f'"{key}" must be a list of strings')
    if "base_model" in metadata and not isinstance(metadata["base_model"], (str, list)):
        errors.append('"base_model" must be a string or a list of strings')
    for index, entry in enumerate(metadata.get("model-index") or []):
        if not isinstance(entry.get("name"), str):
            errors.append(f'"model-index[{index}].name" is required')
        for r, result in enumerate(entry.get("results") or []):
            where = f"model-index[{index}].results[{r}]"
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            dataset = result.get("dataset") or {}
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append(f'"{where}.dataset" needs "type" and "name"')
            for m, metric in enumerate(result.get("metrics") or []):
                if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float, str)):
                    errors.append(f'"{where}.metrics[{m}]" needs "type" and "value"')
    return errors


def _sha(hub: LocalHub, repo_id: str) -> str:
    oids = [commit["oid"] for commit in hub.commits if commit["repo_id"] == repo_id]
    return oids[-1] if oids else "0" * 40
