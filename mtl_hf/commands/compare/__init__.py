"""`mtl-hf compare`: one multi-task model per balancing method against one single-task model per task, over
seeds. Modules: `plan` (the runs and budgets), `runner` (training and scoring them, resumably),
`statistics` (delta_m and the summary), `report` (the table and the plot), `command` (the command line)."""

from .command import main
from .plan import BUDGETS, SINGLE_TASK, PlannedRun, plan_runs
from .report import markdown_table, plot_comparison
from .runner import compare
from .statistics import delta_m, summarise, weak_baselines

__all__ = [
    "BUDGETS",
    "SINGLE_TASK",
    "PlannedRun",
    "compare",
    "delta_m",
    "main",
    "markdown_table",
    "plan_runs",
    "plot_comparison",
    "summarise",
    "weak_baselines",
]
