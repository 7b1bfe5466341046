"""IMTL-G: impartial multi-task learning, gradient part (Liu et al., ICLR 2021), through torchjd."""

from ..base import TorchJDWeighting


class IMTLG(TorchJDWeighting):
    """
    The update whose projection on every task's unit gradient is the same, with weights summing
    to 1: `w ~ G^+ sqrt(diag G)`. Impartial to the gradients' scale, so no task dominates by the size
    of its gradient (torchjd's `IMTLGWeighting`, which also handles linearly dependent gradients).

    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning." ICLR 2021.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
    """

    name = "imtl_g"
    paper = "Liu et al., ICLR 2021"

    def __init__(self, task_names: list[str]):
        super().__init__(task_names)
        from torchjd.aggregation import IMTLGWeighting

        self.solver = IMTLGWeighting()
