"""`TaskMixture`: which source each step (or each example) comes from, on every rank alike.

The mixture is a plan, computed from the seed, the epoch and the sources' sizes alone:

- every rank computes the same sequence of draws, so in `homogeneous` mode all ranks serve the
  same task at every step and no rank waits on a head that another did not run;
- every rank reads its own disjoint share of each source (every `world_size`-th row of a seeded
  permutation, or `split_dataset_by_node` for streaming sources);
- a position is just `(epoch, step)`: resuming recomputes the plan up to that step (integer
  arithmetic, no image is decoded) and continues exactly where the run stopped.

The mixture runs in the main process and hands each step's undecoded rows to the DataLoader;
the collator decodes and transforms them in the workers (see `MultiTaskDataLoader`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..tasks import merge_task_specs
from ..utils.validation import check_choice
from .loader import MultiTaskDataLoader, default_num_workers
from .reader import SourceReader
from .sources import RawExample, TaskSource

STRATEGIES = ("proportional", "temperature", "uniform", "round_robin", "weights")
BATCH_MODES = ("homogeneous", "mixed")
WHEN_EXHAUSTED = ("recycle", "stop")


@dataclass(frozen=True)
class MixtureBatch:
    """One step's rows. `tasks` names the tasks the batch serves in homogeneous mode (else None)."""

    examples: list[RawExample]
    tasks: tuple[str, ...] | None


@dataclass(frozen=True)
class _Segment:
    """`count` rows of source `source`, from position `start` of its pass `pass_index` (this rank's share)."""

    source: int
    pass_index: int
    start: int
    count: int


