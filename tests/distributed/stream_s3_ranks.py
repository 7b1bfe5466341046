"""Trains under torchrun on shards streamed from S3 and writes the photos each rank trained on (run as a script).

torchrun --standalone --nproc_per_node 2 tests/distributed/stream_s3_ranks.py OUT_DIR S3_URL STORAGE_OPTIONS_JSON

Each rank streams its share of the shards, decodes in 2 DataLoader workers, trains 2 epochs, and
writes OUT_DIR/rank{rank}.json: per epoch, a digest of every image its training steps received.
"""

import hashlib
import json
import os
import sys

import torch.distributed as dist
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource

TASKS = ["category", "colour", "pattern", "tags", "size"]


class RecordingTrainer(MultiTaskTrainer):
    """Records what each training step receives (Trainer's public `training_step` hook)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: dict[int, list[str]] = {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        epoch = self.state.global_step // self.train_mixture.steps_per_epoch
        # The workers' uint8 pixels, as the model will take them (normalised in `_prepare_inputs`).
        images = self.image_transforms.normalize(inputs["pixel_values"]).detach().cpu()
        self.seen.setdefault(epoch, []).extend(hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images)
        return super().training_step(model, inputs, num_items_in_batch)


def main(out_dir: str, url: str, options: str) -> None:
    source = TaskSource(url, TASKS, streaming=True, storage_options=json.loads(options))
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=source.task_specs))
    args = MultiTaskTrainingArguments(
        output_dir=os.path.join(out_dir, "run"),
        num_train_epochs=2,
        per_device_train_batch_size=10,
        use_cpu=True,
        ddp_backend="gloo",
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=2,
        shuffle_buffer_size=50,
    )
    # Eval transforms: no random crop, so that an image's digest names its photo.
    trainer = RecordingTrainer(
        model, args, train_dataset=source, image_transforms=ImageTransforms(size=(32, 32), draft_decoding=False)
    )
    trainer.train()
    report = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "workers": args.dataloader_num_workers,
        "steps": trainer.state.global_step,
        "seen": trainer.seen,
    }
    with open(os.path.join(out_dir, f"rank{dist.get_rank()}.json"), "w") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
