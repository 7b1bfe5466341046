"""The gradient path on its own: what each space writes into `.grad`, checked against autograd by hand."""

from __future__ import annotations

import pytest
import torch

from mtl_hf.balancing import build_weighting
from mtl_hf.balancing.gradient_path import FeatureTap, gramian_weights, parameter_space_backward, representation_loss
from mtl_hf.balancing.step_losses import step_losses
from mtl_hf.data import ImageTransforms, MixtureBatch, MultiTaskCollator
from mtl_hf.utils import host
from tests.training_helpers import digits_source, new_model, shop_source

TASKS = ["category", "colour", "size"]


def batch(rows=6, tasks=TASKS):
    source = shop_source(rows=rows, tasks=tasks, missing_rate=0.3)
    collator = MultiTaskCollator(source.task_specs, ImageTransforms(size=(32, 32)))
    return source, collator(source.rows(list(range(rows))))


def per_task_gradients(model, inputs, parameters):
    """Each task's gradient w.r.t. `parameters`, flattened, by separate backward passes."""
    rows = []
    for name in model.task_names:
        model.zero_grad(set_to_none=True)
        model(**inputs).task_losses[name].backward()
        rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters]))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def gradients(parameters):
    return [None if p.grad is None else p.grad.clone() for p in parameters]


def test_gramian_weights_copy_the_gramian_once_and_apply_the_priors(monkeypatch):
    method = build_weighting("mgda", ["a", "b", "c"], loss_weights=[1.0, 3.0, 1.0])
    copies = []
    real = host.to_host
    monkeypatch.setattr(host, "to_host", lambda t: copies.append(t.shape) or real(t))
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    weights = gramian_weights(method, jacobian @ jacobian.T, torch.tensor([True, True, False]))
    assert copies == [(3 * 3 + 3,)]
    torch.testing.assert_close(weights, torch.tensor([0.8, 3 * 0.2, 0.0]))  # MGDA on the first two, times priors


@pytest.mark.parametrize("method_name", ["upgrad", "pcgrad"])
def test_representation_space_gives_the_backbone_the_weighted_gradient_and_heads_their_own(method_name):
    source, inputs = batch()
    model = new_model(source)
    method = build_weighting(method_name, model.task_names, loss_weights=[1.0, 2.0, 1.0])
    tap = FeatureTap(model.backbone)
    outputs = model(**inputs)
    losses = step_losses(
        {s.name: s for s in model.config.task_specs}, outputs, inputs["labels"], model.task_loss_denominator
    )
    features = tap.take()
    loss, weights = representation_loss(method, losses, features)
    torch.testing.assert_close(loss, (method.priors * losses.local).sum())  # the value is the prior-weighted sum
    loss.backward()
    backbone, heads = list(model.backbone.parameters()), list(model.heads.parameters())
    got_backbone, got_heads = gradients(backbone), gradients(heads)

    # By hand: the weights come from the Gramian of the features' per-task gradients ...
    model.zero_grad(set_to_none=True)
    outputs = model(**inputs)
    features = tap.take()
    rows = [torch.autograd.grad(outputs.task_losses[n], features, retain_graph=True)[0].flatten() for n in TASKS]
    jacobian = torch.stack(rows)
    fresh = build_weighting(method_name, model.task_names, loss_weights=[1.0, 2.0, 1.0])
    expected_weights = fresh.host_weights((jacobian @ jacobian.T).double(), torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(weights, expected_weights.float() * fresh.priors, rtol=1e-4, atol=1e-6)
    # ... the backbone gets sum_k w_k grad L_k, each head p_k grad L_k.
    sum(w * outputs.task_losses[n] for w, n in zip(weights, TASKS, strict=True)).backward(retain_graph=True)
    for got, want in zip(got_backbone, backbone, strict=True):
        torch.testing.assert_close(got, want.grad, rtol=1e-4, atol=1e-6)
    model.zero_grad(set_to_none=True)
    sum(p * outputs.task_losses[n] for p, n in zip(method.priors, TASKS, strict=True)).backward()
    for got, want in zip(got_heads, heads, strict=True):
        torch.testing.assert_close(got, want.grad, rtol=1e-5, atol=1e-7)
    tap.remove()


def test_parameter_space_writes_the_combination_of_the_per_task_gradients():
    source, inputs = batch()
    model = new_model(source)
    method = build_weighting("imtl_g", model.task_names, loss_weights=[1.0, 1.0, 4.0])
    backbone, heads = list(model.backbone.parameters()), list(model.heads.parameters())
    jacobian = per_task_gradients(model, inputs, backbone)
    outputs = model(**inputs)
    losses = step_losses(
        {s.name: s for s in model.config.task_specs}, outputs, inputs["labels"], model.task_loss_denominator
    )
    weights = parameter_space_backward(method, losses, backbone, heads, scale=0.5)

    fresh = build_weighting("imtl_g", model.task_names, loss_weights=[1.0, 1.0, 4.0])
    expected = fresh.host_weights((jacobian @ jacobian.T).double(), torch.ones(3, dtype=torch.bool)).float()
    torch.testing.assert_close(weights, expected * fresh.priors, rtol=1e-4, atol=1e-6)
    combined = torch.cat([p.grad.flatten() for p in backbone])
    torch.testing.assert_close(combined, 0.5 * (weights @ jacobian), rtol=1e-4, atol=1e-6)
    written = torch.cat([p.grad.flatten() for p in heads])
    head_jacobian = per_task_gradients(model, inputs, heads)
    torch.testing.assert_close(written, 0.5 * (method.priors @ head_jacobian), rtol=1e-5, atol=1e-7)


def test_parameters_that_no_task_reached_keep_no_gradient():
    shop, digits = shop_source(rows=6, tasks=["category", "colour"]), digits_source(rows=6)
    model = new_model(shop, digits)
    collator = MultiTaskCollator(shop.task_specs + digits.task_specs, ImageTransforms(size=(32, 32)))
    inputs = collator(MixtureBatch(shop.rows(list(range(6))), ("category", "colour")))
    method = build_weighting("pcgrad", model.task_names)
    outputs = model(**inputs)
    losses = step_losses(
        {s.name: s for s in model.config.task_specs}, outputs, inputs["labels"], model.task_loss_denominator
    )
    assert losses.ran == ("category", "colour") and losses.present.tolist() == [True, True, False, False]
    parameter_space_backward(method, losses, list(model.backbone.parameters()), list(model.heads.parameters()))
    assert all(p.grad is None for p in model.heads["digit"].parameters())
    assert all(p.grad is None for p in model.heads["traits"].parameters())
    assert all(p.grad is not None for p in model.heads["category"].parameters())


def test_the_feature_tap_keeps_only_forward_passes_with_gradient():
    source, inputs = batch()
    model = new_model(source)
    tap = FeatureTap(model.backbone)
    with torch.no_grad():
        model(**inputs)
    with pytest.raises(RuntimeError, match="no forward pass with gradient"):
        tap.take()
    model(**inputs)
    features = tap.take()
    assert features.shape == (6, 65, 64) and features.requires_grad
    tap.remove()
    model(**inputs)
    with pytest.raises(RuntimeError):
        tap.take()
