"""`mtl-hf predict MODEL IMAGE...`: every task's answer for each image, as a table or JSON, through the
`multi-task-image-classification` pipeline (the model's own image processor, one forward per batch)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import MissingPathError
from .model_loading import add_pickled_weights_flag, existing_model, has_gpu, loading_model

SUMMARY = "every task's answer for each image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a saved model folder or Hub id")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or URLs")
    parser.add_argument("--top_k", type=int, default=3, help="labels shown per classification task (default: 3)")
    parser.add_argument("--threshold", type=float, default=0.5, help="multilabel score threshold (default: 0.5)")
    parser.add_argument("--batch_size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per image) instead of a table")
    add_pickled_weights_flag(parser)


def run(args: argparse.Namespace) -> int:
    from transformers import pipeline

    from ..inference.registration import PIPELINE_TASK
    from ..models.mtl_vit.modeling_mtl_vit import refuse_pickled_weights

    model = existing_model(args.model)
    for image in args.images:
        if Path(image).is_dir():
            raise MissingPathError(f"{image} is a folder: give its image files, e.g. {Path(image) / '*.jpg'}")
        if not image.startswith(("http://", "https://")) and not Path(image).is_file():
            raise MissingPathError(f"no image file at {image}")
    with loading_model(model):
        if not args.allow_pickled_weights:  # here, since the pipeline would bury the reason in its own message
            refuse_pickled_weights(model)
        classify = pipeline(
            PIPELINE_TASK,
            model=model,
            device=0 if has_gpu() else -1,
            model_kwargs={"allow_pickled_weights": args.allow_pickled_weights},
        )
    results = classify(args.images, top_k=args.top_k, threshold=args.threshold, batch_size=args.batch_size)
    if args.json:
        answers = [{"image": image, "predictions": result} for image, result in zip(args.images, results, strict=True)]
        print(json.dumps(answers, indent=2))
        return 0
    for image, result in zip(args.images, results, strict=True):
        print(f"\n{image}")
        for task, answers in result.items():
            if answers and "value" in answers[0]:
                shown = ", ".join(f"{a['value']:.4f}" for a in answers)
            else:
                shown = ", ".join(f"{a['label']} ({a['score']:.3f})" for a in answers) or "(none above threshold)"
            print(f"  {task:<14} {shown}")
    return 0


__all__ = ["SUMMARY", "add_arguments", "run"]
