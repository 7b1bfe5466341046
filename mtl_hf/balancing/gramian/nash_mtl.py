"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022), through torchjd."""

import warnings

import numpy as np
import torch

from ...errors import UserError
from ...utils.validation import check_positive
from ..base import GramianWeighting, gramian_root


class NashMTL(GramianWeighting):
    """
    The Nash bargaining solution between tasks: weights `w > 0` with `(G w)_k = 1 / w_k`, so every
    task's improvement `g_k . d` is inversely proportional to its weight; solved as a sequence of
    convex problems with cvxpy/ECOS, warm-started from the previous step's weights (the method's
    state, kept per set of present tasks). torchjd's `NashMTL` is used on a K x K square root of
    the Gramian, which has the same Gramian as the Jacobian and so the same solution.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. "Multi-Task Learning as a
    Bargaining Game." ICML 2022. arXiv:2202.01017.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        update_weights_every (`int`, defaults to 1): solve every this many steps, reuse the weights between.
        optim_niter (`int`, defaults to 20): convex solves per step, at most.
        max_norm (`float`, defaults to 0.0): clip the combined gradient's norm (0: no clipping; Trainer's
            `max_grad_norm` clips the parameters' gradient in any case).
    """

    name = "nash_mtl"
    paper = "Navon et al., ICML 2022"
    requires = ("cvxpy", "ecos")

    def __init__(
        self, task_names: list[str], update_weights_every: int = 1, optim_niter: int = 20, max_norm: float = 0.0
    ):
        super().__init__(task_names)
        every = update_weights_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserError(f"update_weights_every must be a positive integer, got {update_weights_every!r}")
        self.update_weights_every = update_weights_every
        self.optim_niter = int(check_positive("optim_niter", optim_niter))
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or max_norm < 0:
            raise UserError(f"max_norm must be a number >= 0, got {max_norm!r}")
        self.max_norm = float(max_norm)
        self._solvers = {}  # set of present tasks -> torchjd's NashMTL with its warm start

    def _solver(self, tasks: tuple[int, ...]):
        if tasks not in self._solvers:
            from torchjd.aggregation import NashMTL as TorchJDNashMTL

            self._solvers[tasks] = TorchJDNashMTL(
                n_tasks=len(tasks),
                max_norm=self.max_norm,
                update_weights_every=self.update_weights_every,
                optim_niter=self.optim_niter,
            )
        return self._solvers[tasks]

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        if len(tasks) == 1:
            # One player's bargaining solution, w * ||g||^2 = 1 / w: w = 1 / ||g|| (the convex program that
            # torchjd poses has no 1 x 1 form). A zero gradient keeps weight 1: there is nothing to scale.
            squared_norm = float(gramian[0, 0])
            weight = 1.0 / squared_norm**0.5 if squared_norm > 1e-24 else 1.0
            if self.max_norm > 0 and squared_norm > 1e-24:
                weight *= min(1.0, self.max_norm)  # the combined gradient w * g has norm 1 before clipping
            return torch.tensor([weight], dtype=torch.float64)
        with warnings.catch_warnings():
            # cvxpy notes at every solve that this parameterised problem cannot be cached (not DPP).
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            return self._solver(tasks).weighting(gramian_root(gramian))

    def get_extra_state(self):
        state = {}
        for tasks, solver in self._solvers.items():
            weighting = solver.weighting
            state[",".join(map(str, tasks))] = {
                "step": float(weighting.step),
                "previous_weights": torch.from_numpy(np.array(weighting.prvs_alpha)),
            }
        return state

    def set_extra_state(self, state):
        self._solvers = {}
        for key, values in state.items():
            weighting = self._solver(tuple(int(i) for i in key.split(","))).weighting
            weighting.prvs_alpha = values["previous_weights"].numpy().copy()
            weighting.step = values["step"]
            if weighting.step > 0:
                # torchjd builds its convex problem at the first step only; a restored solver needs it now.
                weighting._init_optim_problem()
