"""The HTTP application of `mtl-hf serve` (FastAPI, served by uvicorn).

    POST /predict    photos as the body (Content-Type image/...) or as multipart/form-data files; JSON answers
    GET  /health     {"status": "ok", "batches", "images"}
    GET  /metadata   the model, its revision, image size, tasks and labels
    GET  /           a page to try a photo on

Every refusal is JSON `{"error": "..."}` naming the problem, with a 4xx status (5xx for a timeout, a full server
or a failed forward), and the server goes on serving. What a request may cost is bounded before it costs it (see
`admission.py`): the API key before the body is read, the pixel counts from the photos' headers, the photos held
before any is decoded.
"""

import asyncio
import contextlib
from importlib import resources

from ..errors import missing_extra
from .admission import Admission, Decoders, PastDeadline, ServingRefusal, check_api_key
from .batcher import DynamicBatcher
from .predictor import ImagePredictor
from .settings import ServeSettings

RAW_TYPES = ("image/", "application/octet-stream")


def build_app(predictor: ImagePredictor, settings: ServeSettings):
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse
    except ImportError:
        raise missing_extra("mtl-hf serve", "serve", "fastapi") from None

    batcher = DynamicBatcher(
        predictor.answer, max_batch_size=settings.max_batch_size, max_wait_s=settings.max_wait_ms / 1000
    )
    admission = Admission(settings.max_queued_images)
    decoders = Decoders(settings.decode_workers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()
        decoders.shutdown()

    app = FastAPI(title=f"mtl-hf serve: {predictor.metadata['model']}", lifespan=lifespan)
    page = resources.files("mtl_hf.serving").joinpath("page.html").read_text()

    @app.exception_handler(ServingRefusal)
    async def refused(request: Request, error: ServingRefusal):
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)

    def authorised(request: Request) -> None:
        check_api_key(settings.api_key, request.headers.get("authorization"), request.headers.get("x-api-key"))

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "batches": batcher.batches,
            "images": batcher.images,
            "photos_held": admission.held,
            "refused_busy": admission.refused,
            "decoding": decoders.running,
            "decodes_skipped_past_deadline": decoders.skipped,
        }

    @app.get("/metadata")
    async def metadata(request: Request):
        authorised(request)
        return predictor.metadata

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.post("/predict")
    async def predict(request: Request):
        authorised(request)  # before the body is read
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout
        late = ServingRefusal(504, f"no answer within the request timeout ({settings.request_timeout:g} s)")
        try:
            uploads = await asyncio.wait_for(_uploads(request, settings), settings.request_timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError: asyncio's own class on Python 3.10
            raise late from None
        pixels = sum(predictor.measure(data, max_pixels=settings.max_pixels, name=name) for name, data in uploads)
        if pixels > settings.max_request_pixels:
            raise ServingRefusal(
                413,
                f"the request's photos hold {pixels / 1e6:.1f} MP, more than the server's limit of "
                f"{settings.max_request_pixels / 1e6:g} MP a request (--max_request_pixels): send fewer or smaller",
            )
        admission.admit(len(uploads))
        try:
            prepared = [
                await decoders.run(lambda data=data, name=name: predictor.prepare(data, name=name), deadline)
                for name, data in uploads
            ]
            return_by = deadline - loop.time()
            if return_by <= 0:
                raise PastDeadline
            answers = await asyncio.wait_for(batcher.submit(prepared), return_by)
        except (PastDeadline, asyncio.TimeoutError):
            raise late from None
        except ServingRefusal:
            raise
        except Exception as error:  # a failed forward: this request's error, not the server's end
            raise ServingRefusal(500, f"the model failed on this request ({type(error).__name__}: {error})") from None
        finally:
            admission.release(len(uploads))
        meta = predictor.metadata
        return {"model": meta["model"], "revision": meta["revision"], "predictions": answers}

    return app


async def _uploads(request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """(name, bytes) of each photo of the request, its size and type checked before it is read."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = content_type.startswith(RAW_TYPES)
    if not raw and content_type != "multipart/form-data":
        raise ServingRefusal(
            415,
            f"Content-Type {content_type or '(none)'}: send a photo as the body (image/jpeg, image/png, ...) or "
            "photos as multipart/form-data files",
        )
    length = request.headers.get("content-length")
    if length is None:
        raise ServingRefusal(411, "the request has no Content-Length: send the photo's size with it")
    if int(length) > settings.max_upload_bytes:
        raise ServingRefusal(
            413, f"the upload is {int(length):,} bytes, more than the server's limit of {settings.max_upload_bytes:,}"
        )
    if raw:
        body = await request.body()
        if not body:
            raise ServingRefusal(400, "the request's body is empty: send the photo's bytes")
        return [("the photo", body)]
    from starlette.exceptions import HTTPException

    try:
        form = await request.form(max_files=settings.max_images, max_fields=settings.max_images)
    except HTTPException as error:  # starlette's refusal of the form (too many files, a broken body)
        raise ServingRefusal(400, f"the multipart request: {error.detail} (the server's --max_images)") from None
    files = [value for _, value in form.multi_items() if hasattr(value, "read")]
    if not files:
        raise ServingRefusal(400, "the multipart request holds no file: attach the photos as files")
    uploads = [(f"file {file.filename or index}", await file.read()) for index, file in enumerate(files)]
    empty = [name for name, data in uploads if not data]
    if empty:
        raise ServingRefusal(400, f"{', '.join(empty)}: empty")
    return uploads


__all__ = ["ServeSettings", "build_app"]
