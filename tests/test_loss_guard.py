"""NaN or inf in a task's loss: reported with the task, the step and the batch's source rows; `nan_policy`
stops the run (default) or skips the step, never letting the weights or the weighting's state turn NaN."""

import pytest
import torch
from transformers import TrainerCallback

from mtl_hf import MultiTaskTrainer
from mtl_hf.balancing import build_weighting
from tests.training_helpers import arguments, new_model, parameters, shop_source


class PoisonSize:
    """Makes the `size` task's loss infinite in the batches of the given optimizer steps (1-based)."""

    def __init__(self, trainer, steps):
        self.trainer, self.steps = trainer, set(steps)
        original = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            if trainer.state.global_step + 1 in self.steps and "size" in inputs["labels"]:
                inputs["labels"]["size"] = torch.full_like(inputs["labels"]["size"], 1e30)  # its square overflows
            return original(model, inputs, *args, **kwargs)

        trainer.training_step = training_step


def poisoned_trainer(tmp_path, steps, **settings):
    source = shop_source(missing_rate=0.0)
    args = arguments(tmp_path, max_steps=5, batch_mode="mixed", logging_steps=1, **settings)
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    PoisonSize(trainer, steps)
    return trainer


@pytest.mark.parametrize("weighting", ["static", "uncertainty", "famo", "upgrad"])
def test_stop_names_the_task_the_step_and_the_rows_and_leaves_the_weights_finite(tmp_path, weighting):
    trainer = poisoned_trainer(tmp_path, steps=[3], weighting=weighting)
    with pytest.raises(FloatingPointError) as stopped:
        trainer.train()
    message = str(stopped.value)
    assert message.startswith("step 3: non-finite loss in task 'size' (inf)"), message
    assert "this rank's batch holds rows shop:" in message and "nan_policy" in message
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(p).all() for p in parameters(trainer.model).values())


@pytest.mark.parametrize("weighting", ["static", "uncertainty", "famo", "dwa", "upgrad"])
def test_skip_step_leaves_parameters_and_weighting_state_as_they_were(tmp_path, weighting):
    trainer = poisoned_trainer(tmp_path, steps=[3, 4], weighting=weighting, nan_policy="skip_step")
    snapshots = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = parameters(trainer.model)

    trainer.add_callback(Snapshot())
    trainer.train()
    assert trainer.state.global_step == 5
    for name, value in snapshots[2].items():  # steps 3 and 4 changed nothing
        assert torch.equal(snapshots[4][name], value), name
    assert any(not torch.equal(snapshots[5][name], value) for name, value in snapshots[4].items())
    fresh = build_weighting(weighting, list(trainer.task_specs)).state_dict()
    for key, value in trainer.weighting.state_dict().items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert not value.isnan().any() or fresh[key].isnan().any(), key  # NaN only where it starts so (DWA)
    assert all(torch.isfinite(p).all() for p in parameters(trainer.model).values())
    logged = [entry["skipped_steps"] for entry in trainer.state.log_history if "skipped_steps" in entry]
    assert logged[-1] == 2


def test_unknown_nan_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown nan_policy 'ignore'; use one of stop, skip_step"):
        arguments(tmp_path, nan_policy="ignore")
