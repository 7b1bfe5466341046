"""Each balancing method on small examples worked out by hand."""

import importlib.util
import math

import pytest
import torch

from mtl_hf.balancing import (
    FAMO,
    IMTLG,
    MGDA,
    WEIGHTING_METHODS,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    DynamicWeightAverage,
    EqualWeighting,
    FairGrad,
    GradVac,
    NashMTL,
    PCGrad,
    RandomLossWeighting,
    StaticWeighting,
    UncertaintyWeighting,
    UPGrad,
    build_weighting,
)

TASKS = ["a", "b", "c"]
ALL = torch.tensor([True, True, True])
BOTH = torch.tensor([True, True])
# Two orthogonal gradients of different sizes, and two conflicting ones (torchjd's docs example).
ORTHOGONAL = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
CONFLICTING = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)


def weights_of(method, jacobian):
    return method.host_weights(jacobian @ jacobian.T, torch.ones(jacobian.shape[0], dtype=torch.bool))


# -- loss methods ------------------------------------------------------------------------------


def test_equal_and_static_weigh_present_tasks_times_their_priors():
    losses = torch.tensor([1.0, 2.0, 4.0])
    equal = EqualWeighting(TASKS)
    partial = torch.tensor([True, False, True])
    assert equal.combine(losses, equal.task_weights(losses, partial), partial).item() == 5.0
    equal.set_priors([2.0, 1.0, 0.5])
    assert equal.task_weights(losses, ALL).tolist() == [2.0, 1.0, 0.5]
    static = StaticWeighting(TASKS, {"a": 2.0, "b": 0.5, "c": 0.0})
    static.set_priors([3.0, 1.0, 1.0])
    assert static.task_weights(losses, ALL).tolist() == [6.0, 0.5, 0.0]
    assert StaticWeighting(TASKS).task_weights(losses, ALL).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"absent \['c'\]"):
        StaticWeighting(TASKS, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        StaticWeighting(TASKS, {"a": 1.0, "b": -1.0, "c": 1.0})
    with pytest.raises(ValueError, match="task 'b': loss_weight must be a finite number >= 0, got nan"):
        equal.set_priors([1.0, float("nan"), 1.0])


def test_uncertainty_weighting_follows_its_formula_with_priors_and_learns():
    method = UncertaintyWeighting(TASKS)
    method.set_priors([1.0, 1.0, 2.0])
    with torch.no_grad():
        method.log_variance.copy_(torch.tensor([0.0, math.log(2.0), -1.0]))
    losses = torch.tensor([1.0, 2.0, 3.0])
    expected = (1.0 + 0.0) + (2.0 / 2.0 + math.log(2.0)) + 2 * (3.0 * math.e - 1.0)
    weights = method.task_weights(losses, ALL)
    total = method.combine(losses, weights, ALL)
    assert total.item() == pytest.approx(expected)
    assert weights.tolist() == pytest.approx([1.0, 0.5, 2 * math.e])
    total.backward()
    # d/ds p (exp(-s) L + s) = p (1 - exp(-s) L)
    assert method.log_variance.grad.tolist() == pytest.approx([0.0, 0.0, 2 * (1 - math.e * 3.0)])
    method.log_variance.grad = None
    method.combine(losses, weights, torch.tensor([True, False, True])).backward()
    assert method.log_variance.grad[1].item() == 0.0  # an absent task's s does not move


def test_dwa_uses_the_ratio_of_the_last_two_epoch_averages_of_present_steps():
    method = DynamicWeightAverage(TASKS, temperature=2.0)
    zeros = torch.zeros(3)
    assert method.weights(zeros, ALL).tolist() == [1.0, 1.0, 1.0]  # first two epochs
    for epoch_losses in ([2.0, 2.0, 2.0], [1.0, 2.0, 4.0]):
        method.observe(torch.tensor(epoch_losses), ALL)
        method.observe(torch.tensor(epoch_losses), ALL)
        method.observe(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([False, False, False]))  # no targets: ignored
        method.end_epoch()
    expected = 3 * torch.softmax(torch.tensor([0.5, 1.0, 2.0]) / 2.0, dim=0)
    torch.testing.assert_close(method.weights(zeros, ALL), expected)
    partial = torch.tensor([True, False, True])
    torch.testing.assert_close(
        method.weights(zeros, partial),
        torch.tensor([2.0, 0.0, 2.0]) * torch.softmax(torch.tensor([0.25, -torch.inf, 1.0]), dim=0),
    )
    again = DynamicWeightAverage(TASKS)
    again.load_state_dict(method.state_dict())
    torch.testing.assert_close(again.weights(zeros, ALL), expected)


def test_rlw_draws_seeded_weights_once_per_step_that_sum_to_the_present_count():
    first, second = RandomLossWeighting(TASKS, seed=3), RandomLossWeighting(TASKS, seed=3)
    zeros, draws = torch.zeros(3), []
    for _ in range(3):
        w = first.weights(zeros, ALL)
        assert w.sum().item() == pytest.approx(3.0) and torch.equal(w, second.weights(zeros, ALL))
        assert torch.equal(w, first.weights(zeros, ALL))  # the same draw until the step ends
        draws.append(w)
        first.end_step()
        second.end_step()
    assert not torch.equal(draws[0], draws[1])
    partial = first.weights(zeros, torch.tensor([True, False, True]))
    assert partial[1] == 0 and partial.sum().item() == pytest.approx(2.0)
    resumed = RandomLossWeighting(TASKS, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.weights(zeros, ALL), first.weights(zeros, ALL))


def test_famo_weights_are_its_gradient_and_shift_towards_the_slow_task():
    method = FAMO(["a", "b"], learning_rate=0.1)
    losses = torch.tensor([2.0, 4.0])
    # z = (1/2, 1/2), c = sum z/L = 3/8: d/dL_k sum z log L / c = z_k / (c L_k) = (2/3, 1/3)
    torch.testing.assert_close(method.task_weights(losses, BOTH), torch.tensor([2 / 3, 1 / 3]))
    method.observe(losses, BOTH)
    method.end_step(torch.tensor([1.0, 4.0]), BOTH)  # a halved, b did not move: b gains weight
    z = method.task_probabilities(BOTH)
    assert z[1] > z[0] and z.sum().item() == pytest.approx(1.0)
    restored = FAMO(["a", "b"], learning_rate=0.1)
    restored.load_state_dict(method.state_dict())
    torch.testing.assert_close(restored.task_probabilities(BOTH), z)


def test_famo_logit_update_is_adam_and_leaves_absent_tasks_alone():
    method = FAMO(TASKS, learning_rate=0.05, weight_decay=0.01)
    logits = torch.zeros(3, requires_grad=True)
    adam = torch.optim.Adam([logits], lr=0.05, weight_decay=0.01)
    for before, after in [([1.0, 2.0, 3.0], [0.5, 1.9, 3.0]), ([0.9, 1.5, 2.0], [0.8, 1.4, 1.0])]:
        before, after = torch.tensor(before), torch.tensor(after)
        method.update_logits(before, after, ALL)
        delta = before.log() - after.log()
        adam.zero_grad()
        (logits.grad,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)
        adam.step()
        torch.testing.assert_close(method.logits, logits.detach())
    state = {key: value.clone() for key, value in method.state_dict().items() if torch.is_tensor(value)}
    method.update_logits(
        torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.1, 2.0, 9.0]), torch.tensor([True, True, False])
    )
    for key in ("logits", "exp_avg", "exp_avg_sq", "updates"):
        assert method.state_dict()[key][2] == state[key][2], key  # task c was absent
        assert method.state_dict()[key][0] != state[key][0], key


