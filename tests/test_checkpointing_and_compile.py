"""Activation (gradient) checkpointing with every balancing method in both gradient spaces, and torch.compile
with the loss-based methods, on the CPU."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from mtl_hf import MultiTaskTrainer
from mtl_hf.balancing import WEIGHTING_METHODS
from mtl_hf.errors import UserError
from tests.training_helpers import arguments, assert_same_parameters, digits_source, new_model, shop_source

RUNS = [
    (name, space)
    for name, method in sorted(WEIGHTING_METHODS.items())
    for space in (("representation", "parameters") if method.uses_gradients else ("representation",))
]


@pytest.mark.parametrize(("weighting", "space"), RUNS, ids=[f"{name}-{space}" for name, space in RUNS])
def test_checkpointing_changes_no_update_of_any_method(tmp_path, weighting, space):
    source = shop_source(rows=32)
    settings = dict(max_steps=2, per_device_train_batch_size=8, weighting=weighting, gradient_space=space)
    models = []
    for checkpointing in (False, True):
        model = new_model(source)
        args = arguments(tmp_path / str(checkpointing), activation_checkpointing=checkpointing, **settings)
        MultiTaskTrainer(model, args, train_dataset=source).train()
        assert model.is_activation_checkpointing == checkpointing
        models.append(model)
    assert_same_parameters(models[1], models[0], rtol=1e-5, atol=1e-6)


def count_attention_calls(model) -> list[int]:
    calls = [0]
    attention = model.backbone.layers[0].attention
    forward = attention.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    attention.forward = counted
    return calls


@pytest.mark.parametrize(("space", "per_step"), [("representation", 2), ("parameters", 6)])
def test_the_representation_space_recomputes_the_backbone_once_and_the_parameter_space_once_per_task(
    tmp_path, space, per_step
):
    """Checkpointed, a layer runs once forward and once more in the backward pass; the parameter space's per-task
    backward passes (5 shop tasks) recompute it each, the representation space's stop at the features."""
    source = shop_source(rows=32)
    model = new_model(source)
    calls = count_attention_calls(model)
    args = arguments(
        tmp_path,
        max_steps=2,
        weighting="upgrad",
        gradient_space=space,
        batch_mode="mixed",
        activation_checkpointing=True,
    )
    MultiTaskTrainer(model, args, train_dataset=source).train()
    assert calls[0] == 2 * per_step


def test_checkpointing_settings(tmp_path):
    args = arguments(tmp_path, gradient_checkpointing=True)  # Trainer's older name
    assert args.activation_checkpointing and args.ddp_find_unused_parameters is True
    assert (
        arguments(tmp_path, activation_checkpointing=True, ddp_find_unused_parameters=False).ddp_find_unused_parameters
        is False
    )
    with pytest.raises(UserError, match="use_reentrant=True: MultiTaskTrainer needs non-reentrant checkpointing"):
        arguments(tmp_path, activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})


@pytest.mark.parametrize(
    ("weighting", "batch_mode", "graphs"),
    [("equal", "mixed", 2), ("equal", "homogeneous", 3), ("uncertainty", "mixed", 2)],
)
def test_loss_based_methods_train_compiled_with_a_bounded_number_of_graphs(tmp_path, weighting, batch_mode, graphs):
    """Homogeneous batches run one head set per source (shop, digits): one graph each. No graph breaks: the
    targets' values are checked by the collator, not inside the compiled forward."""
    shop, digits = shop_source(rows=32), digits_source(rows=32)
    settings = dict(max_steps=4, per_device_train_batch_size=8, weighting=weighting, batch_mode=batch_mode)
    eager = new_model(shop, digits)
    MultiTaskTrainer(eager, arguments(tmp_path / "eager", **settings), train_dataset=[shop, digits]).train()
    torch._dynamo.reset()
    counters.clear()
    compiled = new_model(shop, digits)
    args = arguments(tmp_path / "compiled", torch_compile=True, **settings)
    MultiTaskTrainer(compiled, args, train_dataset=[shop, digits]).train()
    assert counters["stats"]["unique_graphs"] <= graphs and not counters["graph_break"]
    assert_same_parameters(compiled, eager, rtol=1e-4, atol=1e-5)


def test_gradient_methods_are_refused_under_torch_compile(tmp_path):
    source = shop_source(rows=16)
    with pytest.raises(UserError, match="weighting 'pcgrad' back-propagates each task's loss on its own"):
        MultiTaskTrainer(
            new_model(source), arguments(tmp_path, torch_compile=True, weighting="pcgrad"), train_dataset=source
        )
