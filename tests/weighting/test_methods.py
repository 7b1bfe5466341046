import math

import pytest
import torch

from mtl_hf.weighting import (
    FAMO,
    CAGrad,
    DynamicWeightAverage,
    EqualWeighting,
    PCGrad,
    RandomLossWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    build_weighting,
)

TASKS = ["a", "b", "c"]
ALL = torch.tensor([True, True, True])


def test_equal_sums_the_present_tasks():
    losses = torch.tensor([1.0, 2.0, 4.0])
    assert EqualWeighting(TASKS).combine(losses, ALL).item() == 7.0
    assert EqualWeighting(TASKS).combine(losses, torch.tensor([True, False, True])).item() == 5.0


def test_static_weights_and_their_checks():
    method = StaticWeighting(TASKS, {"a": 2.0, "b": 0.5, "c": 0.0})
    assert method.combine(torch.tensor([1.0, 2.0, 4.0]), ALL).item() == 3.0
    with pytest.raises(ValueError, match=r"absent \['c'\]"):
        StaticWeighting(TASKS, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        StaticWeighting(TASKS, {"a": 1.0, "b": -1.0, "c": 1.0})


def test_uncertainty_weighting_follows_its_formula_and_learns():
    method = UncertaintyWeighting(TASKS)
    with torch.no_grad():
        method.log_variance.copy_(torch.tensor([0.0, math.log(2.0), -1.0]))
    losses = torch.tensor([1.0, 2.0, 3.0])
    expected = (1.0 + 0.0) + (2.0 / 2.0 + math.log(2.0)) + (3.0 * math.e - 1.0)
    total = method.combine(losses, ALL)
    assert total.item() == pytest.approx(expected)
    assert method.weights(ALL).tolist() == pytest.approx([1.0, 0.5, math.e])
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    assert method.log_variance.grad.tolist() == pytest.approx([0.0, 0.0, 1 - math.e * 3.0])


def test_dwa_uses_the_ratio_of_the_last_two_epoch_averages():
    method = DynamicWeightAverage(TASKS, temperature=2.0)
    assert method.weights(ALL).tolist() == [1.0, 1.0, 1.0]  # first two epochs
    for epoch_losses in ([2.0, 2.0, 2.0], [1.0, 2.0, 4.0]):
        method.observe(torch.tensor(epoch_losses), ALL)
        method.observe(torch.tensor(epoch_losses), ALL)
        method.end_epoch()
    ratios = torch.tensor([0.5, 1.0, 2.0])
    expected = 3 * torch.softmax(ratios / 2.0, dim=0)
    torch.testing.assert_close(method.weights(ALL), expected)
    again = DynamicWeightAverage(TASKS)
    again.load_state_dict(method.state_dict())
    torch.testing.assert_close(again.weights(ALL), expected)


def test_rlw_draws_seeded_weights_that_sum_to_the_task_count():
    first, second = RandomLossWeighting(TASKS, seed=3), RandomLossWeighting(TASKS, seed=3)
    draws = []
    for _ in range(3):
        w = first.weights(ALL)
        assert w.sum().item() == pytest.approx(3.0) and torch.equal(w, second.weights(ALL))
        draws.append(w)
        first.observe(torch.zeros(3), ALL)
        second.observe(torch.zeros(3), ALL)
    assert not torch.equal(draws[0], draws[1])
    partial = first.weights(torch.tensor([True, False, True]))
    assert partial[1] == 0 and partial.sum().item() == pytest.approx(2.0)


def test_pcgrad_projects_two_conflicting_gradients_by_hand():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    # g1.g2 = -1 < 0: g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1).
    combined = PCGrad(["a", "b"]).combine_gradients(grads, torch.tensor([True, True]))
    torch.testing.assert_close(combined, torch.tensor([0.5, 1.5]))
    # No conflict: the plain sum.
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(
        PCGrad(["a", "b"]).combine_gradients(agreeing, torch.tensor([True, True])), agreeing.sum(0)
    )


def test_pcgrad_result_conflicts_with_no_projected_task():
    torch.manual_seed(0)
    grads = torch.randn(3, 50)
    combined = PCGrad(TASKS).combine_gradients(grads, ALL)
    assert combined.shape == (50,)
    only_two = PCGrad(TASKS).combine_gradients(grads, torch.tensor([True, False, True]))
    two = PCGrad(["a", "c"]).combine_gradients(grads[[0, 2]], torch.tensor([True, True]))
    torch.testing.assert_close(only_two, two)


def test_cagrad_matches_the_average_without_conflict_and_improves_the_worst_task():
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    # Identical gradients: w is any point, g_w = g0, d = g0 (1 + c), divided by 1 + c^2.
    torch.testing.assert_close(
        CAGrad(["a", "b"], c=0.5).combine_gradients(same, torch.tensor([True, True])),
        torch.tensor([1.0, 2.0]) * 1.5 / 1.25,
    )
    conflicting = torch.tensor([[1.0, 0.0], [-0.8, 0.3]])
    d = CAGrad(["a", "b"], c=0.5).combine_gradients(conflicting, torch.tensor([True, True]))
    mean = conflicting.mean(0)
    # The worst task's first-order improvement g_k . d beats the average gradient's.
    assert (conflicting @ d).min() > (conflicting @ mean).min()


def test_famo_backpropagates_log_losses_and_shifts_weight_to_the_slow_task():
    method = FAMO(["a", "b"], learning_rate=0.1)
    losses = torch.tensor([2.0, 4.0], requires_grad=True)
    method.combine(losses, torch.tensor([True, True])).backward()
    # z = (1/2, 1/2), c = sum z/L = 3/8: d/dL_k = z_k / (c L_k) = (2/3, 1/3)
    torch.testing.assert_close(losses.grad, torch.tensor([2 / 3, 1 / 3]))
    # Task a's loss halved, task b's did not move: b gains weight.
    method.update_after_step(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0]), torch.tensor([True, True]))
    weights = method.weights(torch.tensor([True, True]))
    assert weights[1] > weights[0] and weights.sum().item() == pytest.approx(1.0)
    restored = FAMO(["a", "b"], learning_rate=0.1)
    restored.load_state_dict(method.state_dict())
    torch.testing.assert_close(restored.weights(torch.tensor([True, True])), weights)
    assert restored._optimizer.state_dict()["state"][0]["step"] == 1


def test_build_weighting_checks_names_and_options():
    assert isinstance(build_weighting("dwa", TASKS, {"temperature": 3.0}), DynamicWeightAverage)
    with pytest.raises(ValueError, match="unknown weighting method 'gradnorm'; use one of equal, static"):
        build_weighting("gradnorm", TASKS)
    with pytest.raises(
        ValueError, match=r"weighting 'dwa' has no option\(s\) \['alpha'\]; its options are \['temperature'\]"
    ):
        build_weighting("dwa", TASKS, {"alpha": 1.0})
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        build_weighting("dwa", TASKS, {"temperature": 0})
