"""Trains a tiny model for a few steps and pushes it with `trainer.push_to_hub()` (run as a script).

python train_and_push.py OUTPUT_DIR REPO_ID TOKEN     # HF_ENDPOINT points at the local endpoint
"""

import json
import sys

from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import TaskSource, load_shop_dataset


def main(output_dir: str, repo_id: str, token: str) -> None:
    train = TaskSource(load_shop_dataset(64), ["category", "tags", "size"], name="shop")
    evaluation = TaskSource(load_shop_dataset(32, start=64), ["category", "tags", "size"], name="shop_eval")
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=train.task_specs))
    args = MultiTaskTrainingArguments(
        output_dir=output_dir,
        max_steps=4,
        per_device_train_batch_size=16,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_token=token,
        hub_strategy="end",
    )
    trainer = MultiTaskTrainer(model, args, train_dataset=train, eval_dataset=evaluation)
    trainer.train()
    metrics = trainer.evaluate()
    trainer.push_to_hub()
    print(json.dumps(metrics))


if __name__ == "__main__":
    main(*sys.argv[1:4])
