"""`mtl-hf`: a first recipe for a catalogue; train, compare, prepare, evaluate, predict and push from the command line.

    mtl-hf init CATALOGUE --image_column path --tasks category,colour,... [--output recipe.yaml]
    mtl-hf train CONFIG.yaml [--key value ...]
    mtl-hf compare CONFIG.yaml [--methods equal,famo,...] [--seeds 3] [--budget per-task|total]
    mtl-hf prepare CATALOGUE OUTPUT --image_column path --tasks category,colour,... [--size 256] [--master local[*]]
    mtl-hf add-task MODEL DATA --tasks ink[,...] --output NEW [--mode heads|lora|full] [--max_old_task_drop 0.02]
    mtl-hf eval MODEL DATA [--split validation] [--json]
    mtl-hf calibrate MODEL DATA [--split validation] [--target_precision 0.95]
    mtl-hf audit MODEL DATA --output OUT [--split train] [--folds 5]
    mtl-hf report MODEL DATA --output report.html [--split test]
    mtl-hf predict MODEL IMAGE [IMAGE ...] [--top_k 3] [--json]
    mtl-hf predict MODEL SOURCE --output OUT [--engine onnx] [--threshold tags=0.3] [--storage_options JSON]
    mtl-hf export MODEL OUTPUT [--format onnx]
    mtl-hf serve MODEL [--host 127.0.0.1] [--port 8000] [--max_batch_size 32] [--max_wait_ms 10]
    mtl-hf push MODEL REPO_ID [--private]

A user's mistake is one line on stderr and exit code 2; any other error keeps its traceback. Each
command imports what it needs when it runs, so `--help` and the one-line errors come back quickly.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import UserError, one_line
from . import audit, calibrate, evaluate, export, init, merge, predict, push, report, serve
from .parsing import CommandParser

# Commands whose own parser takes everything after their name: (module, summary, description, what follows).
DELEGATED = {
    "train": (
        ".train",
        "train from a recipe YAML (see recipes/configs/)",
        "Train from a recipe YAML; flags after it override its values. `mtl-hf train CONFIG.yaml --help` "
        "lists every field.",
        "--key value pairs that override the YAML",
    ),
    "compare": (
        ".compare.command",
        "multi-task vs single-task models and balancing methods, over seeds",
        "Train single-task baselines and one multi-task model per balancing method from a recipe; "
        "`mtl-hf compare CONFIG.yaml --help` lists the options.",
        "--methods, --seeds, --budget, --output_dir, and --key value recipe overrides",
    ),
    "add-task": (
        ".add_task",
        "new tasks learnt on a trained model, its old tasks kept (and checked)",
        "Add tasks to a trained model: heads, LoRA on the new tasks' path, or full fine-tuning with distillation; "
        "the old tasks are scored before and after. `mtl-hf add-task --help` lists the options.",
        "MODEL DATA --tasks ... --output NEW [--mode ...] and --key value recipe overrides",
    ),
    "prepare": (
        ".prepare.command",
        "a catalogue of product photos -> Parquet shards for training, on Spark",
        "Decode, check, resize and label a catalogue's photos on Spark and write Parquet shards; "
        "`mtl-hf prepare --help` lists the options.",
        "CATALOGUE OUTPUT --image_column ... --tasks ...",
    ),
}
COMMANDS = {
    "init": init,
    "eval": evaluate,
    "calibrate": calibrate,
    "audit": audit,
    "report": report,
    "predict": predict,
    "export": export,
    "serve": serve,
    "merge": merge,
    "push": push,
}


class MtlHfParser(CommandParser):
    """The `mtl-hf` parser and its subcommands' parsers, kept by name."""

    def __init__(self):
        super().__init__(prog="mtl-hf", description="Multi-task vision transformers, the Hugging Face way.")
        self.commands: dict[str, CommandParser] = {}
        subparsers = self.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
        for name, (_, summary, description, rest) in DELEGATED.items():
            command = subparsers.add_parser(name, help=summary, description=description)
            if name not in ("prepare", "add-task"):
                command.add_argument("config", help="the recipe YAML, e.g. recipes/configs/demo.yaml")
            command.add_argument("arguments", nargs=argparse.REMAINDER, help=rest)
            self.commands[name] = command
        for name, module in COMMANDS.items():
            command = subparsers.add_parser(name, help=module.SUMMARY, description=module.__doc__.split("\n\n")[0])
            module.add_arguments(command)
            command.set_defaults(run=module.run)
            self.commands[name] = command


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = MtlHfParser()
    command = argv[0] if argv and argv[0] in parser.commands else None
    try:
        if command in DELEGATED:
            # `train --help`: this summary, which says how to list the recipe's fields (building that list imports
            # transformers' TrainingArguments, seconds); compare and prepare answer --help with their own parsers.
            if len(argv) == 1 or (command == "train" and argv[1] in ("-h", "--help")):
                parser.parse_args([command, "--help"])
            module = importlib.import_module(DELEGATED[command][0], __package__)
            try:
                module.main(argv[1:], prog=f"mtl-hf {command}")
            except SystemExit as exit:
                if exit.code != 2:  # --help, or an exit of the command's own
                    raise
                return 2  # a user error, already reported in one line by the command
            return 0
        args, unknown = parser.parse_known_args(argv)
        parser.commands[args.command].refuse_unknown(unknown)
        return args.run(args)
    except UserError as error:
        print(f"mtl-hf{' ' + command if command else ''}: error: {one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
