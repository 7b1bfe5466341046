"""Property tests (hypothesis).

1. Random task specs and random label batches, with all-missing rows and all-missing tasks, through
   config validation, the collator's target check, the model's loss and every weighting method: only
   the documented errors, never NaN, never a crash.
2. Random mixtures (source sizes, strategies, batch modes, world sizes, resume points): every rank
   serves the same sources at every step, ranks read disjoint rows, and a resumed plan continues the
   uninterrupted one exactly.
"""

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.balancing import WEIGHTING_METHODS, build_weighting
from mtl_hf.balancing.step_losses import step_losses
from mtl_hf.data import TaskMixture, TaskSource
from mtl_hf.models.mtl_vit.heads_mtl_vit import MISSING_CLASS, check_target_values
from tests.conftest import tiny_vit_config

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BACKBONE = tiny_vit_config()


@st.composite
def task_specs(draw):
    count = draw(st.integers(1, 4))
    specs = []
    for index in range(count):
        kind = draw(st.sampled_from(["classification", "multilabel", "regression"]))
        spec = {"name": f"task_{index}", "type": kind}
        if kind == "regression":
            spec["num_outputs"] = draw(st.integers(1, 3))
        else:
            spec["labels"] = [f"label_{i}" for i in range(draw(st.integers(2 if kind == "classification" else 1, 5)))]
        specs.append(spec)
    return specs


@st.composite
def labelled_batch(draw):
    specs = draw(task_specs())
    rows = draw(st.integers(1, 5))
    labels = {}
    for spec in specs:
        missing = draw(st.lists(st.booleans(), min_size=rows, max_size=rows))  # all True: a task with no target
        if spec["type"] == "classification":
            values = [MISSING_CLASS if gone else draw(st.integers(0, len(spec["labels"]) - 1)) for gone in missing]
            labels[spec["name"]] = torch.tensor(values, dtype=torch.long)
        elif spec["type"] == "multilabel":
            width = len(spec["labels"])
            values = [
                [float(MISSING_CLASS)] * width
                if gone
                else draw(st.lists(st.sampled_from([0.0, 1.0, float(MISSING_CLASS)]), min_size=width, max_size=width))
                for gone in missing
            ]
            labels[spec["name"]] = torch.tensor(values, dtype=torch.float32)
        else:
            width = spec["num_outputs"]
            finite = st.floats(-50, 50, allow_nan=False, width=32)
            values = [
                [float("nan")] * width if gone else draw(st.lists(finite, min_size=width, max_size=width))
                for gone in missing
            ]
            labels[spec["name"]] = (
                torch.tensor(values, dtype=torch.float32).squeeze(-1)
                if width == 1
                else torch.tensor(values, dtype=torch.float32)
            )
    return specs, rows, labels


