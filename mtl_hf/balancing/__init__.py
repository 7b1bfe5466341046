"""Balancing methods, one small class per file.

Loss-based (`LossWeighting`: task losses -> weights): `equal`, `static`, `uncertainty` (Kendall et
al. 2018), `dwa` (Liu et al. 2019), `rlw` (Lin et al. 2022), `famo` (Liu et al. 2023), and the loss-scale
methods `log_loss` (DB-MTL's, Lin et al. 2023), `geometric` (Chennupati et al. 2019), `stch` (Lin et al. 2024),
`imtl_l` (Liu et al. 2021).

Gradient-based (`GramianWeighting`: the K x K Gramian of the per-task gradients -> weights):
`pcgrad` (Yu et al. 2020), `cagrad` (Liu et al. 2021), `config` (Liu et al. 2025), and through
torchjd: `upgrad`, `dualproj` (Quinton & Rey 2024), `imtl_g` (Liu et al. 2021), `mgda` (Désidéri 2012;
Sener & Koltun 2018), `aligned_mtl` (Senushkin et al. 2023), `nash_mtl` (Navon et al. 2022),
`gradvac` (Wang et al. 2021), `fairgrad` (Ban & Ji 2024).
"""

import inspect

from ..errors import UserError
from ..utils.validation import check_choice
from .base import GramianWeighting, LossWeighting, WeightingMethod
from .gramian.aligned_mtl import AlignedMTL
from .gramian.cagrad import CAGrad
from .gramian.conflict_free import ConFIG
from .gramian.dualproj import DualProj
from .gramian.fairgrad import FairGrad
from .gramian.gradvac import GradVac
from .gramian.imtl_g import IMTLG
from .gramian.mgda import MGDA
from .gramian.nash_mtl import NashMTL
from .gramian.pcgrad import PCGrad
from .gramian.upgrad import UPGrad
from .loss.dwa import DynamicWeightAverage
from .loss.equal import EqualWeighting
from .loss.famo import FAMO
from .loss.geometric import GeometricMean
from .loss.imtl_l import IMTLL
from .loss.log_loss import LogLoss
from .loss.rlw import RandomLossWeighting
from .loss.static import StaticWeighting
from .loss.stch import SmoothTchebycheff
from .loss.uncertainty import UncertaintyWeighting

WEIGHTING_METHODS: dict[str, type[WeightingMethod]] = {
    cls.name: cls
    for cls in (
        EqualWeighting,
        StaticWeighting,
        UncertaintyWeighting,
        DynamicWeightAverage,
        RandomLossWeighting,
        FAMO,
        LogLoss,
        GeometricMean,
        SmoothTchebycheff,
        IMTLL,
        PCGrad,
        CAGrad,
        UPGrad,
        DualProj,
        IMTLG,
        MGDA,
        AlignedMTL,
        ConFIG,
        NashMTL,
        GradVac,
        FairGrad,
    )
}


def check_weighting_options(name: str, options: dict | None) -> type[WeightingMethod]:
    """The class of method `name`, after checking `options` against its typed arguments."""
    cls = WEIGHTING_METHODS[check_choice("weighting method", name, tuple(WEIGHTING_METHODS))]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "task_names")]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise UserError(f"weighting {name!r} has no option(s) {unknown}; its options are {accepted}")
    return cls


def build_weighting(
    name: str, task_names: list[str], options: dict | None = None, loss_weights: list[float] | None = None
) -> WeightingMethod:
    """The method `name` for `task_names`, with `options` checked against its typed arguments and each
    task's `loss_weight` as its prior."""
    method = check_weighting_options(name, options)(task_names, **(options or {}))
    if loss_weights is not None:
        method.set_priors(loss_weights)
    return method


__all__ = [
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FAMO",
    "FairGrad",
    "GeometricMean",
    "GradVac",
    "GramianWeighting",
    "IMTLG",
    "IMTLL",
    "LogLoss",
    "LossWeighting",
    "MGDA",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "SmoothTchebycheff",
    "StaticWeighting",
    "UPGrad",
    "UncertaintyWeighting",
    "WEIGHTING_METHODS",
    "WeightingMethod",
    "build_weighting",
    "check_weighting_options",
]
