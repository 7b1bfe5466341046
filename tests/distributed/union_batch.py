"""Trains on a fixed plan of batches: each step's union batch in one process, or its halves on 2 ranks.

    python tests/distributed/union_batch.py OUT_DIR                                   # 1 process, union batches
    torchrun --standalone --nproc_per_node 2 tests/distributed/union_batch.py OUT_DIR  # 2 ranks, half each

Both write the final parameters of every configuration to OUT_DIR/<world>_<rank>.pt. The plan has
sparse labels on purpose: a task with targets on one rank only, a task with no target in a step.
"""

import dataclasses
import os
import sys

import torch
import torch.distributed as dist
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import MixtureBatch, MultiTaskCollator, TaskSource, load_digits_dataset, load_shop_dataset

HALF = 4  # rows per rank per step
STEPS = 6
CONFIGURATIONS = [
    {"weighting": "equal", "batch_mode": "mixed"},
    {"weighting": "equal", "batch_mode": "homogeneous"},
    {"weighting": "famo", "batch_mode": "mixed"},
    {"weighting": "uncertainty", "batch_mode": "mixed"},
    {"weighting": "log_loss", "batch_mode": "mixed"},
    {"weighting": "geometric", "batch_mode": "mixed"},
    {"weighting": "stch", "batch_mode": "mixed"},
    {"weighting": "imtl_l", "batch_mode": "mixed"},
    {"weighting": "upgrad", "batch_mode": "mixed", "gradient_space": "representation"},
    {"weighting": "upgrad", "batch_mode": "homogeneous", "gradient_space": "representation"},
    {"weighting": "mgda", "batch_mode": "mixed", "gradient_space": "representation"},
    {"weighting": "pcgrad", "batch_mode": "mixed", "gradient_space": "parameters"},
    {"weighting": "pcgrad", "batch_mode": "homogeneous", "gradient_space": "parameters"},
    {"weighting": "equal", "batch_mode": "homogeneous", "freeze_backbone": True},
    {
        "weighting": "equal",
        "batch_mode": "mixed",
        "freeze_backbone": True,
        "unfreeze_backbone_at_step": 3,
        "layer_decay": 0.5,
        "head_learning_rate": 0.05,
    },
    {
        "weighting": "pcgrad",
        "batch_mode": "mixed",
        "gradient_space": "parameters",
        "freeze_backbone": True,
        "unfreeze_backbone_at_step": 3,
    },
    # Checkpointed, with homogeneous batches whose other heads go unused.
    {"weighting": "equal", "batch_mode": "homogeneous", "activation_checkpointing": True},
    {
        "weighting": "pcgrad",
        "batch_mode": "homogeneous",
        "gradient_space": "parameters",
        "activation_checkpointing": True,
    },
    {
        "weighting": "upgrad",
        "batch_mode": "homogeneous",
        "gradient_space": "representation",
        "activation_checkpointing": True,
    },
    # Weighted means: balanced class weights with label smoothing, positive weights (LOSS_OPTIONS).
    {"weighting": "equal", "batch_mode": "mixed", "loss_options": True},
    {"weighting": "uncertainty", "batch_mode": "mixed", "loss_options": True},
    {"weighting": "pcgrad", "batch_mode": "mixed", "gradient_space": "parameters", "loss_options": True},
]
LOSS_OPTIONS = {
    "category": {"class_weights": "balanced", "label_smoothing": 0.1},
    "colour": {"class_weights": "balanced"},
    "size": {},
    "digit": {"class_weights": "balanced", "label_smoothing": 0.2},
    "traits": {"pos_weight": "balanced"},
}


def sources(loss_options=False):
    def tasks(names):
        return {name: LOSS_OPTIONS[name] for name in names} if loss_options else names

    shop = TaskSource(
        load_shop_dataset(64, seed=0, missing_rate=0.3), tasks(["category", "colour", "size"]), name="shop"
    )
    digits = TaskSource(load_digits_dataset().select(range(64)), tasks(["digit", "traits"]), name="digits")
    return shop, digits


def without(example, task):
    return dataclasses.replace(example, labels={k: v for k, v in example.labels.items() if k != task})


def plan(batch_mode, loss_options=False):
    """Per step: the union batch's rows (2 * HALF) and the tasks a homogeneous batch serves."""
    shop, digits = sources(loss_options)
    steps = []
    for step in range(STEPS):
        if batch_mode == "homogeneous":
            source = (shop, digits)[step % 2]
            rows = source.rows([(step * 2 * HALF + i) % source.num_rows for i in range(2 * HALF)])
            tasks = tuple(source.task_names)
        else:
            # Steps 0 and 3 hold shop photos only: the digit tasks have no target anywhere.
            count = 2 * HALF if step in (0, 3) else HALF + 1
            rows = shop.rows([step * 8 + i for i in range(count)])
            rows += digits.rows([step * 8 + i for i in range(2 * HALF - count)])
            tasks = None
        if step in (1, 2):
            # 'colour' keeps targets on the first half (rank 0) only.
            rows = rows[:HALF] + [without(example, "colour") for example in rows[HALF:]]
        steps.append((rows, tasks))
    return steps


class FixedPlanTrainer(MultiTaskTrainer):
    """Trains on the given pre-collated batches, in order (the data path is not under test here)."""

    def __init__(self, *args, batches, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = batches

    def get_train_dataloader(self):
        return self.batches


def main(out_dir: str) -> None:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    results = {}
    for index, configuration in enumerate(CONFIGURATIONS):
        configuration = dict(configuration)
        loss_options = configuration.pop("loss_options", False)
        shop, digits = sources(loss_options)
        torch.manual_seed(0)
        model = MultiTaskViTModel(
            MultiTaskViTConfig(backbone_config=backbone, tasks=shop.task_specs + digits.task_specs)
        )
        initial_backbone = torch.cat([p.detach().flatten() for p in model.backbone.parameters()])
        args = MultiTaskTrainingArguments(
            output_dir=os.path.join(out_dir, f"run{index}"),
            max_steps=STEPS,
            per_device_train_batch_size=HALF,
            learning_rate=0.1,
            optim="sgd",
            lr_scheduler_type="constant",
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=0,
            disable_tqdm=True,
            **({"ddp_backend": "gloo"} if distributed else {}),
            **configuration,
        )
        trainer = FixedPlanTrainer(model, args, train_dataset=[shop, digits], batches=[])
        collator = MultiTaskCollator(trainer.train_mixture.task_specs, trainer.image_transforms.eval())
        rank, world = args.process_index, args.world_size
        for rows, tasks in plan(configuration["batch_mode"], loss_options):
            mine = rows if world == 1 else rows[rank * HALF : (rank + 1) * HALF]
            trainer.batches.append(collator(MixtureBatch(mine, tasks)))
        trainer.train()
        name = "-".join(value if isinstance(value, str) else f"{key}={value}" for key, value in configuration.items())
        name += "-loss_options" if loss_options else ""
        results[name] = {
            "parameters": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]),
            "backbone_moved": not torch.equal(
                initial_backbone, torch.cat([p.detach().flatten() for p in trainer.model.backbone.parameters()])
            ),
            "logs": [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e],
            "world_size": world,
        }
    rank = dist.get_rank() if distributed else 0
    torch.save(results, os.path.join(out_dir, f"world{2 if distributed else 1}_rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
