"""Evaluates one fixed model in one process or under torchrun and writes what each rank computed (run as a script).

torchrun --standalone --nproc_per_node 2 tests/distributed/evaluate_ranks.py OUT_DIR

The sources' row counts (41, 17 and a 25-row stream) divide by neither the world size times the batch size nor
the batch size: with batches of 4 on 2 ranks, rank 0 has one batch more than rank 1 in each source.
"""

import json
import os
import sys

import numpy as np
import torch
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import TaskSource, load_digits_dataset, load_shop_dataset


def main(out_dir: str) -> None:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    shop = TaskSource(load_shop_dataset(41, seed=3), ["category", "colour", "tags", "size"], name="shop")
    digits = TaskSource(load_digits_dataset().select(range(17)), ["digit", "traits"], name="digits")
    parquet = os.path.join(out_dir, "stream.parquet")
    if rank == 0 and not os.path.exists(parquet):
        load_shop_dataset(25, seed=5).to_parquet(parquet)
    if world > 1:  # rank 0 writes the stream's file first
        torch.distributed.init_process_group("gloo")
        torch.distributed.barrier()
    stream = TaskSource(parquet, ["category", "size"], name="stream", streaming=True)
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=shop.task_specs + digits.task_specs))
    forwards = []
    model.register_forward_hook(lambda module, args, kwargs, output: forwards.append(1), with_kwargs=True)
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(out_dir, "run"),
        per_device_eval_batch_size=4,
        dataloader_num_workers=1,
        use_cpu=True,
        ddp_backend="gloo" if world > 1 else None,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = MultiTaskTrainer(model, args, eval_dataset=[shop, digits])
    output = trainer.predict([shop, digits, stream])
    result = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "forwards": len(forwards),
        "metrics": {
            key: value for key, value in output.metrics.items() if not key.endswith(("_runtime", "_per_second"))
        },
        "predictions": {task: np.asarray(values).tolist() for task, values in output.predictions.items()},
        "label_ids": {
            task: np.nan_to_num(np.asarray(values), nan=-1e9).tolist() for task, values in output.label_ids.items()
        },
    }
    with open(os.path.join(out_dir, f"world{args.world_size}_rank{args.process_index}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1])
