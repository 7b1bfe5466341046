"""Trains with checkpoints pushed during training, or resumes from a checkpoint folder (run as a script).

python push_checkpoints.py push OUTPUT_DIR REPO_ID TOKEN STRATEGY   # 4 steps, a checkpoint at 2 and 4, pushed
python push_checkpoints.py resume OUTPUT_DIR CHECKPOINT             # on to step 6 from CHECKPOINT; prints a hash

HF_ENDPOINT points at the local endpoint. The runs sample with a seeded FAMO weighting, so that a resume that lost
the multi-task state (the mixture's position, FAMO's logits) ends elsewhere.
"""

import hashlib
import sys

import torch
from transformers import ViTConfig

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset


def trainer(output_dir: str, max_steps: int, **hub) -> MultiTaskTrainer:
    train = TaskSource(load_shop_dataset(64), ["category", "tags", "size"], name="shop")
    backbone = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone, tasks=train.task_specs))
    args = MultiTaskTrainingArguments(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        weighting="famo",
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **hub,
    )
    processor = ImageTransforms(size=(32, 32)).image_processor()
    return MultiTaskTrainer(model, args, train_dataset=train, processing_class=processor)


def main(mode: str, output_dir: str, *rest: str) -> None:
    if mode == "push":
        repo_id, token, strategy = rest
        # hub_always_push: every checkpoint is pushed, even while the previous push is still uploading (Trainer
        # skips it otherwise, and on a loaded machine `last-checkpoint` was then step 2's, not step 4's).
        run = trainer(
            output_dir,
            4,
            push_to_hub=True,
            hub_model_id=repo_id,
            hub_token=token,
            hub_strategy=strategy,
            hub_always_push=True,
        )
        run.train()
        run.push_in_progress and run.push_in_progress.wait_until_done()
        return
    run = trainer(output_dir, 6)
    run.train(resume_from_checkpoint=rest[0])
    digest = hashlib.sha256()
    for name, value in sorted(run.model.state_dict().items()):
        digest.update(name.encode() + value.detach().cpu().numpy().tobytes())
    print(digest.hexdigest())


if __name__ == "__main__":
    main(*sys.argv[1:])