class TaskMixture:
    r"""
    Mixes several task sources into a stream of training batches.

    Args:
        sources (`TaskSource` or `list[TaskSource]`):
            The sources to mix. Sources may share a task if they agree on its spec.
        batch_size (`int`):
            Rows per batch on each rank.
        strategy (`str`, *optional*, defaults to `"proportional"`):
            How often each source is drawn. `proportional`: in proportion to its rows;
            `temperature`: in proportion to rows ** (1 / temperature), which lifts small sources;
            `uniform`: equally; `round_robin`: in turn, deterministically; `weights`: as `weights` says.
        temperature (`float`, *optional*, defaults to 2.0):
            The temperature of the `temperature` strategy (1 is proportional, large is uniform).
        weights (`dict[str, float]`, *optional*):
            Relative weight of each source by name, for the `weights` strategy.
        batch_mode (`str`, *optional*, defaults to `"homogeneous"`):
            `homogeneous`: each batch comes from one source and names its tasks, so the model runs
            only those heads; `mixed`: each row of a batch is drawn on its own, and every task of
            the mixture gets targets (missing where a row's source lacks the task).
        when_exhausted (`str`, *optional*, defaults to `"recycle"`):
            What happens when a source has no rows left in its pass: `recycle` starts a new,
            reshuffled pass over it; `stop` ends the epoch when the first source, in proportion
            to its draw, runs out (as `first_exhausted` does in `datasets.interleave_datasets`).
            So that every epoch has the same number of steps (which Trainer's step count, its
            schedule and its end assume), a `stop` epoch draws each source in exact proportion,
            in an order shuffled per epoch, rather than at random (`round_robin`: in turn).
        steps_per_epoch (`int`, *optional*):
            Steps in an epoch. Defaults to one pass's worth of rows: the sum of every source's
            share on a rank divided by `batch_size` (with `stop`, until a source runs out). A
            streaming source of unknown size makes the mixture endless unless this is set.
        shuffle (`bool`, *optional*, defaults to `True`):
            Shuffle each pass over a source (a permutation for map-style sources; shard order and a
            buffer of `shuffle_buffer_size` rows for streaming ones).
        shuffle_buffer_size (`int`, *optional*, defaults to 1000):
            Rows held in a streaming source's shuffle buffer; memory stays bounded by it.
        seed (`int`, *optional*, defaults to 0):
            Seed of every draw and permutation; the same seed gives the same batches.
        rank (`int`, *optional*), world_size (`int`, *optional*):
            This process's place among the data-parallel processes. Default to torch.distributed's
            when it is initialised, else to the `RANK` and `WORLD_SIZE` environment variables, else
            0 and 1.
    """

    def __init__(
        self,
        sources: TaskSource | Sequence[TaskSource],
        *,
        batch_size: int,
        strategy: str = "proportional",
        temperature: float = 2.0,
        weights: Mapping[str, float] | None = None,
        batch_mode: str = "homogeneous",
        when_exhausted: str = "recycle",
        steps_per_epoch: int | None = None,
        shuffle: bool = True,
        shuffle_buffer_size: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.sources = _checked_sources(sources)
        check_choice("strategy", strategy, STRATEGIES)
        check_choice("batch_mode", batch_mode, BATCH_MODES)
        check_choice("when_exhausted", when_exhausted, WHEN_EXHAUSTED)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
        if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int) or steps_per_epoch < 1):
            raise UserError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}")

        self.batch_size = batch_size
        self.strategy = strategy
        self.batch_mode = batch_mode
        self.when_exhausted = when_exhausted
        self.shuffle = shuffle
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.rank, self.world_size = _distributed_place(rank, world_size)
        self.task_specs = merge_task_specs((source.name, source.task_specs) for source in self.sources)
        self.probabilities = self._probabilities(temperature, weights)
        self._shares = self._rank_shares()
        if steps_per_epoch is None and when_exhausted == "recycle" and None not in self._shares:
            steps_per_epoch = max(1, sum(self._shares) // batch_size)
        self._stop_draws = None  # with `stop`: rows (mixed) or batches (homogeneous) of each source per epoch
        if when_exhausted == "stop" and strategy != "round_robin":
            steps_per_epoch, self._stop_draws = self._proportional_epoch(steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch

        self._epoch = 0
        self._start_step = 0

    def _rank_shares(self) -> list[int | None]:
        """This rank's share of each source per pass (None: a stream of unknown size): equal on every rank, so
        that every rank reaches the end of a pass (and of an epoch) at the same step."""
        shares = [None if s.num_rows is None else s.num_rows // self.world_size for s in self.sources]
        for source, share in zip(self.sources, shares, strict=True):
            if share == 0:
                raise UserError(
                    f"source {source.name!r} has {source.num_rows} rows, fewer than the {self.world_size} ranks"
                )
            if self.when_exhausted == "stop" and self.batch_mode == "homogeneous" and share is not None:
                if share < self.batch_size:
                    raise UserError(
                        f"source {source.name!r} has {share} rows per rank, fewer than batch_size={self.batch_size}: "
                        "with when_exhausted='stop' the epoch would end at once; recycle, or use a smaller batch"
                    )
        if self.when_exhausted == "stop" and None in shares:
            unknown = self.sources[shares.index(None)].name
            raise UserError(f"when_exhausted='stop' needs every source's size; give source {unknown!r} its num_rows=")
        return shares

    def _proportional_epoch(self, most_steps: int | None) -> tuple[int, list[int]]:
        """(steps, draws): the longest epoch (at most `most_steps`) in which every source, drawn in exact proportion
        to its probability, fits in its share; draws are each source's batches (homogeneous) or rows (mixed)."""
        per_draw = self.batch_size if self.batch_mode == "homogeneous" else 1
        draws_per_step = 1 if self.batch_mode == "homogeneous" else self.batch_size
        capacity = [share // per_draw for share in self._shares]
        probabilities = list(self.probabilities.values())
        steps = min(int(c / p / draws_per_step) for c, p in zip(capacity, probabilities, strict=True) if p > 0)
        steps = min(steps, most_steps) if most_steps is not None else steps
        while steps > 0:
            draws = _largest_remainder(steps * draws_per_step, probabilities, capacity)
            if draws is not None:
                return steps, draws
            steps -= 1
        raise UserError(
            "with when_exhausted='stop' the epoch would end at once: a source has too few rows per rank for one "
            "batch in proportion to its draw; recycle, or use a smaller batch"
        )

    # -- what the mixture is -----------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        return [spec.name for spec in self.task_specs]

    def _probabilities(self, temperature: float, weights: Mapping[str, float] | None) -> dict[str, float]:
        names = [source.name for source in self.sources]
        if weights is not None and self.strategy != "weights":
            raise UserError(f"weights are given but strategy={self.strategy!r}; use strategy='weights'")
        if self.strategy in ("uniform", "round_robin"):
            raw = [1.0] * len(names)
        elif self.strategy == "weights":
            if weights is None:
                raise UserError("strategy='weights' needs weights={source_name: weight, ...}")
            unknown, absent = sorted(set(weights) - set(names)), sorted(set(names) - set(weights))
            if unknown or absent:
                raise UserError(f"weights must name every source exactly: unknown {unknown}, absent {absent}")
            raw = [float(weights[name]) for name in names]
            if any(not np.isfinite(w) or w < 0 for w in raw) or sum(raw) <= 0:
                raise UserError(f"weights must be finite, >= 0 and not all 0, got {dict(weights)}")
        else:
            unknown_size = [s.name for s in self.sources if s.num_rows is None]
            if unknown_size:
                raise UserError(
                    f"strategy={self.strategy!r} draws by size, but source {unknown_size[0]!r} is a stream of "
                    "unknown size: give it num_rows=, or use strategy 'uniform', 'round_robin' or 'weights'"
                )
            if self.strategy == "temperature" and not (isinstance(temperature, (int, float)) and temperature > 0):
                raise UserError(f"temperature must be a positive number, got {temperature!r}")
            exponent = 1.0 if self.strategy == "proportional" else 1.0 / temperature
            raw = [float(s.num_rows) ** exponent for s in self.sources]
        total = sum(raw)
        return {name: value / total for name, value in zip(names, raw, strict=True)}

    # -- position ----------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Starts `epoch` from its first step (Trainer calls this at every epoch)."""
        self._epoch = epoch
        self._start_step = 0

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        """The position to resume from: the current epoch and `step` (batches consumed in it)."""
        return {"epoch": self._epoch, "step": self._start_step if step is None else step, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise UserError(
                f"this state was saved with seed {state['seed']}, but the mixture has seed {self.seed}: "
                f"resuming would replay a different sequence; resume with seed {state['seed']}, or start a fresh run"
            )
        self._epoch = int(state["epoch"])
        self._start_step = int(state["step"])

    def __len__(self) -> int:
        if self.when_exhausted == "stop" and self._stop_draws is None:  # round robin: the same every epoch
            return sum(1 for _ in self._schedule(self._epoch))
        if self.steps_per_epoch is None:
            raise TypeError("this mixture is endless (a stream of unknown size): set steps_per_epoch or max_steps")
        return self.steps_per_epoch

    # -- the plan ----------------------------------------------------------------------------

    def _schedule(self, epoch: int) -> Iterator[list[_Segment]]:
        """Each step's segments (which rows of which source it reads); a pure function of (seed, epoch, sizes),
        the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        if self._stop_draws is not None:
            yield from self._proportional_schedule(rng)
            return
        probabilities = np.array(list(self.probabilities.values()))
        num_sources = len(self.sources)
        passes = [0] * num_sources
        offsets = [0] * num_sources
        step = 0
        while self.steps_per_epoch is None or step < self.steps_per_epoch:
            if self.batch_mode == "homogeneous":
                source = (
                    step % num_sources if self.strategy == "round_robin" else rng.choice(num_sources, p=probabilities)
                )
                counts = {int(source): self.batch_size}
            elif self.strategy == "round_robin":
                first = step * self.batch_size
                drawn = [(first + j) % num_sources for j in range(self.batch_size)]
                counts = {s: drawn.count(s) for s in range(num_sources) if s in drawn}
            else:
                drawn = rng.multinomial(self.batch_size, probabilities)
                counts = {s: int(n) for s, n in enumerate(drawn) if n}

            segments = []
            for source, count in counts.items():
                share = self._shares[source]
                while count:
                    left = count if share is None else share - offsets[source]
                    if left == 0:
                        if self.when_exhausted == "stop":
                            return
                        passes[source] += 1
                        offsets[source] = 0
                        continue
                    if self.when_exhausted == "stop" and left < count:
                        return
                    take = min(count, left)
                    segments.append(_Segment(source, passes[source], offsets[source], take))
                    offsets[source] += take
                    count -= take
            yield segments
            step += 1

    def _proportional_schedule(self, rng: np.random.Generator) -> Iterator[list[_Segment]]:
        """A `stop` epoch: each source's draws (`_proportional_epoch`) in a shuffled order, `steps_per_epoch` steps."""
        order = rng.permutation(np.repeat(np.arange(len(self.sources)), self._stop_draws))
        per_step = 1 if self.batch_mode == "homogeneous" else self.batch_size
        offsets = [0] * len(self.sources)
        for step in range(self.steps_per_epoch):
            drawn = order[step * per_step : (step + 1) * per_step]
            counts = {int(s): int(n) * (self.batch_size if per_step == 1 else 1) for s, n in Counter(drawn).items()}
            segments = []
            for source, count in sorted(counts.items()):
                segments.append(_Segment(source, 0, offsets[source], count))
                offsets[source] += count
            yield segments

    # -- reading -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[MixtureBatch]:
        epoch, start = self._epoch, self._start_step
        readers = [SourceReader(self, index, epoch) for index in range(len(self.sources))]
        for step, segments in enumerate(self._schedule(epoch)):
            if step < start:
                continue
            examples = [example for segment in segments for example in readers[segment.source].read(segment)]
            tasks = tuple(self.sources[segments[0].source].task_names) if self.batch_mode == "homogeneous" else None
            yield MixtureBatch(examples=examples, tasks=tasks)

    def dataloader(self, collator, *, num_workers: int | None = None, **kwargs) -> MultiTaskDataLoader:
        """
        A DataLoader over this mixture that decodes with `collator`, in `num_workers` worker
        processes (default: `default_num_workers()`). Other keyword arguments go to the DataLoader.
        """
        num_workers = default_num_workers() if num_workers is None else num_workers
        return MultiTaskDataLoader(self, collator, num_workers=num_workers, **kwargs)

    def __repr__(self) -> str:
        mix = ", ".join(f"{name}: {p:.3f}" for name, p in self.probabilities.items())
        return (
            f"TaskMixture({self.strategy}, {self.batch_mode}, batch_size={self.batch_size}, "
            f"rank {self.rank}/{self.world_size}, steps_per_epoch={self.steps_per_epoch}, {{{mix}}})"
        )


def _largest_remainder(total: int, probabilities: Sequence[float], capacity: Sequence[int]) -> list[int] | None:
    """`total` draws split in proportion to `probabilities` (largest remainders first), none over its `capacity`;
    None where they do not fit."""
    exact = [total * p for p in probabilities]
    draws = [min(int(x), c) for x, c in zip(exact, capacity, strict=True)]
    for index in sorted(range(len(exact)), key=lambda i: exact[i] - int(exact[i]), reverse=True):
        if sum(draws) == total:
            break
        if draws[index] < capacity[index] and probabilities[index] > 0:
            draws[index] += 1
    return draws if sum(draws) == total else None


def _checked_sources(sources: TaskSource | Sequence[TaskSource]) -> list[TaskSource]:
    sources = [sources] if isinstance(sources, TaskSource) else list(sources)
    if not sources:
        raise UserError("a TaskMixture needs at least one TaskSource")
    for source in sources:
        if not isinstance(source, TaskSource):
            raise UserError(f"sources must be TaskSource objects, got {type(source).__name__}")
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"several sources are named {duplicates}; give each a distinct name=")
    return sources


def _distributed_place(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            default_rank, default_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            default_rank, default_world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = default_rank if rank is None else rank
        world_size = default_world if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
        raise UserError(
            f"rank must be in [0, world_size) and world_size >= 1, got rank={rank}, world_size={world_size}"
        )
    return rank, world_size


__all__ = ["BATCH_MODES", "STRATEGIES", "WHEN_EXHAUSTED", "MixtureBatch", "TaskMixture"]
