"""`mtl-hf merge MODEL OUTPUT`: a model trained with LoRA adapters, folded into a plain model.

The merged folder answers as the adapters did (to float rounding), loads without `peft`, and without mtl_hf
through its remote code: the form to push to the Hub or export. The model's other files (image processor,
card, curves) are copied beside it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SUMMARY = "fold a LoRA-trained model's adapters into its weights (a plain model for the Hub and export)"
KEPT_FROM_THE_MODEL = (
    "preprocessor_config.json",
    "README.md",
    "training_curves.png",
    "all_results.json",
    "calibration.png",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the saved model folder, trained with LoRA adapters")
    parser.add_argument("output", help="the folder for the merged model (must not exist)")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .model_loading import existing_model, loading_model

    source, output = Path(args.model), Path(args.output)
    if output.exists():
        raise UserError(f"{output} exists; give merge a new folder, so that nothing is overwritten")
    existing_model(args.model)
    if not source.is_dir():
        raise UserError(f"{source}: merge reads a saved model folder; download the model first")
    from ..models.mtl_vit.modeling_mtl_vit import MultiTaskViTModel

    with loading_model(args.model):
        model = MultiTaskViTModel.from_pretrained(source)
    if model.config.lora is None:
        raise UserError(f"{source} has no LoRA adapters (its config.json has no 'lora'): it is a plain model already")
    lora = model.config.lora
    model.merge_lora()
    model.save_pretrained(output)
    for name in KEPT_FROM_THE_MODEL:
        if (source / name).is_file():
            shutil.copy2(source / name, output / name)
    print(f"merged the LoRA adapters ({lora}) of {source} into {output}")
    return 0


__all__ = ["SUMMARY", "add_arguments", "run"]
