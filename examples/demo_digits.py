"""Train one small ViT on three tasks at once on scikit-learn's handwritten digits, offline.

    python examples/demo_digits.py --output_dir outputs/demo

The tasks, from the 1,797 real 8x8 digit scans bundled with scikit-learn (`mtl_hf.data.load_digits_dataset`):
- `digit`: which digit (classification, 10 labels);
- `traits`: is it even / prime / greater than 4 (multilabel, 3 labels);
- `ink`: how much ink the scan holds (regression, 1 value, a z-score).
A share of the training targets is emptied (`--missing_rate`), as in real shop data where some
attributes are not filled in; the model learns from what is there. The test split keeps every
target. The script prints each task's test metric beside a baseline that ignores the image, and
saves the model, its image processor and `metrics.json` to `--output_dir`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score, r2_score
from transformers import HfArgumentParser, Trainer, TrainingArguments, ViTConfig

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource, load_digits_dataset

TASKS = ["digit", "traits", "ink"]


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the model and metrics.json go."})
    epochs: float = field(default=40.0, metadata={"help": "Training epochs over the 1,437 training digits."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs if > 0)."})
    batch_size: int = field(default=64, metadata={"help": "Images per training step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    missing_rate: float = field(default=0.25, metadata={"help": "Share of each task's training targets emptied."})
    seed: int = field(default=0, metadata={"help": "Seed of the split, the emptied targets and training."})


def empty_targets(dataset: Dataset, rate: float, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    emptied = {task: rng.random(len(dataset)) < rate for task in TASKS}

    def empty(row: dict, index: int) -> dict:
        return {task: None if emptied[task][index] else row[task] for task in TASKS}

    return dataset.map(empty, with_indices=True)


class SourceRows(torch.utils.data.Dataset):
    """A map-style task source, row by row, for the stock Trainer's sampler and DataLoader."""

    def __init__(self, source: TaskSource):
        self.source = source

    def __len__(self) -> int:
        return self.source.num_rows

    def __getitem__(self, index: int):
        return self.source.rows([index])[0]


@torch.no_grad()
def predict(model: MultiTaskViTModel, batches) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.eval()
    logits, labels = [], []
    for batch in batches:
        logits.append(model(batch["pixel_values"]).logits)
        labels.append(batch["labels"])
    join = lambda parts: {name: torch.cat([part[name] for part in parts]) for name in parts[0]}  # noqa: E731
    return join(logits), join(labels)


def evaluate_tasks(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], train: Dataset) -> dict:
    digit_true = labels["digit"].numpy()
    traits_true = labels["traits"].numpy().astype(int)
    ink_true = labels["ink"].numpy()[:, 0]
    majority_digit = np.bincount([d for d in train["digit"] if d is not None]).argmax()
    mean_ink = np.mean([v for v in train["ink"] if v is not None])
    return {
        "digit_accuracy": accuracy_score(digit_true, logits["digit"].argmax(-1).numpy()),
        "digit_accuracy_baseline": accuracy_score(digit_true, np.full_like(digit_true, majority_digit)),
        "traits_micro_f1": f1_score(traits_true, (logits["traits"] > 0).int().numpy(), average="micro"),
        # Saying "yes" to every trait is the best constant answer for F1.
        "traits_micro_f1_baseline": f1_score(traits_true, np.ones_like(traits_true), average="micro"),
        "ink_r2": r2_score(ink_true, logits["ink"].numpy()[:, 0]),
        "ink_r2_baseline": r2_score(ink_true, np.full_like(ink_true, mean_ink)),
    }


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    torch.manual_seed(args.seed)

    # 1. Data: the real digit scans, three label columns, a share of the training labels emptied.
    digits = load_digits_dataset().train_test_split(test_size=0.2, seed=args.seed, stratify_by_column="digit")
    train_rows = empty_targets(digits["train"], args.missing_rate, args.seed)
    train_source, test_source = TaskSource(train_rows, TASKS), TaskSource(digits["test"], TASKS)
    transforms = ImageTransforms(size=(32, 32))  # 8x8 scans upscaled; no augmentation for digits
    collator = MultiTaskCollator(train_source.task_specs, transforms)

    # 2. Model: a tiny ViT from scratch with one head per task, its tasks read off the data.
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=train_source.task_specs))

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
    trainer = Trainer(model=model, args=training_args, train_dataset=SourceRows(train_source), data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    # 4. Evaluate every task on the held-out digits, against a baseline that ignores the image.
    test_batches = torch.utils.data.DataLoader(SourceRows(test_source), batch_size=256, collate_fn=collator)
    metrics = evaluate_tasks(*predict(model, test_batches), train_rows)
    metrics = {name: round(float(value), 4) for name, value in metrics.items()}
    metrics["train_seconds"] = round(train_seconds, 1)

    # 5. Save the model (safetensors + config), its image processor and the metrics.
    output_dir = Path(args.output_dir)
    trainer.save_model(output_dir)
    transforms.image_processor().save_pretrained(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    print(f"\n{'task':<8} {'metric':<10} {'test':>8} {'baseline':>9}")
    for task, metric, key in [("digit", "accuracy", "digit_accuracy"), ("traits", "micro-F1", "traits_micro_f1"),
                              ("ink", "R^2", "ink_r2")]:  # fmt: skip
        print(f"{task:<8} {metric:<10} {metrics[key]:>8.3f} {metrics[key + '_baseline']:>9.3f}")
    print(f"\ntrained in {train_seconds:.0f} s; model, image processor and metrics.json saved to {output_dir}/")


if __name__ == "__main__":
    main()
