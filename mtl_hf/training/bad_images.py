"""Counting the product photos that could not be decoded under `bad_image_policy: skip`.

The collator leaves such rows out of a batch and says how many per source (`image_counts`); this
tally adds them up, sums them over the ranks at each logging step (every rank logs at the same
steps, so the collective lines up), logs them as `bad_images_<source>`, and stops the run when a
source's share of bad images passes `max_bad_image_fraction`: past that, the data is broken, not
merely dirty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from ..utils import host
from ..utils.distributed import all_reduce_sum, is_distributed


class BadImageTally:
    """Rows served and images skipped, per source, for the sources in `source_names` (the same on every rank)."""

    def __init__(self, source_names: Sequence[str], max_fraction: float, device: torch.device | str = "cpu"):
        self.source_names, self.max_fraction, self.device = list(source_names), max_fraction, device
        self.served: Counter = Counter()
        self.skipped: Counter = Counter()

    def add(self, counts: Mapping[str, Mapping[str, int]] | None) -> None:
        """Adds a batch's `image_counts` (none when no source skips)."""
        if counts:
            self.served.update(counts["served"])
            self.skipped.update(counts["skipped"])

    def totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """(served, skipped) per source, over all the ranks."""
        local = [[self.served[name], self.skipped[name]] for name in self.source_names]
        if is_distributed():
            summed = host.to_host(all_reduce_sum(torch.tensor(local, dtype=torch.long, device=self.device)))
            local = summed.tolist()
        served = {name: int(row[0]) for name, row in zip(self.source_names, local, strict=True)}
        skipped = {name: int(row[1]) for name, row in zip(self.source_names, local, strict=True)}
        return served, skipped

    def check(self) -> dict[str, int]:
        """`bad_images_<source>` for the logs; raises when a source's share passes `max_fraction`."""
        served, skipped = self.totals()
        for name in self.source_names:
            if served[name] and skipped[name] / served[name] > self.max_fraction:
                raise ValueError(
                    f"source {name!r}: {skipped[name]} of {served[name]} images ({skipped[name] / served[name]:.1%}) "
                    f"could not be decoded, more than max_bad_image_fraction {self.max_fraction:g}; the data looks "
                    "broken rather than dirty: check it (bad_image_policy: raise names each file), or raise "
                    "max_bad_image_fraction"
                )
        return {f"bad_images_{name}": skipped[name] for name in self.source_names}


__all__ = ["BadImageTally"]
