"""UPGrad: unconflicting projection of gradients (Quinton and Rey, 2024), through torchjd."""

from ..base import TorchJDWeighting


class UPGrad(TorchJDWeighting):
    """
    Projects each task's gradient onto the dual cone of all the task gradients (the directions
    that improve no task less than zero) and averages the projections: the update never conflicts
    with any task, and it weighs tasks by their gradients' own scale. The projection is a small
    quadratic program on the K x K Gramian (torchjd's `UPGradWeighting`, solved with quadprog).

    Quinton, Rey. "Jacobian Descent for Multi-Objective Optimization." arXiv:2406.16232, 2024.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
    """

    name = "upgrad"
    paper = "Quinton & Rey, 2024 (arXiv:2406.16232)"
    requires = ("quadprog", "qpsolvers")

    def __init__(self, task_names: list[str]):
        super().__init__(task_names)
        from torchjd.aggregation import UPGradWeighting

        self.solver = UPGradWeighting()
