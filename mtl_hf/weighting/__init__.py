"""Loss-balancing methods, one small class per file behind `WeightingMethod`.

Loss-based: `equal`, `static`, `uncertainty` (Kendall et al. 2018), `dwa` (Liu et al. 2019),
`rlw` (Lin et al. 2022), `famo` (Liu et al. 2023). Gradient-based, on the shared backbone
parameters: `pcgrad` (Yu et al. 2020), `cagrad` (Liu et al. 2021).
"""

import inspect

from .base import WeightingMethod
from .cagrad import CAGrad
from .dwa import DynamicWeightAverage
from .equal import EqualWeighting
from .famo import FAMO
from .pcgrad import PCGrad
from .rlw import RandomLossWeighting
from .static import StaticWeighting
from .uncertainty import UncertaintyWeighting

WEIGHTING_METHODS: dict[str, type[WeightingMethod]] = {
    cls.name: cls
    for cls in (
        EqualWeighting,
        StaticWeighting,
        UncertaintyWeighting,
        DynamicWeightAverage,
        RandomLossWeighting,
        FAMO,
        PCGrad,
        CAGrad,
    )
}


def check_weighting_options(name: str, options: dict | None) -> type[WeightingMethod]:
    """The class of method `name`, after checking `options` against its typed arguments."""
    if name not in WEIGHTING_METHODS:
        raise ValueError(f"unknown weighting method {name!r}; use one of {', '.join(WEIGHTING_METHODS)}")
    cls = WEIGHTING_METHODS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "task_names")]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise ValueError(f"weighting {name!r} has no option(s) {unknown}; its options are {accepted}")
    return cls


def build_weighting(name: str, task_names: list[str], options: dict | None = None) -> WeightingMethod:
    """The method `name` for `task_names`, with `options` checked against its typed arguments."""
    return check_weighting_options(name, options)(task_names, **(options or {}))


__all__ = [
    "CAGrad",
    "DynamicWeightAverage",
    "EqualWeighting",
    "FAMO",
    "PCGrad",
    "RandomLossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "WEIGHTING_METHODS",
    "WeightingMethod",
    "build_weighting",
    "check_weighting_options",
]
