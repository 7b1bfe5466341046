"""`mtl-hf serve`: a real server on 127.0.0.1 (uvicorn in a subprocess), real HTTP requests: answers as the
catalogue tagger gives them, dynamic batching across concurrent requests, each bad upload a 4xx JSON error after
which the server still answers, graceful shutdown on SIGTERM, bad flags refused in one line."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mtl_hf import MultiTaskViTConfig
from mtl_hf.commands.main import main as cli
from mtl_hf.data import load_shop_dataset

from .test_predict_catalogue import save_model

requests = pytest.importorskip("requests", reason="the serving tests need requests (dev extra)")
pytest.importorskip("fastapi", reason="mtl-hf serve needs the serve extra")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`mtl-hf serve MODEL --port P ...` in a subprocess, up once /health answers."""

    def __init__(self, model, *flags, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "mtl_hf", "serve", str(model), "--port", str(self.port), *flags]
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()
            try:
                requests.get(f"{self.url}/health", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    def post(self, data=None, content_type="image/png", headers=None, **kwargs):
        headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        return requests.post(f"{self.url}/predict", data=data, headers=headers, timeout=60, **kwargs)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    return folder, save_model(folder)


@pytest.fixture(scope="module")
def photos():
    return [png(row["image"]) for row in load_shop_dataset(20, start=2000)]


@pytest.fixture(scope="module")
def server(model):
    running = Server(model[0], "--max_batch_size", "8", "--max_wait_ms", "50", "--threshold", "tags=0.45")
    yield running
    assert running.stop() == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down


def expected(folder, photos):
    """The catalogue tagger's answers for the same photos (through files, as `mtl-hf predict --output` reads)."""
    import pyarrow as pa

    from mtl_hf.inference.answers import answers_by_row
    from mtl_hf.inference.tagger import Tagger, TaggingOptions

    tagger = Tagger(str(folder))
    table = pa.table({"image": pa.array([{"bytes": data, "path": None} for data in photos])})
    answers, _ = tagger.tag(
        table, TaggingOptions(top_k=3, thresholds={"tags": 0.45}), image_column="image", base_folder=None, shard="x"
    )
    return answers_by_row(tagger.specs, {name: answers.column(name) for name in answers.column_names})


def close(answer, reference):
    assert answer["schema_version"] == reference["schema_version"] == 1
    for task, value in reference["answers"].items():
        got = answer["answers"][task]
        for key in ("label", "labels"):
            if key in value:
                assert got[key] == value[key], task
        if "value" in value:
            assert got["value"] == pytest.approx(value["value"], abs=1e-5), task
        for ours, theirs in zip(got.get("scores", []), value.get("scores", []), strict=True):
            assert ours["label"] == theirs["label"] and ours["score"] == pytest.approx(theirs["score"], abs=1e-5)


def test_answers_are_the_catalogue_taggers_and_metadata_describes_the_model(server, model, photos):
    folder, network = model
    reference = expected(folder, photos[:3])
    response = server.post(photos[0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == folder.name and body["revision"].startswith("sha256:")
    close(body["predictions"][0], reference[0])
    files = [("photos", (f"p{i}.png", photos[i], "image/png")) for i in range(3)]
    several = server.post(files=files, content_type=None).json()["predictions"]
    assert len(several) == 3
    for answer, ref in zip(several, reference, strict=True):
        close(answer, ref)
    meta = requests.get(f"{server.url}/metadata", timeout=10).json()
    assert meta["image_size"] == [32, 32] and meta["revision"] == body["revision"]
    assert [t["name"] for t in meta["tasks"]] == network.config.task_names
    tags = next(t for t in meta["tasks"] if t["name"] == "tags")
    assert tags["thresholds"] == dict.fromkeys(network.config.get_task("tags").labels, 0.45)
    assert tags["temperature"] == 1.0  # not calibrated
    page = requests.get(server.url, timeout=10)
    assert page.status_code == 200 and 'id="answers"' in page.text


def test_concurrent_requests_share_forwards_and_none_is_lost(server, photos):
    before = requests.get(f"{server.url}/health", timeout=10).json()
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda data: server.post(data), photos * 3))
    assert [r.status_code for r in responses] == [200] * 60
    after = requests.get(f"{server.url}/health", timeout=10).json()
    images, batches = after["images"] - before["images"], after["batches"] - before["batches"]
    assert images == 60 and batches < 60, (images, batches)  # several photos a forward
    answers = [r.json()["predictions"][0]["answers"]["category"]["label"] for r in responses]
    assert answers[:20] == answers[20:40] == answers[40:]  # each photo its own answer, whatever it was batched with


def test_each_bad_upload_is_a_4xx_json_error_and_the_server_goes_on(server, photos, model):
    truncated = photos[0][: len(photos[0]) // 2]
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(jpeg, format="JPEG")
    huge = io.BytesIO()
    Image.new("L", (8000, 6250)).save(huge, format="PNG")  # 50 MP, a few KB compressed
    cases = [
        (b"<html>not found</html>", "image/jpeg", 422, "not an image format this server reads"),
        (truncated, "image/png", 422, "cannot decode the image"),
        (jpeg.getvalue()[:200], "image/jpeg", 422, "cannot decode the image"),
        (b"", "image/png", 400, "body is empty"),
        (huge.getvalue(), "image/png", 413, "50.0 MP) is more than the server's limit of 40 MP"),
        (photos[0], "text/plain", 415, "Content-Type text/plain"),
    ]
    for data, content_type, status, message in cases:
        response = server.post(data, content_type=content_type)
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"], response.json()
        assert server.post(photos[1]).status_code == 200  # and the next request is served
    empty_form = server.post(files={"note": (None, "no photo")}, content_type=None)
    assert empty_form.status_code == 400 and "holds no file" in empty_form.json()["error"]
    many = server.post(files=[("photos", (f"{i}.png", photos[0], "image/png")) for i in range(17)], content_type=None)
    assert many.status_code == 400 and "Maximum number of files is 16" in many.json()["error"], many.text
    assert server.post(photos[1]).status_code == 200


def test_upload_limits_and_sigterm_let_the_request_in_flight_finish(model, photos):
    server = Server(model[0], "--max_upload_bytes", "5000", "--max_wait_ms", "1500", "--max_batch_size", "64")
    try:
        big = png(Image.effect_noise((128, 128), 64))  # about 16 KB
        refused = server.post(big)
        assert refused.status_code == 413 and "limit of 5,000" in refused.json()["error"]
        answers = {}
        thread = threading.Thread(target=lambda: answers.setdefault("r", server.post(photos[0])))
        thread.start()
        time.sleep(0.5)  # the photo waits up to 1.5 s for company in the batcher: SIGTERM comes meanwhile
        assert server.stop() == -signal.SIGTERM
        thread.join(timeout=30)
        assert answers["r"].status_code == 200 and answers["r"].json()["predictions"][0]["answers"]["category"]["label"]
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_a_request_past_its_timeout_gets_a_504_and_the_server_goes_on(model, photos):
    server = Server(model[0], "--request_timeout", "0.5", "--max_wait_ms", "3000", "--max_batch_size", "64")
    try:
        late = server.post(photos[0])  # waits 3 s in the batcher for company, past its 0.5 s
        assert late.status_code == 504 and "request timeout (0.5 s)" in late.json()["error"]
        time.sleep(3)
        health = requests.get(f"{server.url}/health", timeout=10).json()
        assert health["images"] == 0  # the timed-out photo was dropped, not computed for no one
    finally:
        server.stop()


def test_an_api_key_a_bound_on_photos_held_and_a_pixel_budget_per_request(model, photos):
    """With --api_key_env, /predict and /metadata need the key (401 before the body is read), /health does not; past
    --max_queued_images a request is refused with 503 and Retry-After before decoding; a request whose photos hold
    more than --max_request_pixels together is refused (413) though each photo is under --max_pixels."""
    key = "k" * 8 + "-0123456789abcdef"
    flags = ["--max_queued_images", "2", "--max_images", "2", "--max_wait_ms", "2000", "--max_batch_size", "64"]
    server = Server(
        model[0],
        *flags,
        "--max_request_pixels",
        "40000",
        "--api_key_env",
        "SHOP_SERVE_KEY",
        env={"SHOP_SERVE_KEY": key},
    )
    try:
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": key[:-1]}):
            refused = requests.post(f"{server.url}/predict", data=photos[0], headers=headers, timeout=10)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", headers
            assert requests.get(f"{server.url}/metadata", headers=headers, timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert requests.get(f"{server.url}/metadata", headers=auth, timeout=10).status_code == 200
        # Two photos wait 2 s in the batcher for company: the server holds its limit, and a third request is turned
        # away at once, before its photo is decoded.
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(server.post, photo, headers=auth) for photo in photos[:2]]
            deadline = time.monotonic() + 10
            while requests.get(f"{server.url}/health", timeout=10).json()["photos_held"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            busy = server.post(photos[2], headers={"X-API-Key": key})
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            assert "--max_queued_images" in busy.json()["error"]
            assert [answer.result().status_code for answer in waiting] == [200, 200]
        health = requests.get(f"{server.url}/health", timeout=10).json()
        assert health["photos_held"] == 0 and health["refused_busy"] == 1 and health["images"] == 2
        # 2 photos of 32 x 32 = 2,048 pixels; one 160 x 160 = 25,600 is under the budget, two together are not.
        big = png(Image.new("RGB", (160, 160), "white"))
        files = [("file", ("a.png", big, "image/png")), ("file", ("b.png", big, "image/png"))]
        over = requests.post(f"{server.url}/predict", files=files, headers=auth, timeout=10)
        assert over.status_code == 413 and "--max_request_pixels" in over.json()["error"]
        assert server.post(big, headers=auth).status_code == 200
    finally:
        server.stop()


def test_bad_flags_and_a_busy_port_are_refused_in_one_line(model, tmp_path, capsys, monkeypatch):
    folder, _ = model

    def refused(args, message):
        assert cli(["serve", *args]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error

    refused([str(tmp_path), "--port", str(free_port())], "no config.json: not a saved model folder")
    refused([str(folder), "--max_batch_size", "0"], "--max_batch_size must be at least 1")
    refused([str(folder), "--request_timeout", "0"], "--request_timeout must be > 0")
    refused([str(folder), "--max_queued_images", "4"], "--max_queued_images 4 is less than --max_images 16")
    monkeypatch.setenv("SHORT_KEY", "abc")
    refused([str(folder), "--api_key_env", "SHORT_KEY"], "--api_key_env SHORT_KEY: the variable is shorter than 16")
    refused([str(folder), "--api_key_env", "NO_SUCH_VARIABLE_HERE"], "the variable is empty or unset")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        refused([str(folder), "--port", str(busy.getsockname()[1])], "is in use or not available")


def test_review_precision_marks_the_answers_below_each_cut(tmp_path, photos):
    """A model whose config carries a validation record: served with --review_precision, each answer says whether
    a person should check it, as the catalogue tagger's `needs_review` columns do for the same photos."""
    import json

    import pyarrow as pa

    from mtl_hf.inference.answers import answers_by_row
    from mtl_hf.inference.review import review_cuts
    from mtl_hf.inference.tagger import Tagger, TaggingOptions

    folder = tmp_path / "model"
    save_model(folder)
    table = pa.table({"image": pa.array([{"bytes": data, "path": None} for data in photos[:6]])})

    def tagged(cuts):
        tagger = Tagger(str(folder))
        options = TaggingOptions(top_k=3, review_cuts=cuts)
        answers, _ = tagger.tag(table, options, image_column="image", base_folder=None, shard="x")
        return answers_by_row(tagger.specs, {name: answers.column(name) for name in answers.column_names})

    # The cut between these photos' answers: half of them above it, half below.
    middle = float(np.median([answer["answers"]["category"]["scores"][0]["score"] for answer in tagged({})]))
    # 400 validation answers: 295 of the 300 most confident right, 340 of all 400.
    curve = {"confidence": [middle, middle / 2], "accepted": [300, 400], "right": [295, 340], "rows": 400}
    config = json.loads((folder / "config.json").read_text())
    config["calibration"] = {"category": {"temperature": 1.0, "review": curve}}
    (folder / "config.json").write_text(json.dumps(config))
    cut = review_cuts(MultiTaskViTConfig.from_pretrained(folder), None, {"category": 0.95}, {}, str(folder))
    assert cut["category"]["cut"] == pytest.approx(middle)
    server = Server(folder, "--review_precision", "category=0.95")
    try:
        answers = [server.post(photo).json()["predictions"][0] for photo in photos[:6]]
    finally:
        server.stop()
    reference = tagged({"category": cut["category"]["cut"]})
    assert {answer["needs_review"] for answer in answers} == {True, False}
    for answer, expected_answer in zip(answers, reference, strict=True):
        category = answer["answers"]["category"]
        top = category["scores"][0]["score"]
        assert category["needs_review"] == (top < middle) == expected_answer["answers"]["category"]["needs_review"]
        assert answer["needs_review"] == category["needs_review"]
        assert "needs_review" not in answer["answers"]["colour"]
