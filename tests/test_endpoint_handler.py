"""The Inference Endpoints handler (`handler.py` in every saved model), called as a stranger would: only the
parameters it documents, no image URLs unless the owner allows them (then with a timeout), bounded images."""

import base64
import http.server
import io
import threading
import time

import pytest
from PIL import Image

from mtl_hf.data import load_shop_dataset
from mtl_hf.models.mtl_vit.endpoint_handler import MAX_IMAGES, EndpointHandler

from .test_predict_catalogue import save_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_model(folder)
    return folder


@pytest.fixture(scope="module")
def photo():
    buffer = io.BytesIO()
    load_shop_dataset(1, start=7)[0]["image"].save(buffer, format="PNG")
    return buffer.getvalue()


class PhotoServer:
    """An HTTP server on 127.0.0.1 that answers every GET with `photo` after `delay_s` seconds, counting requests."""

    def __init__(self, photo: bytes, delay_s: float):
        owner = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                owner.requests += 1
                time.sleep(delay_s)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/photo.png"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_only_the_documented_parameters_reach_the_pipeline(folder, photo):
    handler = EndpointHandler(str(folder))
    encoded = base64.b64encode(photo).decode()
    answer = handler({"inputs": encoded, "parameters": {"top_k": 1, "tasks": ["category"]}})
    assert list(answer["answers"]) == ["category"] and len(answer["answers"]["category"]["scores"]) == 1
    legacy = handler({"inputs": encoded, "parameters": {"top_k": 1, "legacy_answers": True}})
    assert legacy["category"] == answer["answers"]["category"]["scores"]  # the old shape, one release more
    for parameters in ({"num_workers": 8}, {"batch_size": 512, "top_k": 1}, {"timeout": 999}):
        with pytest.raises(ValueError, match=r"unknown parameter\(s\) .* this endpoint takes \['top_k'"):
            handler({"inputs": encoded, "parameters": parameters})
    with pytest.raises(ValueError, match="parameters must be an object"):
        handler({"inputs": encoded, "parameters": ["top_k"]})


def test_bad_inputs_are_refused_before_decoding(folder, photo):
    handler = EndpointHandler(str(folder))
    encoded = base64.b64encode(photo).decode()
    with pytest.raises(ValueError, match=rf"send 1 to {MAX_IMAGES} a request"):
        handler({"inputs": [encoded] * (MAX_IMAGES + 1)})
    with pytest.raises(ValueError, match=r"inputs\[1\]: a string must be an image's bytes in base64"):
        handler({"inputs": [encoded, "/etc/passwd"]})
    with pytest.raises(ValueError, match="inputs: dict is not an image"):
        handler({"inputs": {"path": "/etc/passwd"}})
    flat = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(flat, format="PNG")  # 48 MP, about 140 KB on the wire
    with pytest.raises(ValueError, match="8000 x 6000 pixels is more than 40 MP"):
        handler({"inputs": base64.b64encode(flat.getvalue()).decode()})


def test_image_urls_are_refused_unless_allowed_and_then_fetched_with_a_timeout(folder, photo, monkeypatch):
    quick, slow = PhotoServer(photo, delay_s=0), PhotoServer(photo, delay_s=5)
    try:
        monkeypatch.delenv("MTL_HF_ALLOW_IMAGE_URLS", raising=False)
        refusing = EndpointHandler(str(folder))
        with pytest.raises(ValueError, match="image URLs are refused .* MTL_HF_ALLOW_IMAGE_URLS=1"):
            refusing({"inputs": quick.url})
        with pytest.raises(ValueError, match=r"inputs\[0\]: image URLs are refused"):
            refusing({"inputs": [quick.url, base64.b64encode(photo).decode()]})
        assert quick.requests == 0  # nothing was fetched
        monkeypatch.setenv("MTL_HF_ALLOW_IMAGE_URLS", "1")
        allowing = EndpointHandler(str(folder), url_timeout_s=0.5)
        assert allowing({"inputs": quick.url}) == allowing({"inputs": base64.b64encode(photo).decode()})
        assert quick.requests == 1
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)time"):
            allowing({"inputs": slow.url})
        assert time.monotonic() - started < 3
    finally:
        quick.close()
        slow.close()