def test_famo_scale_to_tasks_and_warm_start_by_hand():
    losses = torch.tensor([2.0, 4.0])
    # scale_to_tasks: the paper's weights (2/3, 1/3) times the 2 present tasks, summing to 2 as equal's do
    scaled = FAMO(["a", "b"], scale_to_tasks=True)
    torch.testing.assert_close(scaled.task_weights(losses, BOTH), torch.tensor([4 / 3, 2 / 3]))
    # warm_start: xi = log L, so z = L / sum L = (1/3, 2/3), c = 1/3 / 2 + 2/3 / 4 = 1/3, w = z / (c L) = (1/2, 1/2)
    warm = FAMO(["a", "b"], warm_start=True)
    torch.testing.assert_close(warm.task_weights(losses, BOTH), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(warm.logits, losses.log())
    # once only: later steps' losses do not reset the logits that FAMO has been learning
    torch.testing.assert_close(warm.task_weights(torch.tensor([1.0, 1.0]), BOTH), torch.tensor([1 / 3, 2 / 3]))
    restored = FAMO(["a", "b"], warm_start=True)
    restored.load_state_dict(warm.state_dict())
    assert restored.warmed
    torch.testing.assert_close(restored.task_weights(torch.tensor([1.0, 1.0]), BOTH), torch.tensor([1 / 3, 2 / 3]))
    with pytest.raises(ValueError, match="warm_start must be true or false"):
        FAMO(["a"], warm_start="yes")


def test_famo_update_every_skips_the_replay_between_updates():
    method = FAMO(["a", "b"], update_every=3)
    asked = []
    for _ in range(6):
        asked.append(method.needs_losses_after_step)
        method.observe(torch.tensor([2.0, 2.0]), BOTH)
        method.end_step(torch.tensor([1.0, 2.0]), BOTH) if asked[-1] else method.end_step()
    assert asked == [True, False, False, True, False, False]
    assert method.updates.tolist() == [2.0, 2.0]  # two Adam steps, on the steps that replayed
    z = method.task_probabilities(BOTH)
    assert z[1] > z[0]
    with pytest.raises(RuntimeError, match="needs the step's losses re-evaluated"):
        method.end_step()
    with pytest.raises(ValueError, match="update_every must be a positive integer"):
        FAMO(["a"], update_every=0)


# -- gradient methods, on 2 x 2 and 2 x 3 Jacobians ------------------------------------------------


def test_pcgrad_projects_two_conflicting_gradients_by_hand():
    jacobian = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    # g1.g2 = -1 < 0: g1' = g1 + g2 / 2 = (0.5, 0.5); g2' = g2 + g1 = (0, 1); sum (0.5, 1.5)
    weights = weights_of(PCGrad(["a", "b"]), jacobian)
    torch.testing.assert_close(weights, torch.tensor([2.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(weights @ jacobian, torch.tensor([0.5, 1.5], dtype=torch.float64))
    torch.testing.assert_close(weights_of(PCGrad(["a", "b"]), ORTHOGONAL), torch.tensor([1.0, 1.0]).double())


def test_pcgrad_skips_absent_tasks_and_follows_its_seed():
    jacobian = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gramian = jacobian @ jacobian.T
    only_two = PCGrad(TASKS).host_weights(gramian, torch.tensor([True, False, True]))
    two = PCGrad(["a", "c"]).host_weights(gramian[[0, 2]][:, [0, 2]], BOTH)
    assert only_two[1] == 0 and torch.equal(only_two[[0, 2]], two)
    first, again = PCGrad(TASKS, seed=5), PCGrad(TASKS, seed=5)
    assert all(torch.equal(first.host_weights(gramian, ALL), again.host_weights(gramian, ALL)) for _ in range(4))


def test_cagrad_matches_the_average_without_conflict_and_improves_the_worst_task():
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    # Identical gradients: g_w = g0, d = g0 (1 + c), divided by 1 + c^2.
    torch.testing.assert_close(
        weights_of(CAGrad(["a", "b"], c=0.5), same) @ same, torch.tensor([1.0, 2.0], dtype=torch.float64) * 1.5 / 1.25
    )
    conflicting = torch.tensor([[1.0, 0.0], [-0.8, 0.3]], dtype=torch.float64)
    d = weights_of(CAGrad(["a", "b"], c=0.5), conflicting) @ conflicting
    assert (conflicting @ d).min() > (conflicting @ conflicting.mean(0)).min()


def test_upgrad_averages_each_gradient_projected_on_the_dual_cone():
    # g1.g2 = -22: each projected onto the other's half-space stays in the cone:
    # g1' = g1 + 22/38 g2, g2' = g2 + 22/18 g1; weights = (g1' + g2') / 2 in terms of g1, g2.
    weights = weights_of(UPGrad(["a", "b"]), CONFLICTING)
    expected = torch.tensor([(1 + 22 / 18) / 2, (1 + 22 / 38) / 2], dtype=torch.float64)
    torch.testing.assert_close(weights, expected, rtol=1e-3, atol=1e-4)
    assert ((CONFLICTING @ (weights @ CONFLICTING)) >= 0).all()  # conflicts with neither task
    torch.testing.assert_close(
        weights_of(UPGrad(["a", "b"]), ORTHOGONAL), torch.tensor([0.5, 0.5]).double(), rtol=1e-3, atol=1e-4
    )


def test_dualproj_projects_the_mean_onto_the_dual_cone():
    # mean = (1, 1, 1) conflicts with g1 (mean.g1 = -2): mean' = mean + 2/18 g1, which suits g2 (5.56 >= 0).
    weights = weights_of(DualProj(["a", "b"]), CONFLICTING)
    torch.testing.assert_close(weights, torch.tensor([0.5 + 1 / 9, 0.5], dtype=torch.float64), rtol=1e-3, atol=1e-4)


def test_imtl_g_gives_every_unit_gradient_the_same_projection():
    # G = diag(1, 4): w ~ G^-1 (1, 2) = (1, 1/2), normalised (2/3, 1/3); d = (2/3, 2/3) projects 2/3 on both.
    weights = weights_of(IMTLG(["a", "b"]), ORTHOGONAL)
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    units = ORTHOGONAL / ORTHOGONAL.norm(dim=1, keepdim=True)
    projections = units @ (weights @ ORTHOGONAL)
    torch.testing.assert_close(projections[0], projections[1])


def test_mgda_finds_the_minimum_norm_point_of_the_hull():
    # min |a g1 + (1 - a) g2|^2 = a^2 + 4 (1 - a)^2: a = 4/5.
    torch.testing.assert_close(weights_of(MGDA(["a", "b"]), ORTHOGONAL), torch.tensor([0.8, 0.2]).double())


def test_aligned_mtl_equalises_the_components():
    # Orthogonal gradients of norms 1 and 2, scaled to the smallest: weights (1/2, 1/4), d = (1/2, 1/2).
    weights = weights_of(AlignedMTL(["a", "b"]), ORTHOGONAL)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.25], dtype=torch.float64))
    torch.testing.assert_close(weights @ ORTHOGONAL, torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_config_gives_equal_cosines_and_matches_torchjd_on_the_jacobian():
    # Unit gradients e1, e2: direction (1, 1)/sqrt(2), length (1 + 2)/sqrt(2): d = (1.5, 1.5).
    weights = weights_of(ConFIG(["a", "b"]), ORTHOGONAL)
    torch.testing.assert_close(weights @ ORTHOGONAL, torch.tensor([1.5, 1.5], dtype=torch.float64))
    from torchjd.aggregation import ConFIG as TorchJDConFIG

    for seed in range(3):
        jacobian = torch.randn(3, 20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(weights_of(ConFIG(TASKS), jacobian) @ jacobian, TorchJDConFIG()(jacobian))


def test_nash_mtl_and_fairgrad_solve_the_bargaining_condition():
    # (G w)_k = 1 / w_k with G = diag(1, 4): w = (1, 1/2). FairGrad with alpha = 1 solves the same condition.
    for method in (NashMTL(["a", "b"]), FairGrad(["a", "b"])):
        weights = weights_of(method, ORTHOGONAL)
        torch.testing.assert_close(weights, torch.tensor([1.0, 0.5], dtype=torch.float64), rtol=1e-3, atol=1e-5)
        gramian = CONFLICTING @ CONFLICTING.T
        weights = weights_of(method, CONFLICTING)
        torch.testing.assert_close(gramian @ weights, 1 / weights, rtol=1e-3, atol=1e-5)


def test_gradvac_starts_as_pcgrad_then_aims_at_the_average_cosine():
    jacobian = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    method = GradVac(["a", "b"], beta=0.5)
    torch.testing.assert_close(weights_of(method, jacobian), torch.tensor([2.0, 1.5], dtype=torch.float64))
    # The pair's cosine is -1/sqrt(2); its average target is now -1/(2 sqrt(2)). g_i += w g_j with
    # w = |g_i| (t sqrt(1 - phi^2) - phi sqrt(1 - t^2)) / (|g_j| sqrt(1 - t^2)).
    phi, target = -(0.5**0.5), -(0.5**0.5) / 2
    factor = (target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)) / math.sqrt(1 - target**2)
    expected = torch.tensor([1 + factor * math.sqrt(2), 1 + factor / math.sqrt(2)], dtype=torch.float64)
    second = weights_of(method, jacobian)
    torch.testing.assert_close(second, expected)
    resumed = GradVac(["a", "b"], beta=0.5)
    resumed.load_state_dict(method.state_dict())
    torch.testing.assert_close(weights_of(resumed, jacobian), weights_of(method, jacobian))


@pytest.mark.parametrize("name", ["pcgrad", "gradvac", "nash_mtl"])
def test_stateful_gradient_methods_resume_where_they_stopped(name):
    jacobians = [torch.randn(3, 8, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(4)]
    method = build_weighting(name, TASKS)
    partial = torch.tensor([True, False, True])
    for jacobian in jacobians[:2]:
        method.host_weights(jacobian @ jacobian.T, ALL)
        method.host_weights(jacobian @ jacobian.T, partial)
    resumed = build_weighting(name, TASKS)
    resumed.load_state_dict(method.state_dict())
    for jacobian in jacobians[2:]:
        for present in (ALL, partial):
            torch.testing.assert_close(
                resumed.host_weights(jacobian @ jacobian.T, present),
                method.host_weights(jacobian @ jacobian.T, present),
            )


# -- building -----------------------------------------------------------------------------------


def test_build_weighting_checks_names_options_and_priors():
    assert isinstance(build_weighting("dwa", TASKS, {"temperature": 3.0}), DynamicWeightAverage)
    method = build_weighting("upgrad", TASKS, loss_weights=[1.0, 10.0, 1.0])
    assert method.priors.tolist() == [1.0, 10.0, 1.0]
    with pytest.raises(ValueError, match="unknown weighting method 'gradnorm'; use one of equal, static"):
        build_weighting("gradnorm", TASKS)
    with pytest.raises(
        ValueError, match=r"weighting 'dwa' has no option\(s\) \['alpha'\]; its options are \['temperature'\]"
    ):
        build_weighting("dwa", TASKS, {"alpha": 1.0})
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        build_weighting("dwa", TASKS, {"temperature": 0})
    with pytest.raises(ValueError, match=r"3 priors for 2 tasks"):
        build_weighting("equal", ["a", "b"], loss_weights=[1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("name", "missing"), [("upgrad", "quadprog"), ("dualproj", "qpsolvers"), ("nash_mtl", "cvxpy")]
)
def test_a_method_without_its_solver_fails_at_construction_with_the_install_line(monkeypatch, name, missing):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == missing else real(module, *a))
    with pytest.raises(ImportError, match=rf"weighting '{name}' needs {missing}.*pip install 'mtl_hf\[solvers\]'"):
        build_weighting(name, TASKS)


def test_every_method_is_documented_with_its_paper():
    for name, cls in WEIGHTING_METHODS.items():
        assert cls.paper, name
        assert cls.__doc__ and len(cls.__doc__.split()) > 10, name


@pytest.mark.parametrize("name", [name for name, cls in WEIGHTING_METHODS.items() if cls.uses_gradients])
def test_a_step_with_one_present_task_gets_a_finite_weight(name):
    """Found by tests/test_properties.py: Nash-MTL's convex program cannot be posed for one task."""
    gradient = torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64)
    others = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    jacobian = torch.cat([gradient, others])
    weights = build_weighting(name, TASKS).host_weights(jacobian @ jacobian.T, torch.tensor([True, False, False]))
    assert torch.isfinite(weights).all() and weights[0] > 0 and (weights[1:] == 0).all()
    if name == "nash_mtl":
        assert weights[0].item() == pytest.approx(1 / 5)  # the one-player bargaining solution: w = 1 / ||g||
