"""GradVac: gradient vaccine (Wang et al., ICLR 2021), through torchjd."""

import torch

from ...errors import UserError
from ...utils.validation import check_positive
from ..base import GramianWeighting, step_generator


class GradVac(GramianWeighting):
    """
    Like PCGrad, but instead of only removing conflicts it pulls each pair of task gradients
    towards the cosine similarity they have shown on average (an exponential moving average per
    pair, the method's state): a correction `g_i += w g_j` whenever the pair's cosine falls below
    its average. All on the K x K Gramian (torchjd's `GradVacWeighting`). The visiting order is
    drawn from `(seed, call)`, so it is the same on every rank and after a resume; the averages
    are kept per set of present tasks and saved in checkpoints.

    Wang, Tsvetkov, Firat, Cao. "Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models." ICLR 2021. arXiv:2010.05874.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        beta (`float`, defaults to 0.5): the moving average's rate (in (0, 1]).
        seed (`int`, defaults to 0): seed of the visiting order.
    """

    name = "gradvac"
    paper = "Wang et al., ICLR 2021"

    def __init__(self, task_names: list[str], beta: float = 0.5, seed: int = 0):
        super().__init__(task_names)
        beta = check_positive("beta", beta)
        if beta > 1:
            raise UserError(f"beta must be in (0, 1], got {beta!r}")
        self.beta = beta
        self.seed = int(seed)
        self.calls = 0
        self._solvers = {}  # set of present tasks -> torchjd's GradVacWeighting and its averages

    def _solver(self, tasks: tuple[int, ...]):
        if tasks not in self._solvers:
            from torchjd.aggregation import GradVacWeighting

            self._solvers[tasks] = GradVacWeighting(beta=self.beta)
        return self._solvers[tasks]

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        solver = self._solver(tasks)
        # torchjd draws its order from the global generator: seed a private copy of it instead.
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(step_generator(self.seed, self.calls).get_state())
            weights = solver(gramian)
        self.calls += 1
        return weights

    def get_extra_state(self):
        averages = {
            ",".join(map(str, tasks)): solver._phi_t.clone()
            for tasks, solver in self._solvers.items()
            if solver._phi_t is not None
        }
        return {"calls": self.calls, "averages": averages}

    def set_extra_state(self, state):
        self.calls = int(state["calls"])
        self._solvers = {}
        for key, averages in state["averages"].items():
            solver = self._solver(tuple(int(i) for i in key.split(",")))
            # torchjd keeps the averages in a buffer it fills on first use; fill it from the checkpoint.
            solver._phi_t = averages.clone()
            solver._state_key = (averages.shape[0], averages.dtype)
