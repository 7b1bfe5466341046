"""Trains under torchrun (one process per rank) and writes what each rank saw (run as a script).

torchrun --standalone --nproc_per_node 2 tests/distributed/train_two_ranks.py OUT_DIR
"""

import hashlib
import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import TaskSource, load_digits_dataset, load_shop_dataset

RUNS = [
    {"batch_mode": "homogeneous", "weighting": "famo"},
    {"batch_mode": "mixed", "weighting": "famo", "when_exhausted": "stop"},
    {"batch_mode": "homogeneous", "weighting": "pcgrad", "gradient_space": "parameters"},
    {"batch_mode": "mixed", "weighting": "pcgrad", "gradient_space": "parameters"},
    {"batch_mode": "mixed", "weighting": "upgrad", "gradient_space": "representation"},
    {"batch_mode": "homogeneous", "weighting": "upgrad", "gradient_space": "parameters"},
    {"batch_mode": "mixed", "weighting": "nash_mtl", "gradient_space": "representation"},
]


def main(out_dir: str) -> None:
    shop = TaskSource(load_shop_dataset(64, seed=0), ["category", "colour", "tags", "size"], name="shop")
    # 37 digits: 18 a rank, so the small source runs out and recycles within the run.
    digits = TaskSource(load_digits_dataset().select(range(37)), ["digit", "traits"], name="digits")
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    results = []
    for index, run in enumerate(RUNS):
        torch.manual_seed(0)
        model = MultiTaskViTModel(
            MultiTaskViTConfig(backbone_config=backbone, tasks=shop.task_specs + digits.task_specs)
        )
        args = MultiTaskTrainingArguments(
            output_dir=os.path.join(out_dir, f"run{index}"),
            max_steps=12,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            use_cpu=True,
            ddp_backend="gloo",
            report_to="none",
            save_strategy="no",
            logging_steps=4,
            seed=0,
            disable_tqdm=True,
            sampling_strategy="uniform",
            **run,
        )
        trainer = MultiTaskTrainer(model, args, train_dataset=[shop, digits])
        trainer.train()

        # The rows this rank was served: the same plan, read again without decoding.
        # In the first epoch's first pass over a source a rank reads its share; later passes
        # (and epochs) reshuffle the source.
        mixture = trainer.train_mixture
        served, tasks = {source.name: [] for source in mixture.sources}, []
        for epoch in range(3):
            mixture.set_epoch(epoch)
            for batch in mixture:
                for example in batch.examples if epoch == 0 else ():
                    served[example.source].append(example.row)
                tasks.append(list(batch.tasks) if batch.tasks else sorted({e.source for e in batch.examples}))
        shares = {source.name: source.num_rows // mixture.world_size for source in mixture.sources}
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        results.append(
            {
                "run": run,
                "world_size": dist.get_world_size(),
                "rank": dist.get_rank(),
                "mixture_world_size": mixture.world_size,
                "first_pass": {name: rows[: shares[name]] for name, rows in served.items()},
                "tasks_per_step": tasks[:12],
                "parameters_sha1": hashlib.sha1(flat.numpy().tobytes()).hexdigest(),
                "weighting_state": {
                    key: value.tolist()
                    for key, value in trainer.weighting.state_dict().items()
                    if isinstance(value, torch.Tensor)
                },
                "losses_logged": [
                    e["loss"] for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e
                ],
            }
        )
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
