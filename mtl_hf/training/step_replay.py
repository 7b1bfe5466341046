"""The step's batches, evaluated again after the optimizer step, as the step's forward saw them.

A method that learns from how the step changed the losses of the batches it was computed on
(FAMO) must compare the same function before and after: the same mode (training), the same
random draws (dropout, stochastic depth), only the parameters changed. `StepReplay` keeps each
micro-batch with the random state its forward started from, and replays them without gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


class ForwardRandomState:
    """The CPU generator's state, and the CUDA generator's for a CUDA `device` (host-side copies, no sync)."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.cuda_device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.cuda_device is not None else None

    @contextmanager
    def restored(self) -> Iterator[None]:
        """Runs the block from this random state; the generators continue afterwards as if it had not run."""
        devices = [self.cuda_device] if self.cuda_device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.cuda_device)
            yield


class StepReplay:
    """Records a step's micro-batches with their random states; `replay` runs them again."""

    def __init__(self):
        self._batches: list[tuple[dict, ForwardRandomState]] = []

    def record(self, inputs: dict, device: torch.device) -> None:
        """Call right before the micro-batch's forward pass."""
        self._batches.append((inputs, ForwardRandomState(device)))

    def replay(self, forward: Callable[[dict], object]) -> list:
        """`forward(inputs)` for each recorded micro-batch, from its recorded random state; then forgets them."""
        results = []
        with torch.no_grad():
            for inputs, state in self._batches:
                with state.restored():
                    results.append(forward(inputs))
        self._batches = []
        return results

    def forget(self) -> None:
        """Drops the recorded micro-batches (a step that was skipped)."""
        self._batches = []

    def __len__(self) -> int:
        return len(self._batches)


__all__ = ["ForwardRandomState", "StepReplay"]
