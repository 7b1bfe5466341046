"""`mtl-hf compare`: one multi-task model per balancing method against one single-task model per task, over
seeds. Modules: `budgets` (the runs each budget gives, and the sweeps' candidates), `runner` (training and scoring
them, resumably), `statistics` (delta_m and the summary), `report` (the table and the plot), `command` (the command
line). The names below load on first use, so that the command parses its arguments before the training stack."""

from typing import TYPE_CHECKING

from ...utils.lazy import lazy_attributes

_ATTRIBUTES = {
    "main": ".command",
    "BUDGETS": ".budgets",
    "SINGLE_TASK": ".budgets",
    "PlannedRun": ".budgets",
    "plan_runs": ".budgets",
    "markdown_table": ".report",
    "plot_comparison": ".report",
    "compare": ".runner",
    "delta_m": ".statistics",
    "summarise": ".statistics",
    "weak_baselines": ".statistics",
}

if TYPE_CHECKING:
    from .budgets import BUDGETS, SINGLE_TASK, PlannedRun, plan_runs
    from .command import main
    from .report import markdown_table, plot_comparison
    from .runner import compare
    from .statistics import delta_m, summarise, weak_baselines

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)

__all__ = sorted(_ATTRIBUTES)
