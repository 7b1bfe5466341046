"""FairGrad: alpha-fair resource allocation between tasks (Ban and Ji, ICML 2024), through torchjd."""

from ...utils.validation import check_positive
from ..base import TorchJDWeighting


class FairGrad(TorchJDWeighting):
    """
    Treats each task's first-order improvement `g_k . d` as a utility and picks the update that
    maximises their alpha-fair sum: the weights solve `G w = w^(-1/alpha)` (torchjd's
    `FairGradWeighting`, SciPy's least squares). `alpha = 1` is proportional fairness (Nash-MTL's
    condition); larger alpha favours the worst-off task more.

    Ban, Ji. "Fair Resource Allocation in Multi-Task Learning." ICML 2024. arXiv:2402.15638.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        alpha (`float`, defaults to 1.0): the fairness parameter.
        max_iters (`int`, *optional*): the solver's iteration cap (SciPy's default: 100 x K).
    """

    name = "fairgrad"
    paper = "Ban & Ji, ICML 2024"
    requires = ("scipy",)

    def __init__(self, task_names: list[str], alpha: float = 1.0, max_iters: int | None = None):
        super().__init__(task_names)
        from torchjd.aggregation import FairGradWeighting

        self.solver = FairGradWeighting(alpha=check_positive("alpha", alpha), max_iters=max_iters)
