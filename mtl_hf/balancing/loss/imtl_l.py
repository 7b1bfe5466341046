"""IMTL-L: impartial loss balancing (Liu et al., ICLR 2021), which is uncertainty weighting reparameterised."""

from .uncertainty import UncertaintyWeighting


class IMTLL(UncertaintyWeighting):
    """
    Learns a log-scale `s_k` per task and minimises `sum_k p_k (exp(s_k) * L_k - s_k)` (`p_k`: the task's
    `loss_weight`): at the optimum over `s_k`, `exp(s_k) * L_k = 1`, so every task's scaled loss is the same,
    whatever its units. With `s_k = -log_variance_k` this is `uncertainty`'s objective term for term, and the
    optimizer (sign-symmetric, no weight decay on these parameters) moves `s_k` exactly as it moves `-log_variance_k`:
    the two names give the same training. This class is `uncertainty` under the IMTL paper's name, its state kept
    as `log_variance = -s`.

    This is the loss half of IMTL; its gradient half is `imtl_g`.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. "Towards Impartial Multi-task Learning." ICLR 2021.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
        initial_log_scale (`float`, defaults to 0.0): the starting `s_k` (scale `exp(s_k)` = 1).
    """

    name = "imtl_l"
    paper = "Liu et al., ICLR 2021 (loss balance)"

    def __init__(self, task_names: list[str], initial_log_scale: float = 0.0):
        super().__init__(task_names, initial_log_variance=-float(initial_log_scale))
