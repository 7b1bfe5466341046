"""DualProj: the average gradient projected onto the dual cone (Quinton and Rey, 2024), through torchjd."""

import torch

from .base import GramianWeighting


class DualProj(GramianWeighting):
    """
    Projects the average of the task gradients onto the dual cone of the task gradients: the
    closest update to plain averaging that conflicts with no task (the projection used by
    Lopez-Paz and Ranzato's GEM). A quadratic program on the K x K Gramian (torchjd's
    `DualProjWeighting`, solved with quadprog).

    Quinton, Rey. "Jacobian Descent for Multi-Objective Optimization." arXiv:2406.16232, 2024;
    Lopez-Paz, Ranzato. "Gradient Episodic Memory for Continual Learning." NeurIPS 2017.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
    """

    name = "dualproj"
    paper = "Lopez-Paz & Ranzato, NeurIPS 2017; Quinton & Rey, 2024"
    requires = ("quadprog", "qpsolvers")

    def __init__(self, task_names: list[str]):
        super().__init__(task_names)
        from torchjd.aggregation import DualProjWeighting

        self._solver = DualProjWeighting()

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        return self._solver(gramian)
