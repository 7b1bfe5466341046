"""A short training run for the fault tests (tests/test_faults.py), in its own process(es).

    python tests/fault_run.py OUTPUT_DIR [--resume] [--pause_at_save STEP --marker PREFIX] [--fail_on_rank R]

With --pause_at_save, every rank writes PREFIX.<rank> (holding its pid) when Trainer has written the
model of checkpoint STEP but before the multi-task state is added, then sleeps: a kill then leaves
that checkpoint half-written. With --fail_on_rank, that rank raises in its third training step while
the others go on into the step's collectives; with --overflow_on_rank, only that rank's loss is inf in the
third step; with --salted, it trains on a Parquet file with broken images under bad_image_policy: skip.
"""

import argparse
import atexit
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainerCallback  # noqa: E402

from mtl_hf import MultiTaskTrainer  # noqa: E402
from mtl_hf.data import TaskSource  # noqa: E402
from tests.training_helpers import arguments, new_model, shop_source  # noqa: E402

MAX_STEPS, SAVE_STEPS = 8, 2


class PauseWhileSaving(TrainerCallback):
    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, marker

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            Path(f"{self.marker}.{args.process_index}").write_text(str(os.getpid()))
            time.sleep(600)


class FailOnRank(TrainerCallback):
    def __init__(self, rank: int):
        self.rank = rank

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2 and args.process_index == self.rank:
            raise RuntimeError(f"rank {self.rank} cannot read its batch (a test failure)")


def overflow_size_loss(trainer: MultiTaskTrainer, rank: int) -> None:
    """In step 3, only `rank` gets `size` targets whose squared error overflows to inf."""
    original = trainer.training_step

    def training_step(model, inputs, *args, **kwargs):
        if trainer.state.global_step == 2 and trainer.args.process_index == rank and "size" in inputs["labels"]:
            inputs["labels"]["size"] = inputs["labels"]["size"].nan_to_num(0.5) * 0 + 1e30
        return original(model, inputs, *args, **kwargs)

    trainer.training_step = training_step


def report_process_group_at_exit() -> None:
    import torch.distributed as dist

    if os.environ.get("WORLD_SIZE", "1") != "1":
        print(f"PROCESS_GROUP_AT_EXIT rank {os.environ['RANK']}: initialized={dist.is_initialized()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause_at_save", type=int)
    parser.add_argument("--marker")
    parser.add_argument("--fail_on_rank", type=int)
    parser.add_argument("--overflow_on_rank", type=int)
    parser.add_argument("--salted", help="train on this Parquet file's category and colour, skipping bad images")
    parser.add_argument("--max_steps", type=int, default=MAX_STEPS)
    options = parser.parse_args()

    # Registered before the trainer exists, so that it runs after every exit handler the package registers.
    atexit.register(report_process_group_at_exit)
    source = shop_source(rows=128)
    if options.salted:
        source = TaskSource(options.salted, ["category", "colour"], name="catalogue", bad_image_policy="skip")
    args = arguments(
        Path(options.output_dir),
        max_steps=options.max_steps,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        batch_mode="mixed",
        weighting="famo",
        per_device_train_batch_size=8,
        max_bad_image_fraction=0.2,
    )
    callbacks = []
    if options.pause_at_save:
        callbacks.append(PauseWhileSaving(options.pause_at_save, options.marker))
    if options.fail_on_rank is not None:
        callbacks.append(FailOnRank(options.fail_on_rank))
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source, callbacks=callbacks)
    if options.overflow_on_rank is not None:
        overflow_size_loss(trainer, options.overflow_on_rank)
    output = trainer.train(resume_from_checkpoint=True if options.resume else None)
    if trainer.is_world_process_zero():
        print("TRAIN_METRICS", json.dumps(output.metrics))
    trainer.save_model(str(Path(options.output_dir) / "final"))


if __name__ == "__main__":
    main()