@SETTINGS
@given(batch=labelled_batch(), seed=st.integers(0, 2**16))
def test_random_tasks_and_labels_give_finite_losses_and_weights_for_every_method(batch, seed):
    specs, rows, labels = batch
    config = MultiTaskViTConfig(backbone_config=_BACKBONE, tasks=specs)
    for spec in config.task_specs:
        check_target_values(spec, labels[spec.name])  # the collator's check accepts every valid batch
    torch.manual_seed(seed)
    model = MultiTaskViTModel(config)
    pixel_values = torch.randn(rows, 3, _BACKBONE.image_size, _BACKBONE.image_size)
    outputs = model(pixel_values, labels=labels)
    assert torch.isfinite(outputs.loss)
    assert all(torch.isfinite(loss) for loss in outputs.task_losses.values())

    task_map = {spec.name: spec for spec in config.task_specs}
    losses = step_losses(task_map, outputs, labels, model.task_loss_denominator)
    assert torch.isfinite(losses.mean).all() and torch.isfinite(losses.local).all()
    gradients = torch.randn(len(specs), 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for name in WEIGHTING_METHODS:
        method = build_weighting(name, list(task_map))
        if method.uses_gradients:
            weights = method.host_weights(gradients @ gradients.T, losses.present)
        else:
            weights = method.task_weights(losses.mean, losses.present)
            assert torch.isfinite(method.combine(losses.local, weights, losses.present)), name
        assert torch.isfinite(weights).all(), name
        assert (weights[~losses.present] == 0).all() or not (~losses.present).any(), name  # absent tasks weigh 0


@SETTINGS
@given(labels=st.lists(st.integers(-150, 150), min_size=1, max_size=6), classes=st.integers(2, 6))
def test_the_target_check_raises_only_its_documented_error(labels, classes):
    spec = MultiTaskViTConfig(
        tasks=[{"name": "t", "type": "classification", "labels": [str(i) for i in range(classes)]}]
    ).task_specs[0]
    valid = all(value == MISSING_CLASS or 0 <= value < classes for value in labels)
    if valid:
        check_target_values(spec, torch.tensor(labels))
    else:
        with pytest.raises(ValueError, match=r"task 't': .*out of range|task 't': "):
            check_target_values(spec, torch.tensor(labels))


def id_source(name: str, rows: int) -> TaskSource:
    """A map-style source whose label is each row's own number, so batches say which rows they hold."""
    table = datasets.Dataset.from_dict(
        {"image": [np.zeros((2, 2, 3), np.uint8)] * rows, "row": [float(i) for i in range(rows)]}
    )
    return TaskSource(table, {f"{name}_row": "row"}, name=name)


@st.composite
def mixtures(draw):
    sizes = draw(st.lists(st.integers(8, 60), min_size=1, max_size=3))
    return {
        "sizes": sizes,
        "world_size": draw(st.integers(1, 4)),
        "batch_size": draw(st.integers(1, 6)),
        "strategy": draw(st.sampled_from(["proportional", "temperature", "uniform", "round_robin"])),
        "batch_mode": draw(st.sampled_from(["homogeneous", "mixed"])),
        "seed": draw(st.integers(0, 1000)),
        "steps": draw(st.integers(1, 12)),
    }


def rank_batches(setting, rank, sources, *, start=0):
    mixture = TaskMixture(
        sources,
        batch_size=setting["batch_size"],
        strategy=setting["strategy"],
        batch_mode=setting["batch_mode"],
        seed=setting["seed"],
        rank=rank,
        world_size=setting["world_size"],
        steps_per_epoch=setting["steps"],
    )
    if start:
        mixture.load_state_dict({"epoch": 0, "step": start, "seed": setting["seed"]})
    return [[(example.source, example.row) for example in batch.examples] for batch in mixture]


@settings(max_examples=40, deadline=None)
@given(setting=mixtures(), data=st.data())
def test_mixture_plans_agree_across_ranks_read_disjoint_rows_and_resume_exactly(setting, data):
    sources = [id_source(f"s{index}", size) for index, size in enumerate(setting["sizes"])]
    world = setting["world_size"]
    per_rank = [rank_batches(setting, rank, sources) for rank in range(world)]
    assert all(len(batches) == setting["steps"] for batches in per_rank)
    for step in range(setting["steps"]):  # the same sources, slot by slot, on every rank
        layouts = {tuple(source for source, _ in per_rank[rank][step]) for rank in range(world)}
        assert len(layouts) == 1, (step, layouts)
    for index, size in enumerate(setting["sizes"]):  # within a pass, each rank reads its own share
        share = size // world
        first_pass = [
            [row for batch in per_rank[rank] for source, row in batch if source == f"s{index}"][:share]
            for rank in range(world)
        ]
        seen = [row for rows in first_pass for row in rows]
        assert len(seen) == len(set(seen)), (index, first_pass)
    start = data.draw(st.integers(0, setting["steps"]))
    rank = data.draw(st.integers(0, world - 1))
    assert rank_batches(setting, rank, sources, start=start) == per_rank[rank][start:]
