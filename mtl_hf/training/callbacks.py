"""The trainer's hooks into Trainer's loop, as callbacks.

- `WeightingCallback` runs the balancing method around each optimizer step: before it, the loss guard's
  verdict (a skipped step drops its gradients, so the optimizer leaves weights and moments alone) and
  the learned weights' gradients averaged over the ranks; after it, the method's end of step (with the
  step's batches replayed for methods that learn from the update's effect), or its forgetting of a
  skipped step; and the end of each epoch.
- `MultiTaskStateCallback` adds the mixture's position and the weighting's state to every checkpoint.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..balancing import WeightingMethod
from ..balancing.step_losses import StepLosses
from ..utils.collectives import all_reduce_sum, world_size
from .checkpoint_state import save_multitask_state
from .loss_guard import LossGuard
from .step_replay import StepReplay


class WeightingCallback(TrainerCallback):
    """Calls the weighting's hooks at the right moments of Trainer's loop (see the module's docstring).

    `losses_after(inputs)` evaluates a replayed micro-batch after the step, as the training step's forward
    did (the trainer's model and precision context), for methods whose `needs_losses_after_step`.
    """

    def __init__(
        self,
        weighting: WeightingMethod,
        loss_guard: LossGuard,
        step_replay: StepReplay,
        losses_after: Callable[[dict], StepLosses],
    ):
        self.weighting, self.loss_guard, self.step_replay = weighting, loss_guard, step_replay
        self.losses_after = losses_after
        self.step_skipped = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.step_skipped = not self.loss_guard.step_may_run(state.global_step + 1)
        if self.step_skipped:
            # Parameters without a gradient are left alone by torch's optimizers, moments included.
            for parameter in [*model.parameters(), *self.weighting.parameters()]:
                parameter.grad = None
        for parameter in self.weighting.parameters():
            if parameter.grad is not None:
                all_reduce_sum(parameter.grad).div_(world_size())

    def on_optimizer_step(self, args, state, control, **kwargs):
        # Trainer zeroes the model's gradients only; learned weights (UW) must not accumulate.
        self.weighting.zero_grad(set_to_none=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_skipped:
            self.step_replay.forget()
            self.weighting.skip_step()
        elif self.weighting.needs_losses_after_step:
            replayed = self.step_replay.replay(self.losses_after)
            sums = torch.stack([losses.mean * losses.present for losses in replayed]).sum(0)
            counts = torch.stack([losses.present for losses in replayed]).float().sum(0)
            self.weighting.end_step(sums / counts.clamp_min(1), counts > 0)
        else:
            self.weighting.end_step()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.weighting.end_epoch()


# A checkpoint's files that Trainer's push leaves out of the repository's top level (it copies the weights and
# config): the card, the endpoint's requirements, and the Python files (remote code, handler).
PUSHED_BESIDE_THE_WEIGHTS = ("README.md", "requirements.txt", "training_curves.png")


class MultiTaskStateCallback(TrainerCallback):
    """Adds the multi-task state to every checkpoint Trainer saves (Trainer's `on_save` hook).

    `get_state` returns the state to save; it is called on the process that saves.
    """

    def __init__(self, get_state: Callable[[], dict[str, Any]]):
        self.get_state = get_state

    def on_push_begin(self, args, state, control, **kwargs):
        """Trainer pushes a checkpoint (`hub_strategy` every_save, checkpoint, all_checkpoints) before `on_save`, and
        copies only the weights and config beside the output folder's other files: the multi-task state goes into
        the checkpoint now, so that a pushed `last-checkpoint` resumes, and the files that load the model without
        mtl_hf and deploy it (remote code, handler, requirements, card) are copied beside the weights."""
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not args.should_save or not os.path.isdir(folder):  # the final push_to_hub saves everything itself
            return
        self.on_save(args, state, control, **kwargs)
        for name in os.listdir(folder):
            if name.endswith(".py") or name in PUSHED_BESIDE_THE_WEIGHTS:
                shutil.copyfile(os.path.join(folder, name), os.path.join(args.output_dir, name))

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            try:
                save_multitask_state(folder, self.get_state())
            except OSError as error:
                raise OSError(
                    f"could not save the multi-task state into {folder} ({error.strerror or error}); that checkpoint "
                    "stays incomplete and a resume skips it: free space (or fix the disk) and resume with "
                    "resume_from_checkpoint=True"
                ) from error


__all__ = ["MultiTaskStateCallback", "WeightingCallback"]
