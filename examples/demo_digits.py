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
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score, r2_score
from transformers import HfArgumentParser, ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource, load_digits_dataset

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


def baselines(labels: dict[str, np.ndarray], train: Dataset) -> dict[str, float]:
    """Scores of answers that ignore the image: the most frequent digit, "yes" to every trait, the mean ink."""
    majority_digit = np.bincount([d for d in train["digit"] if d is not None]).argmax()
    mean_ink = np.mean([v for v in train["ink"] if v is not None])
    traits = labels["traits"].astype(int)
    return {
        "digit_accuracy": accuracy_score(labels["digit"], np.full_like(labels["digit"], majority_digit)),
        "traits_micro_f1": f1_score(traits, np.ones_like(traits), average="micro"),
        "ink_r2": r2_score(labels["ink"][:, 0], np.full(len(labels["ink"]), mean_ink)),
    }


def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()

    # 1. Data: the real digit scans, three label columns, a share of the training labels emptied.
    digits = load_digits_dataset().train_test_split(test_size=0.2, seed=args.seed, stratify_by_column="digit")
    train_rows = empty_targets(digits["train"], args.missing_rate, args.seed)
    train = TaskSource(train_rows, TASKS, name="digits")
    test = TaskSource(digits["test"], TASKS, name="digits_test")

    # 2. Model: a tiny ViT from scratch with one head per task, its tasks read off the data.
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=train.task_specs))

    # 3. Train: one joint source, so every batch carries all three tasks (some targets missing).
    training_args = MultiTaskTrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=args.learning_rate,
        warmup_steps=0.05,
        weight_decay=0.05,
        lr_scheduler_type="cosine",
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=args.seed,
    )
    # 8x8 scans upscaled to 32 px: resize only, no crops or flips (a flipped 2 is no 2).
    transforms = ImageTransforms(size=(32, 32), train=False)
    trainer = MultiTaskTrainer(model, training_args, train_dataset=train, image_transforms=transforms)
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started

    # 4. Evaluate every task on the held-out digits, beside answers that ignore the image.
    prediction = trainer.predict(test, metric_key_prefix="test")
    reference = baselines(prediction.label_ids, train_rows)
    metrics = {key: round(float(value), 4) for key, value in prediction.metrics.items()}
    metrics.update({f"{key}_baseline": round(float(value), 4) for key, value in reference.items()})
    metrics["train_seconds"] = round(train_seconds, 1)

    # 5. Save the model (safetensors + config), its image processor and the metrics.
    output_dir = Path(args.output_dir)
    trainer.save_model(output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    print(f"\n{'task':<8} {'metric':<10} {'test':>8} {'baseline':>9}")
    for task, metric, key in [("digit", "accuracy", "digit_accuracy"), ("traits", "micro-F1", "traits_micro_f1"),
                              ("ink", "R^2", "ink_r2")]:  # fmt: skip
        print(f"{task:<8} {metric:<10} {metrics['test_' + key]:>8.3f} {metrics[key + '_baseline']:>9.3f}")
    print(f"\ntrained in {train_seconds:.0f} s; model, image processor and metrics.json saved to {output_dir}/")


if __name__ == "__main__":
    main()
