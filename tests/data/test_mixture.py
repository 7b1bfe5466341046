from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskMixture
from tests.data.helpers import served_uids, uid_source

SIZES = {"small": 100, "medium": 400, "large": 1500}
STEPS = 3000


def sources():
    offsets = np.cumsum([0, *SIZES.values()])[:-1]
    return [
        uid_source(name, size, offset=int(offset)) for (name, size), offset in zip(SIZES.items(), offsets, strict=True)
    ]


def batch_source_counts(mixture, steps=STEPS) -> Counter:
    return Counter(batch.examples[0].source for batch in islice(iter(mixture), steps))


def example_source_counts(mixture, steps) -> Counter:
    return Counter(example.source for batch in islice(iter(mixture), steps) for example in batch.examples)


def expected(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    return {name: value / total for name, value in raw.items()}


@pytest.mark.parametrize(
    ("strategy", "options", "probabilities"),
    [
        ("proportional", {}, expected(SIZES)),
        ("temperature", {"temperature": 2.0}, expected({k: v**0.5 for k, v in SIZES.items()})),
        ("temperature", {"temperature": 4.0}, expected({k: v**0.25 for k, v in SIZES.items()})),
        ("uniform", {}, expected({k: 1 for k in SIZES})),
        ("weights", {"weights": {"small": 1, "medium": 1, "large": 2}}, {"small": 0.25, "medium": 0.25, "large": 0.5}),
    ],
)
def test_task_frequencies_follow_the_strategy(strategy, options, probabilities):
    mixture = TaskMixture(sources(), batch_size=2, strategy=strategy, steps_per_epoch=STEPS, seed=3, **options)
    assert mixture.probabilities == pytest.approx(probabilities)
    counts = batch_source_counts(mixture)
    for name, p in probabilities.items():
        tolerance = 4 * (p * (1 - p) / STEPS) ** 0.5  # four binomial standard deviations
        assert abs(counts[name] / STEPS - p) < tolerance, (name, counts[name] / STEPS, p)


def test_mixed_batches_mix_examples_in_proportion():
    mixture = TaskMixture(sources(), batch_size=16, batch_mode="mixed", steps_per_epoch=500, seed=1)
    counts = example_source_counts(mixture, 500)
    total = sum(counts.values())
    assert total == 500 * 16
    for name, p in expected(SIZES).items():
        assert abs(counts[name] / total - p) < 4 * (p * (1 - p) / total) ** 0.5


def test_round_robin_cycles_the_sources_in_order():
    mixture = TaskMixture(sources(), batch_size=4, strategy="round_robin", steps_per_epoch=9)
    assert [batch.tasks[0].split("_")[0] for batch in mixture] == ["small", "medium", "large"] * 3
    mixed = TaskMixture(sources(), batch_size=4, strategy="round_robin", batch_mode="mixed", steps_per_epoch=2)
    # Examples 0..7 go small, medium, large, small | medium, large, small, medium.
    assert [Counter(e.source for e in batch.examples) for batch in mixed] == [
        Counter(small=2, medium=1, large=1),
        Counter(small=1, medium=2, large=1),
    ]


def test_homogeneous_batches_come_from_one_source_and_name_its_tasks():
    mixture = TaskMixture(sources(), batch_size=8, steps_per_epoch=50, seed=0)
    for batch in mixture:
        source = batch.examples[0].source
        assert {e.source for e in batch.examples} == {source}
        assert batch.tasks == (f"{source}_kind", f"{source}_uid")
        assert len(batch.examples) == 8


def test_same_seed_same_sequence_other_seed_other_sequence():
    def sequence(seed):
        return [served_uids(b) for b in TaskMixture(sources(), batch_size=4, steps_per_epoch=100, seed=seed)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)


def test_an_epoch_is_one_pass_worth_of_rows_and_epochs_differ():
    mixture = TaskMixture(sources(), batch_size=10, seed=0)
    assert len(mixture) == sum(SIZES.values()) // 10
    first = [served_uids(b) for b in mixture]
    mixture.set_epoch(1)
    second = [served_uids(b) for b in mixture]
    assert len(first) == len(second) == len(mixture)
    assert first != second


@pytest.mark.parametrize("batch_mode", ["homogeneous", "mixed"])
@pytest.mark.parametrize("strategy", ["proportional", "uniform"])
def test_stop_ends_every_epoch_at_the_same_step_when_a_source_runs_out(batch_mode, strategy):
    """`stop`: each epoch draws the sources in exact proportion, in an order shuffled per epoch, until the first
    (in proportion) runs out; every epoch has `len(mixture)` steps, which Trainer's step count assumes."""
    mixture = TaskMixture(sources(), batch_size=10, batch_mode=batch_mode, strategy=strategy, when_exhausted="stop")
    steps, orders = len(mixture), []
    for epoch in range(4):
        mixture.set_epoch(epoch)
        assert len(mixture) == steps
        batches = list(mixture)
        assert len(batches) == steps and all(len(batch.examples) == 10 for batch in batches)
        uids = [uid for batch in batches for uid in served_uids(batch)]
        assert len(uids) == len(set(uids)), "no row twice in an epoch without recycling"
        used = Counter("small" if u < 100 else "medium" if u < 500 else "large" for u in uids)
        for name, p in mixture.probabilities.items():
            assert abs(used[name] - p * len(uids)) <= 10, (name, used[name], p * len(uids))  # within one batch
        # It stopped because the most drawn source (for its size) could not fill another step in proportion.
        limiting = min(SIZES, key=lambda name: SIZES[name] / mixture.probabilities[name])
        assert SIZES[limiting] - used[limiting] < 10 / mixture.probabilities[limiting] + 10
        orders.append([served_uids(batch)[0] for batch in batches])
    assert len({tuple(order) for order in orders}) == 4  # a new order every epoch


def test_recycle_reshuffles_a_source_that_runs_out():
    mixture = TaskMixture([uid_source("tiny", 12)], batch_size=5, steps_per_epoch=6, seed=0)
    uids = [uid for batch in mixture for uid in served_uids(batch)]
    passes = [uids[:12], uids[12:24]]
    assert all(sorted(p) == list(map(float, range(12))) for p in passes)
    assert passes[0] != passes[1]


@pytest.mark.parametrize("batch_mode", ["homogeneous", "mixed"])
def test_two_ranks_draw_the_same_tasks_from_disjoint_rows(batch_mode):
    def run(rank):
        mixture = TaskMixture(
            sources(), batch_size=6, batch_mode=batch_mode, when_exhausted="stop", seed=5, rank=rank, world_size=2
        )
        return list(mixture)

    rank0, rank1 = run(0), run(1)
    assert len(rank0) == len(rank1) > 10
    if batch_mode == "homogeneous":
        assert [b.tasks for b in rank0] == [b.tasks for b in rank1]
    else:
        sources_per_step = [[Counter(e.source for e in b.examples) for b in run_] for run_ in (rank0, rank1)]
        assert sources_per_step[0] == sources_per_step[1]
    uids0 = {u for b in rank0 for u in served_uids(b)}
    uids1 = {u for b in rank1 for u in served_uids(b)}
    assert uids0.isdisjoint(uids1)
    assert len(uids0) == len(uids1) == sum(len(served_uids(b)) for b in rank0)


def test_rank_defaults_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    mixture = TaskMixture(sources(), batch_size=2)
    assert (mixture.rank, mixture.world_size) == (1, 4)


def collator_for(mixture):
    return MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(8, 8)))


