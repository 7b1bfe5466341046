"""Runs the training recipe (as recipes/train.py does) and writes what this rank ended with (run as a script).

accelerate launch ... tests/distributed/recipe_rank_report.py REPORT_DIR CONFIG.yaml [--key value ...]

After training, each rank writes REPORT_DIR/rank{global rank}.json: its place in the process group,
the mixture's rank and world size, a digest of its parameters, and the rows of its first epoch's
training batches (the mixture's plan read again, without decoding).
"""

import hashlib
import json
import os
import sys
from itertools import islice

import torch
import torch.distributed as dist

from mtl_hf.commands import train as recipe
from mtl_hf.training import trainer as trainer_module
from mtl_hf.training.trainer import MultiTaskTrainer


class ReportingTrainer(MultiTaskTrainer):
    """The recipe's trainer, observed: `train()` as usual, then this rank's report."""

    report_dir = ""

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        mixture = self.train_mixture
        mixture.set_epoch(0)
        rows = [f"{e.source}:{e.row}" for batch in islice(mixture, self.state.global_step) for e in batch.examples]
        flat = torch.cat([parameter.detach().flatten() for parameter in self.model.parameters()])
        report = {
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
            "local_rank": int(os.environ.get("LOCAL_RANK", -1)),
            "machine_rank": int(os.environ.get("GROUP_RANK", -1)),
            "mixture_rank": mixture.rank,
            "mixture_world_size": mixture.world_size,
            "global_step": self.state.global_step,
            "rows": rows,
            "parameters_sha1": hashlib.sha1(flat.numpy().tobytes()).hexdigest(),
        }
        with open(os.path.join(self.report_dir, f"rank{dist.get_rank()}.json"), "w") as file:
            json.dump(report, file)
        return output


if __name__ == "__main__":
    ReportingTrainer.report_dir = sys.argv[1]
    trainer_module.MultiTaskTrainer = ReportingTrainer  # the recipe imports it from there when it runs
    recipe.main(sys.argv[2:])
