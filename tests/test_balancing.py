"""What every balancing method owes every training run: tasks count only where they have
targets, FAMO compares like with like, `loss_weight` means one thing everywhere, and the
gradient path leaves unused parameters alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_hf import MultiTaskTrainer
from mtl_hf.balancing import WEIGHTING_METHODS
from tests.training_helpers import (
    SumOfGradients,
    arguments,
    digits_source,
    new_model,
    shop_source,
    start_training_by_hand,
    step_logs,
)

SHOP = ["category", "colour"]
ALL_CASES = [
    (name, space)
    for name, cls in WEIGHTING_METHODS.items()
    for space in (("representation", "parameters") if cls.uses_gradients else ("representation",))
]


def two_sources():
    """Shop photos and handwritten digits, disjoint tasks: a small mixed batch often lacks one source."""
    return shop_source(rows=64, tasks=SHOP, missing_rate=0.0), digits_source(rows=64)


def served_sources(trainer, steps):
    """The sources each step of the first epoch drew from, read from the mixture's plan."""
    mixture = trainer.train_mixture
    mixture.set_epoch(0)
    plan = [{example.source for example in batch.examples} for batch in mixture]
    mixture.set_epoch(0)
    return plan[:steps]


def one_batch(trainer):
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


# -- "present": at least one target in the step ------------------------------------------------


def test_a_task_without_targets_in_a_step_is_not_logged(tmp_path):
    shop, digits = two_sources()
    args = arguments(
        tmp_path, batch_mode="mixed", per_device_train_batch_size=3, max_steps=8, logging_steps=1, weighting="equal"
    )
    trainer = MultiTaskTrainer(new_model(shop, digits), args, train_dataset=[shop, digits])
    plan = served_sources(trainer, 8)
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 8
    assert any("digits" not in served for served in plan) and any("shop" not in served for served in plan)
    for served, entry in zip(plan, logs, strict=True):
        for source, tasks in (("shop", SHOP), ("digits", ["digit", "traits"])):
            for task in tasks:
                assert (f"loss_{task}" in entry) == (source in served), (served, entry)
                assert (f"weight_{task}" in entry) == (source in served), (served, entry)


