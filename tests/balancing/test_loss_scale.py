"""The loss-scale methods (log_loss, geometric, stch, imtl_l), worked out by hand: each one's weights are the
gradient of its objective with respect to the task losses, absent tasks get no weight and keep their state."""

import math

import pytest
import torch

from mtl_hf.balancing import IMTLL, GeometricMean, LogLoss, SmoothTchebycheff, build_weighting

TASKS = ["a", "b", "c"]
ALL = torch.tensor([True, True, True])
A_AND_C = torch.tensor([True, False, True])
LOSSES = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)


def objective_gradient(objective, losses=LOSSES):
    losses = losses.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(losses), losses)
    return gradient


def test_log_loss_weighs_each_task_by_its_inverse_loss():
    method = LogLoss(TASKS, eps=1e-8)
    weights = method.task_weights(LOSSES, ALL)
    assert weights.tolist() == pytest.approx([1.0, 0.5, 0.25])
    torch.testing.assert_close(weights, objective_gradient(lambda L: torch.log(L + 1e-8).sum()))
    assert method.task_weights(LOSSES, A_AND_C).tolist() == pytest.approx([1.0, 0.0, 0.25])
    method.set_priors([2.0, 1.0, 1.0])
    assert method.task_weights(LOSSES, ALL).tolist() == pytest.approx([2.0, 0.5, 0.25])


def test_geometric_mean_weighs_by_the_mean_over_each_loss():
    method = GeometricMean(TASKS, eps=1e-12)
    weights = method.task_weights(LOSSES, ALL)  # G = (1 * 2 * 4) ** (1/3) = 2
    assert weights.tolist() == pytest.approx([2.0, 1.0, 0.5])
    torch.testing.assert_close(weights, objective_gradient(lambda L: 3 * torch.prod(L) ** (1 / 3)), rtol=1e-9, atol=0)
    # over the present tasks only: G = (1 * 4) ** (1/2) = 2, K' = 2
    assert method.task_weights(LOSSES, A_AND_C).tolist() == pytest.approx([2.0, 0.0, 0.5])
    assert method.task_weights(torch.tensor([3.0, 3.0, 3.0]), ALL).tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_stch_is_a_softmax_over_losses_relative_to_their_first_values():
    method = SmoothTchebycheff(TASKS, mu=0.5)
    first = torch.tensor([2.0, 2.0, 8.0], dtype=torch.float64)
    method.observe(first, A_AND_C)  # 'b' had no targets at the first step: its first loss is still to come
    assert torch.isnan(method.initial_losses[1]) and method.initial_losses[[0, 2]].tolist() == [2.0, 8.0]
    method.observe(torch.tensor([9.0, 2.0, 9.0], dtype=torch.float64), ALL)
    assert method.initial_losses.tolist() == [2.0, 2.0, 8.0]
    weights = method.task_weights(LOSSES, ALL)
    relative = torch.tensor([1 / 2, 2 / 2, 4 / 8], dtype=torch.float64) / 0.5
    share = torch.softmax(relative, 0)
    assert weights.tolist() == pytest.approx((3 * share / first).tolist())
    # the gradient of 3 * mu * log sum exp(L / (L0 * mu))
    objective = lambda L: 3 * 0.5 * torch.logsumexp(L / first / 0.5, 0)  # noqa: E731
    torch.testing.assert_close(weights.double(), objective_gradient(objective))
    # the task relatively furthest behind ('b': at its first loss still) gets the most weight per unit loss
    assert (weights * first).argmax().item() == 1
    assert method.task_weights(LOSSES, A_AND_C)[1].item() == 0.0


def test_imtl_l_scales_each_loss_to_one_at_its_optimum_and_learns():
    method = IMTLL(TASKS)
    method.set_priors([1.0, 1.0, 2.0])
    with torch.no_grad():
        method.log_variance.copy_(-torch.tensor([0.0, -math.log(2.0), 1.0]))  # s = -log_variance
    losses = torch.tensor([1.0, 2.0, 3.0])
    weights = method.task_weights(losses, ALL)
    assert weights.tolist() == pytest.approx([1.0, 0.5, 2 * math.e])
    total = method.combine(losses, weights, ALL)
    assert total.item() == pytest.approx((1.0 - 0.0) + (1.0 + math.log(2.0)) + 2 * (3.0 * math.e - 1.0))
    total.backward()
    # d/ds p (exp(s) L - s) = p (exp(s) L - 1): zero for 'a' and 'b', whose scaled losses are 1
    assert (-method.log_variance.grad).tolist() == pytest.approx([0.0, 0.0, 2 * (3.0 * math.e - 1.0)])
    method.log_variance.grad = None
    method.combine(losses, weights, A_AND_C).backward()
    assert method.log_variance.grad[1].item() == 0.0


def weighted_shares(name: str, losses: torch.Tensor) -> torch.Tensor:
    """Each task's share of the weighted loss sum, for a fresh method that has seen `losses` (imtl_l: at its
    optimum over its scales, exp(s_k) = 1 / L_k)."""
    method = build_weighting(name, TASKS)
    if name == "imtl_l":
        with torch.no_grad():
            method.log_variance.copy_(torch.log(losses.float()))  # s = -log L
    method.observe(losses, ALL)
    weighted = method.task_weights(losses, ALL).double() * losses
    return weighted / weighted.sum()


@pytest.mark.parametrize("name", ["log_loss", "geometric", "stch", "imtl_l"])
def test_a_tasks_units_do_not_change_its_share_of_the_loss(name):
    """The same losses with task 'c' in units 1000 times smaller (a loss 1000 times larger): each task's share
    of the weighted sum is unchanged, where under equal weights 'c' takes nearly all of it."""
    scaled = LOSSES * torch.tensor([1.0, 1.0, 1000.0], dtype=torch.float64)
    torch.testing.assert_close(weighted_shares(name, scaled), weighted_shares(name, LOSSES), rtol=1e-6, atol=1e-9)
    assert weighted_shares("equal", scaled)[2] > 0.99 and weighted_shares("equal", LOSSES)[2] < 0.6


def test_imtl_l_trains_exactly_as_uncertainty_weighting(tmp_path):
    """exp(s) L - s is exp(-v) L + v with v = -s, and Adam moves v as it moves -s: one training, two names."""
    from mtl_hf import MultiTaskTrainer
    from tests.training_helpers import arguments, assert_same_parameters, new_model, shop_source

    source = shop_source(rows=32)
    trainers = {}
    for name in ("uncertainty", "imtl_l"):
        trainers[name] = MultiTaskTrainer(
            new_model(source), arguments(tmp_path / name, max_steps=3, weighting=name), train_dataset=source
        )
        trainers[name].train()
    assert_same_parameters(trainers["imtl_l"].model, trainers["uncertainty"].model, rtol=0, atol=0)
    torch.testing.assert_close(
        trainers["imtl_l"].weighting.log_variance, trainers["uncertainty"].weighting.log_variance
    )
