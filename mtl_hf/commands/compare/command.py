"""`mtl-hf compare`: is one multi-task model as good as one model per task, and which balancing helps?

    mtl-hf compare CONFIG.yaml --methods equal,uncertainty,famo,pcgrad,upgrad --seeds 3 [--budget per-task]
    accelerate launch recipes/compare.py CONFIG.yaml --methods equal,famo --seeds 3

From one recipe YAML it trains, for every seed, one single-task model per task (the baselines)
and one multi-task model per balancing method: same backbone, data, schedule and evaluation rows.
Each run is scored with its tasks' main metrics, and each method gets delta_m (Maninis et al.,
2019): the mean over tasks of the relative change of its score against the single-task model of
the same seed, sign-adjusted so that lower is better; negative means multi-task learning helped.

Budget rules (stated in every output):
- `per-task`: every model takes the optimizer steps the recipe gives the multi-task model, so the
  multi-task model costs about 1/K of the K baselines together (the usual setting of the papers);
- `total`: the K baselines share those steps, each taking 1/K of them, so the baselines together
  cost what one multi-task model costs;
- `convergence`: every model trains until its own validation score stops improving (`--patience`
  evaluations, one every `--eval_steps`), the recipe's steps being the cap, and its best checkpoint
  is restored; the steps and time each took are reported.

A seeded `--validation_fraction` of the training rows is held out for early stopping and for the
tuned baselines `equal_lr_sweep` (equal weights at three learning rates) and `static_sweep` (static
weights from a small grid), which pick their candidate on it and are costed as all candidates
together. The table scores the evaluation rows, which nothing was chosen on.

Each finished run leaves `runs/<run>/seed-<seed>/result.json` under the output folder and is not
trained again: an interrupted comparison, run again, continues where it stopped. The outputs are
`comparison.json` (every run and the summary), `comparison.md` (the table) and `comparison.png`
(delta_m and its spread over seeds against training time).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ...utils.validation import comma_separated
from ..parsing import CommandParser, user_errors_in_one_line
from ..recipe import parse_recipe
from .budgets import BUDGETS
from .report import markdown_table


def build_parser(prog: str = "mtl-hf compare") -> CommandParser:
    parser = CommandParser(
        prog=prog,
        description="Train single-task baselines and one multi-task model per balancing method from a recipe, "
        "for several seeds, and tabulate delta_m, time and memory. Other --key value flags "
        "override the recipe, as for `mtl-hf train`.",
    )
    parser.add_argument("config", help="the recipe YAML, e.g. recipes/configs/demo.yaml")
    parser.add_argument(
        "--methods",
        default="equal,uncertainty,famo,pcgrad,upgrad",
        help="comma-separated balancing methods (default: %(default)s)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model: the recipe's seed, +1, ... (default: 3)")
    parser.add_argument(
        "--budget",
        choices=BUDGETS,
        default="per-task",
        help="per-task: every model trains the recipe's steps; total: the single-task models "
        "share them; convergence: each model stops early on its validation score, the recipe's steps "
        "the cap (default: per-task)",
    )
    parser.add_argument(
        "--validation_fraction",
        type=float,
        default=0.1,
        help="share of the training rows held out to stop early and to pick a sweep's candidate (default: 0.1)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=3,
        help="convergence budget: evaluations without improvement before a model stops (default: 3)",
    )
    parser.add_argument(
        "--eval_steps",
        type=int,
        help="convergence budget: optimizer steps between validation evaluations (default: the cap / 20)",
    )
    parser.add_argument(
        "--output_dir", help="where runs and results go (default: the recipe's output_dir + /comparison)"
    )
    return parser


def parse_compare_args(argv: Sequence[str], prog: str = "mtl-hf compare"):
    """(compare options, (ModelArguments, DataArguments, MultiTaskTrainingArguments)) from the command line."""
    parser = build_parser(prog)
    if not argv or any(flag in argv for flag in ("-h", "--help")):
        parser.print_help()
        raise SystemExit(0 if argv else 2)
    options, recipe_flags = parser.parse_known_args(list(argv))
    options.methods = comma_separated(options.methods)
    return options, parse_recipe([options.config, *recipe_flags], prog=prog)


def main(argv: Sequence[str] | None = None, prog: str = "recipes/compare.py") -> dict[str, Any]:
    with user_errors_in_one_line(prog):
        argv = list(sys.argv[1:] if argv is None else argv)
        options, (model_args, data_args, training_args) = parse_compare_args(argv, prog)
        from ... import register_with_transformers
        from .runner import compare  # the training stack: imported once the arguments hold

        register_with_transformers()  # the `mtl-hf` command defers it past parsing (mtl_hf/__init__.py)
        output_dir = options.output_dir or os.path.join(training_args.output_dir, "comparison")
        comparison = compare(
            model_args,
            data_args,
            training_args,
            methods=options.methods,
            seeds=options.seeds,
            budget=options.budget,
            output_dir=output_dir,
            validation_fraction=options.validation_fraction,
            patience=options.patience,
            eval_steps=options.eval_steps,
        )
    if training_args.process_index == 0:
        print("\n" + markdown_table(comparison))
        print(f"\ncomparison.json, comparison.md and comparison.png written to {output_dir}/")
    return comparison


__all__ = ["build_parser", "main", "parse_compare_args"]


if __name__ == "__main__":
    main()