def assert_same_batches(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys() and a.get("tasks") == b.get("tasks")
        assert a["pixel_values"].equal(b["pixel_values"])
        assert a["labels"].keys() == b["labels"].keys()
        for name in a["labels"]:
            torch.testing.assert_close(a["labels"][name], b["labels"][name], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("batch_mode", ["homogeneous", "mixed"])
def test_resume_continues_exactly_where_the_run_stopped(batch_mode):
    def make():
        mixture = TaskMixture(sources(), batch_size=8, batch_mode=batch_mode, steps_per_epoch=40, seed=11)
        return mixture.dataloader(collator_for(mixture))

    uninterrupted = list(make())
    loader = make()
    first_part = list(islice(iter(loader), 17))
    state = loader.state_dict()
    assert state == {"epoch": 0, "step": 17, "seed": 11}

    resumed = make()
    resumed.load_state_dict(state)
    assert len(resumed) == 40
    assert_same_batches(first_part + list(resumed), uninterrupted)


def test_a_finished_epoch_resumes_at_the_next_one():
    mixture = TaskMixture(sources(), batch_size=8, steps_per_epoch=5, seed=2)
    loader = mixture.dataloader(collator_for(mixture))
    list(loader)
    assert loader.state_dict() == {"epoch": 1, "step": 0, "seed": 2}
    epoch_1 = list(loader)
    other = TaskMixture(sources(), batch_size=8, steps_per_epoch=5, seed=2)
    other.set_epoch(1)
    assert_same_batches(epoch_1, list(other.dataloader(collator_for(other))))


def test_resume_with_another_seed_is_refused():
    mixture = TaskMixture(sources(), batch_size=8, seed=2)
    with pytest.raises(ValueError, match="saved with seed 3"):
        mixture.load_state_dict({"epoch": 0, "step": 4, "seed": 3})


def test_workers_deliver_the_same_batches_in_order():
    def make():
        return TaskMixture(sources(), batch_size=8, batch_mode="mixed", steps_per_epoch=12, seed=4)

    in_process = list(make().dataloader(collator_for(make())))
    mixture = make()
    with_workers = list(mixture.dataloader(collator_for(mixture), num_workers=2))
    assert_same_batches(with_workers, in_process)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "greedy"}, "unknown strategy 'greedy'; use one of proportional, temperature"),
        ({"batch_mode": "by_task"}, "unknown batch_mode 'by_task'"),
        ({"when_exhausted": "wait"}, "unknown when_exhausted 'wait'"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"strategy": "weights"}, "strategy='weights' needs weights"),
        ({"weights": {"small": 1.0}}, "weights are given but strategy='proportional'"),
        ({"strategy": "weights", "weights": {"small": 1, "medium": 1}}, r"absent \['large'\]"),
        ({"strategy": "weights", "weights": {"small": -1, "medium": 1, "large": 1}}, "must be finite, >= 0"),
        ({"strategy": "temperature", "temperature": 0}, "temperature must be a positive number"),
        ({"batch_size": 200, "when_exhausted": "stop"}, "source 'small' has 100 rows per rank, fewer than batch_size"),
        ({"rank": 2, "world_size": 2}, r"rank must be in \[0, world_size\)"),
    ],
)
def test_bad_mixture_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        TaskMixture(sources(), **{"batch_size": 4, **options})


def test_sources_must_be_distinctly_named_and_agree_on_shared_tasks():
    with pytest.raises(ValueError, match=r"several sources are named \['small'\]"):
        TaskMixture([uid_source("small", 10), uid_source("small", 10)], batch_size=2)
    with pytest.raises(ValueError, match="a TaskMixture needs at least one TaskSource"):
        TaskMixture([], batch_size=2)


def test_dataloader_settings_belong_to_the_mixture():
    mixture = TaskMixture(sources(), batch_size=4)
    with pytest.raises(ValueError, match="batch_size is the TaskMixture's to decide"):
        mixture.dataloader(collator_for(mixture), batch_size=8)
