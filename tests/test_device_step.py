"""Every balancing method's whole training step on the `meta` device (see tests/device_guard.py).

The step (forward, task losses, weighting, backward or gradient path, optimizer step, the
weighting's after-step and end-of-epoch hooks, the logs) must keep every tensor on the model's
device and copy nothing to the host but through `mtl_hf.utils.host.to_host`, the one sanctioned
device -> host copy, which this test stands in for (it records the copy and answers with ones, as
a device would answer with values). Loss-based methods copy nothing per step; gradient methods
copy their K x K Gramian once per step; the logs are copied once per logging step.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mtl_hf import MultiTaskTrainer
from mtl_hf.balancing import WEIGHTING_METHODS
from mtl_hf.utils import host
from tests.device_guard import DeviceMixGuard
from tests.training_helpers import arguments, new_model, shop_source, start_training_by_hand

CASES = [
    (name, space)
    for name, cls in WEIGHTING_METHODS.items()
    for space in (("representation", "parameters") if cls.uses_gradients else ("representation",))
]
STEPS = 2


@pytest.mark.parametrize(("method", "space"), CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_training_step_keeps_everything_on_the_device(tmp_path, monkeypatch, method, space):
    copies = []

    def device_to_host(tensor):
        assert tensor.device.type == "meta", f"to_host called on a {tensor.device} tensor"
        copies.append(tuple(tensor.shape))
        return torch.ones(tensor.shape, dtype=tensor.dtype)

    monkeypatch.setattr(host, "to_host", device_to_host)
    source = shop_source(rows=64)
    args = arguments(
        tmp_path,
        weighting=method,
        gradient_space=space,
        batch_mode="mixed",
        max_steps=STEPS,
        logging_steps=STEPS,
        optim="adamw_torch",
    )
    args.__dict__["_setup_devices"] = torch.device("meta")  # the device Trainer places the model on
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    state = itertools.chain(trainer.model.parameters(), trainer.weighting.parameters(), trainer.weighting.buffers())
    assert {t.device.type for t in state} == {"meta"}

    start_training_by_hand(trainer, steps=STEPS)
    handler, control = trainer.callback_handler, trainer.control
    batches = iter(trainer.get_train_dataloader())
    with DeviceMixGuard():
        for _ in range(STEPS):
            inputs = next(batches)
            loss = trainer.training_step(trainer.model, inputs)
            assert loss.device.type == "meta"
            handler.on_pre_optimizer_step(args, trainer.state, control)
            trainer.optimizer.step()
            handler.on_optimizer_step(args, trainer.state, control)
            trainer.model.zero_grad(set_to_none=True)
            trainer.state.global_step += 1
            handler.on_step_end(args, trainer.state, control)
        handler.on_epoch_end(args, trainer.state, control)
        trainer.log({"loss": 0.0})

    # The loss guard's verdict (one K-bool vector per step), plus the Gramian of a gradient method.
    per_step = 1 + (1 if trainer.weighting.uses_gradients else 0)
    assert len(copies) == STEPS * per_step + 1, copies
    logged = trainer.state.log_history[-1]
    assert {f"loss_{task}" for task in trainer.task_specs} <= set(logged)
