"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023), through torchjd."""

from ...utils.validation import check_choice
from ..base import TorchJDWeighting


class AlignedMTL(TorchJDWeighting):
    """
    Makes the task gradients orthogonal and of equal size (the eigendecomposition of the K x K
    Gramian gives the balance transformation), rescaled by the smallest singular value, and sums
    them: the condition number of the combined system is 1, so neither conflicts nor dominance
    survive (torchjd's `AlignedMTLWeighting`).

    Senushkin, Patakin, Kuznetsov, Konushin. "Independent Component Alignment for Multi-Task
    Learning." CVPR 2023. arXiv:2305.19000.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        scale_mode (`str`, defaults to `"min"`): the eigenvalue the result is scaled by:
            `"min"` (the paper's), `"median"` or `"rmse"` (the mean).
    """

    name = "aligned_mtl"
    paper = "Senushkin et al., CVPR 2023"

    def __init__(self, task_names: list[str], scale_mode: str = "min"):
        super().__init__(task_names)
        from torchjd.aggregation import AlignedMTLWeighting

        self.solver = AlignedMTLWeighting(scale_mode=check_choice("scale_mode", scale_mode, ("min", "median", "rmse")))
