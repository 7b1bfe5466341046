"""ConFIG: conflict-free inverse gradients (Liu et al., ICLR 2025)."""

import torch

from ..base import GramianWeighting


class ConFIG(GramianWeighting):
    """
    The update whose cosine with every task's gradient is the same: its direction is
    `pinv(U) @ 1` for the unit gradients `U = D^-1 J` (`D`: the gradients' norms), its length the
    sum of the gradients' projections on that direction. With `U U^T = D^-1 G D^-1` this is the
    combination `J^T a`, `a = D^-1 (D^-1 G D^-1)^+ 1`, rescaled to `(1^T G a) / (a^T G a) a`: the
    Gramian alone gives the weights (the test checks them against torchjd's ConFIG on the Jacobian).

    Liu, Chu, Thuerey. "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks." ICLR 2025. arXiv:2408.11104.

    Args:
        task_names (`list[str]`): the tasks, in the model's order.
    """

    name = "config"
    paper = "Liu et al., ICLR 2025"

    def gramian_weights(self, gramian: torch.Tensor, tasks: tuple[int, ...]) -> torch.Tensor:
        norms = gramian.diagonal().clamp_min(0).sqrt()
        inverse = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))
        cosines = inverse[:, None] * gramian * inverse[None, :]
        a = inverse * (torch.linalg.pinv(cosines, hermitian=True) @ torch.ones_like(norms))
        squared_norm = a @ gramian @ a
        if squared_norm <= 0:
            return torch.zeros_like(norms)
        return (gramian @ a).sum() / squared_norm * a