def test_famo_gradient_ignores_tasks_without_targets(tmp_path):
    shop, digits = two_sources()
    args = arguments(tmp_path, batch_mode="mixed", per_device_train_batch_size=2, weighting="famo", seed=1)
    trainer = MultiTaskTrainer(new_model(shop, digits), args, train_dataset=[shop, digits])
    loader = iter(trainer.get_train_dataloader())
    inputs = next(loader)
    while all((target != -100).any() for target in (inputs["labels"]["digit"], inputs["labels"]["category"])):
        inputs = next(loader)  # a step with only one of the two sources
    inputs = trainer._prepare_inputs(inputs)
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, inputs)
    model.zero_grad()
    loss.backward()
    famo_grad = [p.grad.clone() for p in model.backbone.parameters()]

    # FAMO at its start (uniform z over the present tasks): the gradient is sum_k z_k grad L_k / (c L_k)
    # with c = sum_k z_k / L_k, over the tasks with targets only.
    outputs = model(**inputs)
    present = {name: loss for name, loss in outputs.task_losses.items() if (inputs["labels"][name] != -100).any()}
    assert 0 < len(present) < 4
    z = 1.0 / len(present)
    c = sum(z / value.detach() for value in present.values())
    expected = sum(z / (c * value.detach()) * value for value in present.values())
    model.zero_grad()
    expected.backward()
    for got, want in zip(famo_grad, (p.grad for p in model.backbone.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_dwa_epoch_means_count_only_steps_with_targets(tmp_path):
    shop, digits = two_sources()
    steps = 10
    args = arguments(
        tmp_path,
        batch_mode="mixed",
        per_device_train_batch_size=3,
        max_steps=steps,
        logging_steps=1,
        weighting="dwa",
        steps_per_epoch=steps,
    )
    trainer = MultiTaskTrainer(new_model(shop, digits), args, train_dataset=[shop, digits])
    plan = served_sources(trainer, steps)
    trainer.train()
    logs = step_logs(trainer)
    epoch_means = trainer.weighting.history[1].tolist()  # the averages of the epoch just finished
    for index, (task, source) in enumerate(
        [("category", "shop"), ("colour", "shop"), ("digit", "digits"), ("traits", "digits")]
    ):
        values = [entry[f"loss_{task}"] for served, entry in zip(plan, logs, strict=True) if source in served]
        assert 0 < len(values) < steps
        assert epoch_means[index] == pytest.approx(np.mean(values), rel=1e-4)


# -- FAMO: the same function before and after the step ----------------------------------------


def test_famo_compares_the_same_function_before_and_after_the_step(tmp_path):
    # Dropout in every head; a zero learning rate leaves the model as it was, so the losses after
    # the step must equal those before it and FAMO's task logits must not move.
    source = shop_source()
    model = new_model(source)
    for head in model.heads.values():
        head.dropout = torch.nn.Dropout(0.5)
    args = arguments(
        tmp_path,
        weighting="famo",
        learning_rate=0.0,
        max_steps=3,
        batch_mode="mixed",
        weighting_options={"weight_decay": 0.0},
    )
    trainer = MultiTaskTrainer(model, args, train_dataset=source)
    trainer.train()
    assert torch.equal(trainer.weighting.logits.detach().cpu(), torch.zeros(len(trainer.task_specs)))


# -- loss_weight: the same meaning for every method -------------------------------------------


@pytest.mark.parametrize(("method", "space"), ALL_CASES, ids=[f"{m}-{s}" for m, s in ALL_CASES])
def test_loss_weight_multiplies_the_weight_every_method_gives(tmp_path, method, space):
    """With loss_weight p the task's weight is p times what the method gives it otherwise, and the
    backbone's gradient is sum_k weight_k grad L_k with the weights the logs report."""
    results = {}
    for size_weight in (1.0, 10.0):
        source = shop_source(rows=32, missing_rate=0.0)
        model = new_model(source)
        model.config.tasks[-1]["loss_weight"] = size_weight  # the regression task 'size'
        args = arguments(
            tmp_path / str(size_weight), weighting=method, gradient_space=space, batch_mode="mixed", logging_steps=1
        )
        trainer = MultiTaskTrainer(model, args, train_dataset=source)
        start_training_by_hand(trainer, steps=1)
        inputs = one_batch(trainer)
        trainer.training_step(trainer.model, inputs)
        trainer.log({"loss": 0.0})
        logged = trainer.state.log_history[-1]
        weights = {task: logged[f"weight_{task}"] for task in trainer.task_specs}
        got = [p.grad.clone() for p in trainer.model.backbone.parameters()]
        # The same batch, by hand: sum_k weight_k L_k through the same (unchanged) parameters.
        trainer.model.zero_grad(set_to_none=True)
        outputs = trainer.model(**inputs)
        by_hand = sum(weights[task] * outputs.task_losses[task] for task in trainer.task_specs)
        by_hand.backward()
        for value, want in zip(got, (p.grad for p in trainer.model.backbone.parameters()), strict=True):
            torch.testing.assert_close(value, want, rtol=2e-3, atol=1e-5)
        results[size_weight] = weights
    assert results[10.0]["size"] == pytest.approx(10 * results[1.0]["size"], rel=1e-4)
    for task in ("category", "colour", "pattern", "tags"):
        assert results[10.0][task] == pytest.approx(results[1.0][task], rel=1e-4)


# -- the gradient path: unused parameters keep no gradient --------------------------------------


@pytest.mark.parametrize("space", ["representation", "parameters"])
def test_gradient_path_leaves_heads_that_did_not_run_without_gradient(tmp_path, space):
    shop, digits = two_sources()  # homogeneous batches: a shop batch runs no digit head
    grads = {}
    for path in ("loss", "gradient"):
        args = arguments(tmp_path / path, batch_mode="homogeneous", gradient_space=space, weighting="equal")
        weighting = SumOfGradients(list(new_model(shop, digits).task_names)) if path == "gradient" else None
        trainer = MultiTaskTrainer(new_model(shop, digits), args, train_dataset=[shop, digits], weighting=weighting)
        start_training_by_hand(trainer, steps=1)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.training_step(trainer.model, batch)
        grads[path] = {name: p.grad for name, p in trainer.model.named_parameters()}
        idle = set(trainer.task_specs) - set(batch["tasks"])
    assert idle  # the batch left some heads out
    for name, want in grads["loss"].items():
        got = grads["gradient"][name]
        if want is None:
            assert got is None, f"{name} got a gradient although it did not run"
        else:
            assert got is not None, name
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    assert any(grads["loss"][name] is None for name in grads["loss"] if name.split(".")[1] in idle)
