"""DualProj: the average gradient projected onto the dual cone (Quinton and Rey, 2024), through torchjd."""

from ..base import TorchJDWeighting


class DualProj(TorchJDWeighting):
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

        self.solver = DualProjWeighting()
