"""MGDA: the multiple-gradient descent algorithm (Désidéri 2012; Sener and Koltun, NeurIPS 2018), through torchjd."""

from ...utils.validation import check_positive
from ..base import TorchJDWeighting


class MGDA(TorchJDWeighting):
    """
    The minimum-norm point of the convex hull of the task gradients: the steepest direction that
    improves every task (a Pareto-stationary point gives zero). Frank-Wolfe on the K x K Gramian
    (torchjd's `MGDAWeighting`, Algorithm 2 of Sener and Koltun).

    Désidéri. "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization."
    Comptes Rendus Mathematique, 2012; Sener, Koltun. "Multi-Task Learning as Multi-Objective
    Optimization." NeurIPS 2018. arXiv:1810.04650.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        epsilon (`float`, defaults to 0.001): Frank-Wolfe stops when its step falls below this.
        max_iters (`int`, defaults to 100): at most this many Frank-Wolfe steps.
    """

    name = "mgda"
    paper = "Désidéri, 2012; Sener & Koltun, NeurIPS 2018"

    def __init__(self, task_names: list[str], epsilon: float = 0.001, max_iters: int = 100):
        super().__init__(task_names)
        from torchjd.aggregation import MGDAWeighting

        self.solver = MGDAWeighting(epsilon=check_positive("epsilon", epsilon), max_iters=int(max_iters))
