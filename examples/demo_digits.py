"""Train one small ViT on three tasks at once on scikit-learn's handwritten digits, offline.

    python examples/demo_digits.py --output_dir outputs/demo

The tasks, from the 1,797 real 8x8 digit scans bundled with scikit-learn:
- `digit`: which digit (classification, 10 labels);
- `traits`: is it even / prime / greater than 4 (multilabel, 3 labels);
- `ink`: how much of the image is ink (regression, 1 value).
A share of the training targets is hidden (`--missing_rate`), as in real shop data where some
attributes are not filled in; the model learns from what is there. The test split keeps every
target. The script prints each task's test metric beside a trivial baseline, and saves the model
and `metrics.json` to `--output_dir`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, f1_score, r2_score
from sklearn.model_selection import train_test_split
from transformers import HfArgumentParser, Trainer, TrainingArguments, ViTConfig

from mtl_hf import MISSING_CLASS, MultiTaskViTConfig, MultiTaskViTModel

IMAGE_SIZE = 32
TRAITS = ["even", "prime", "above_four"]
MISSING = {"digit": MISSING_CLASS, "traits": MISSING_CLASS, "ink": float("nan")}  # the model's conventions


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the model and metrics.json go."})
    epochs: float = field(default=40.0, metadata={"help": "Training epochs over the 1,437 training digits."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs if > 0)."})
    batch_size: int = field(default=64, metadata={"help": "Images per training step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    missing_rate: float = field(default=0.25, metadata={"help": "Share of each task's training targets hidden."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, the hidden targets and training."})


def digit_images() -> tuple[torch.Tensor, np.ndarray]:
    digits = load_digits()
    grey = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    grey = F.interpolate(grey, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    pixel_values = (grey.repeat(1, 3, 1, 1) - 0.5) / 0.5  # RGB, normalised as ViT's processor does
    return pixel_values, digits.target


def task_targets(digit: np.ndarray, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    traits = np.stack([digit % 2 == 0, np.isin(digit, [2, 3, 5, 7]), digit > 4], axis=1)
    ink = (pixel_values[:, 0] > 0).float().mean(dim=(1, 2))  # share of pixels brighter than mid-grey
    return {
        "digit": torch.tensor(digit, dtype=torch.long),
        "traits": torch.tensor(traits, dtype=torch.float32),
        "ink": ((ink - ink.mean()) / ink.std()).unsqueeze(1),
    }


def hide_targets(targets: dict[str, torch.Tensor], rate: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = {}
    for name, values in targets.items():
        values = values.clone()
        rows = torch.rand(len(values), generator=generator) < rate
        values[rows] = MISSING[name]
        hidden[name] = values
    return hidden


class DigitTasks(torch.utils.data.Dataset):
    def __init__(self, pixel_values: torch.Tensor, targets: dict[str, torch.Tensor]):
        self.pixel_values, self.targets = pixel_values, targets

    def __len__(self) -> int:
        return len(self.pixel_values)

    def __getitem__(self, index: int) -> dict:
        return {
            "pixel_values": self.pixel_values[index],
            "labels": {name: values[index] for name, values in self.targets.items()},
        }


def collate(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": {name: torch.stack([e["labels"][name] for e in examples]) for name in examples[0]["labels"]},
    }


@torch.no_grad()
def predict(model: MultiTaskViTModel, pixel_values: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
    model.eval()
    batches = [model(pixel_values[i : i + batch_size]).logits for i in range(0, len(pixel_values), batch_size)]
    return {name: torch.cat([b[name] for b in batches]) for name in batches[0]}


def evaluate_tasks(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], train_targets) -> dict:
    digit_true = targets["digit"].numpy()
    traits_true = targets["traits"].numpy().astype(int)
    ink_true = targets["ink"].numpy()[:, 0]
    # Baselines that see no image.
    majority_digit = np.bincount(train_targets["digit"].numpy()).argmax()
    return {
        "digit_accuracy": accuracy_score(digit_true, logits["digit"].argmax(-1).numpy()),
        "digit_accuracy_baseline": accuracy_score(digit_true, np.full_like(digit_true, majority_digit)),
        "traits_micro_f1": f1_score(traits_true, (logits["traits"] > 0).int().numpy(), average="micro"),
        # Saying "yes" to every trait is the best constant answer for F1.
        "traits_micro_f1_baseline": f1_score(traits_true, np.ones_like(traits_true), average="micro"),
        "ink_r2": r2_score(ink_true, logits["ink"].numpy()[:, 0]),
        "ink_r2_baseline": 0.0,  # predicting the training mean
    }


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    torch.manual_seed(args.seed)

    # 1. Data: real digit scans, three targets each, a share of the training targets hidden.
    pixel_values, digit = digit_images()
    targets = task_targets(digit, pixel_values)
    train_idx, test_idx = train_test_split(np.arange(len(digit)), test_size=0.2, random_state=args.seed, stratify=digit)
    train_targets = {name: values[train_idx] for name, values in targets.items()}
    test_targets = {name: values[test_idx] for name, values in targets.items()}
    train_set = DigitTasks(pixel_values[train_idx], hide_targets(train_targets, args.missing_rate, args.seed))

    # 2. Model: a tiny ViT from scratch with one head per task.
    config = MultiTaskViTConfig(
        backbone_config=ViTConfig(
            image_size=IMAGE_SIZE, patch_size=8, hidden_size=64, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=128,
        ),
        tasks=[
            {"name": "digit", "type": "classification", "labels": [str(d) for d in range(10)]},
            {"name": "traits", "type": "multilabel", "labels": TRAITS},
            {"name": "ink", "type": "regression", "num_outputs": 1},
        ],
    )  # fmt: skip
    model = MultiTaskViTModel(config)

    # 3. Train with the stock Trainer (the model computes its multi-task loss itself).
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=0.05,
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        remove_unused_columns=False,
        use_cpu=True,
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=collate)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    # 4. Evaluate every task on the held-out digits, against a baseline that ignores the image.
    metrics = evaluate_tasks(predict(model, pixel_values[test_idx]), test_targets, train_targets)
    metrics = {name: round(float(value), 4) for name, value in metrics.items()}
    metrics["train_seconds"] = round(train_seconds, 1)

    # 5. Save the model (safetensors + config) and the metrics.
    output_dir = Path(args.output_dir)
    trainer.save_model(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    print(f"\n{'task':<8} {'metric':<10} {'test':>8} {'baseline':>9}")
    for task, metric, key in [("digit", "accuracy", "digit_accuracy"), ("traits", "micro-F1", "traits_micro_f1"),
                              ("ink", "R^2", "ink_r2")]:  # fmt: skip
        print(f"{task:<8} {metric:<10} {metrics[key]:>8.3f} {metrics[key + '_baseline']:>9.3f}")
    print(f"\ntrained in {train_seconds:.0f} s; model and metrics.json saved to {output_dir}/")


if __name__ == "__main__":
    main()
