"""`mtl-hf serve MODEL [--host 127.0.0.1] [--port 8000]`: the model behind an HTTP endpoint, loaded once, photos
from concurrent requests answered in shared forwards (see `serving/app.py` for the endpoints)."""

from __future__ import annotations

import argparse
import socket

from ..errors import UserError
from .model_loading import add_pickled_weights_flag, existing_model, loading_model
from .precision import add_engine_arguments, gated_bf16, refuse_gate_arguments_unused
from .predict import add_review_argument

SUMMARY = "the model behind an HTTP endpoint (POST /predict, GET /health, /metadata, a page at /)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serving.settings import ServeSettings

    defaults = ServeSettings()
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the port to listen on (default: 8000)")
    parser.add_argument(
        "--max_batch_size", type=int, default=defaults.max_batch_size, help="photos per forward, from all requests"
    )
    parser.add_argument(
        "--max_wait_ms",
        type=float,
        default=defaults.max_wait_ms,
        help="the longest a photo waits for others to share its forward (0: no waiting)",
    )
    parser.add_argument("--max_upload_bytes", type=int, default=defaults.max_upload_bytes, help="per request")
    parser.add_argument("--max_pixels", type=int, default=defaults.max_pixels, help="per photo")
    parser.add_argument(
        "--max_request_pixels", type=int, default=defaults.max_request_pixels, help="all the photos of a request"
    )
    parser.add_argument("--max_images", type=int, default=defaults.max_images, help="photos per request")
    parser.add_argument(
        "--max_queued_images",
        type=int,
        default=defaults.max_queued_images,
        help="photos held at once (decoding, waiting, in a forward); past it a 503 with Retry-After",
    )
    parser.add_argument("--decode_workers", type=int, default=defaults.decode_workers, help="photos decoded at once")
    parser.add_argument(
        "--max_connections", type=int, default=defaults.max_connections, help="requests at once; past it a 503"
    )
    parser.add_argument(
        "--request_timeout",
        type=float,
        default=defaults.request_timeout,
        help="seconds before a request gets a 504, its upload included",
    )
    parser.add_argument(
        "--api_key_env",
        metavar="VAR",
        help="the environment variable holding a shared secret that requests must send (Authorization: Bearer "
        "KEY, or X-API-Key); without it anyone who reaches the port can use the model (docs/serving.md)",
    )
    parser.add_argument("--top_k", type=int, default=3, help="labels with scores per classification task")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[TASK=]SCORE",
        help="multilabel threshold (default: each label's calibrated one, else 0.5)",
    )
    add_engine_arguments(parser)
    add_review_argument(parser)
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from ..serving.settings import ServeSettings
    from .predict import parse_review_precision, parse_thresholds

    for name in (
        "max_batch_size",
        "max_upload_bytes",
        "max_pixels",
        "max_request_pixels",
        "max_images",
        "max_queued_images",
        "decode_workers",
        "max_connections",
        "top_k",
    ):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("max_wait_ms", "request_timeout"):
        if getattr(args, name) < 0 or (name == "request_timeout" and args.request_timeout == 0):
            raise UserError(
                f"--{name} must be {'> 0' if name == 'request_timeout' else '>= 0'}, got {getattr(args, name)}"
            )
    if args.max_queued_images < args.max_images:
        raise UserError(
            f"--max_queued_images {args.max_queued_images} is less than --max_images {args.max_images}: a full "
            "request could never be let in; raise --max_queued_images"
        )
    settings = ServeSettings(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_upload_bytes=args.max_upload_bytes,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        max_images=args.max_images,
        max_queued_images=args.max_queued_images,
        decode_workers=args.decode_workers,
        max_connections=args.max_connections,
        request_timeout=args.request_timeout,
        api_key=_api_key(args.api_key_env),
    )
    try:
        import uvicorn
    except ImportError:
        from ..errors import missing_extra

        raise missing_extra("mtl-hf serve", "serve", "uvicorn") from None
    if args.dtype != "bf16":
        refuse_gate_arguments_unused(args, "--dtype bf16")
    if args.engine == "onnx" and args.dtype != "auto":
        raise UserError("--dtype is the PyTorch engine's; an ONNX graph's precision is its export's")
    location = existing_model(args.model)
    _check_port_free(args.host, args.port)  # before the model loads: a refusal comes at once
    every_task, per_task = parse_thresholds(args.threshold)
    review = parse_review_precision(args.review_precision)
    with loading_model(args.model):
        from ..inference.answers import thresholds_by_task
        from ..inference.review import review_cuts, review_table
        from ..models.mtl_vit.configuration_mtl_vit import MultiTaskViTConfig
        from ..serving.app import build_app
        from ..serving.predictor import ImagePredictor

        config = MultiTaskViTConfig.from_pretrained(location)
        thresholds = thresholds_by_task(every_task, per_task, config.task_specs)
        cuts = review_cuts(config, *review, thresholds, args.model) if args.review_precision else {}
        if cuts:
            print(review_table(cuts))
        if args.dtype == "bf16":
            gated_bf16(args, location, config, thresholds)
        predictor = ImagePredictor(
            location,
            top_k=args.top_k,
            thresholds=thresholds,
            review_cuts={task: cut["cut"] for task, cut in cuts.items()},
            allow_pickled_weights=args.allow_pickled_weights,
            engine=args.engine,
            dtype=args.dtype,
        )
    app = build_app(predictor, settings)
    print(
        f"serving {predictor.metadata['model']} ({predictor.metadata['revision']}) on http://{args.host}:{args.port}: "
        "POST /predict, GET /health, GET /metadata, a page at /"
        + ("; requests need the API key" if settings.api_key else "; no API key: anyone who reaches it can use it"),
        flush=True,
    )
    # SIGTERM / Ctrl-C: uvicorn stops accepting, lets the requests in flight finish (up to the request timeout).
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.request_timeout) + 1,
        limit_concurrency=settings.max_connections,
    )
    uvicorn.Server(config).run()
    return 0


def _api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    import os

    key = os.environ.get(variable, "")
    if len(key) < 16:
        raise UserError(
            f"--api_key_env {variable}: the variable is {'empty or unset' if not key else 'shorter than 16 characters'}"
            f"; export {variable}=<a long random secret>, e.g. python -c 'import secrets; print(secrets.token_hex())'"
        )
    return key


def _check_port_free(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(
                f"port {port} on {host} is in use or not available ({error.strerror}): choose another with --port"
            ) from None


__all__ = ["SUMMARY", "add_arguments", "run"]
