"""Per-task loss options (TaskSpec: label_smoothing, class_weights, pos_weight, loss, huber_delta), checked
against losses computed by hand, with missing targets; the trainer's part: counting labels for `balanced`
weights, `label_smoothing_factor`, and resuming with the run's own settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel, TaskSpec
from mtl_hf.balancing.step_losses import step_losses
from mtl_hf.data import TaskSource, load_shop_dataset
from mtl_hf.errors import UserError
from mtl_hf.models.mtl_vit.heads_mtl_vit import task_loss
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments, shop_source

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.0, 0.0, 4.0], [1.0, 1.0, 1.0]])
CLASSES = torch.tensor([0, 2, -100, 2, 1])  # row 2 has no label


def classification(**options) -> TaskSpec:
    return TaskSpec(name="category", type="classification", labels=["shirt", "shoe", "bag"], **options)


def model_loss(spec: TaskSpec, logits, target) -> torch.Tensor:
    """The task's loss as the model computes it (the head supplies the weights)."""
    config = MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=[spec])
    model = MultiTaskViTModel(config)
    head = model.heads[spec.name]
    return task_loss(model.config.get_task(spec.name), logits, target, weights=head.loss_weight_tensor(logits.device))


def test_label_smoothing_mixes_the_target_with_the_uniform_distribution():
    s = 0.2
    log_p = LOGITS.log_softmax(-1)
    rows = [0, 1, 3, 4]
    by_hand = sum((1 - s) * -log_p[r, CLASSES[r]] + s * -log_p[r].mean() for r in rows) / len(
        rows
    )  # smoothed target: (1 - s) on the class, s / C on each class
    loss = model_loss(classification(label_smoothing=s), LOGITS, CLASSES)
    torch.testing.assert_close(loss, by_hand)
    plain = sum(-log_p[r, CLASSES[r]] for r in rows) / len(rows)
    torch.testing.assert_close(model_loss(classification(label_smoothing=0.0), LOGITS, CLASSES), plain)


def test_class_weights_give_the_weighted_mean_over_labelled_rows():
    weights = [1.0, 3.0, 0.5]
    log_p = LOGITS.log_softmax(-1)
    rows = [0, 1, 3, 4]
    numerator = sum(weights[CLASSES[r]] * -log_p[r, CLASSES[r]] for r in rows)
    by_hand = numerator / sum(weights[CLASSES[r]] for r in rows)
    torch.testing.assert_close(model_loss(classification(class_weights=weights), LOGITS, CLASSES), by_hand)
    # with smoothing too: torch's own definition over the labelled rows
    present = CLASSES != -100
    reference = F.cross_entropy(LOGITS[present], CLASSES[present], weight=torch.tensor(weights), label_smoothing=0.1)
    loss = model_loss(classification(class_weights=weights, label_smoothing=0.1), LOGITS, CLASSES)
    torch.testing.assert_close(loss, reference)


def test_balanced_class_weights_follow_the_label_counts():
    counts = {"counts": [60, 30, 10], "rows": 100}
    spec = classification(class_weights="balanced", label_counts=counts)
    expected = [100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10)]
    explicit = model_loss(classification(class_weights=expected), LOGITS, CLASSES)
    torch.testing.assert_close(model_loss(spec, LOGITS, CLASSES), explicit)
    config = MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=[spec])
    assert MultiTaskViTModel(config).heads["category"].loss_weights == pytest.approx(expected)


def test_pos_weight_weighs_the_positive_term_of_each_label():
    logits = torch.tensor([[1.0, -2.0], [0.5, 0.5], [-1.0, 2.0]])
    target = torch.tensor([[1.0, 0.0], [-100.0, -100.0], [0.0, 1.0]])  # row 1 unlabelled
    pos_weight = [3.0, 0.5]
    spec = TaskSpec(name="tags", type="multilabel", labels=["sale", "new"], pos_weight=pos_weight)
    terms = []
    for r in (0, 2):
        for label in (0, 1):
            x, y = logits[r, label], target[r, label]
            terms.append(-(pos_weight[label] * y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)))
    torch.testing.assert_close(model_loss(spec, logits, target), torch.stack(terms).mean())
    # one number for every label; balanced from counts: negatives per positive
    same = TaskSpec(name="tags", type="multilabel", labels=["sale", "new"], pos_weight=2.0)
    assert same.pos_weight == [2.0, 2.0]
    balanced = TaskSpec(
        name="tags",
        type="multilabel",
        labels=["sale", "new"],
        pos_weight="balanced",
        label_counts={"counts": [10, 40], "rows": 50},
    )
    explicit = TaskSpec(name="tags", type="multilabel", labels=["sale", "new"], pos_weight=[4.0, 0.25])
    torch.testing.assert_close(model_loss(balanced, logits, target), model_loss(explicit, logits, target))


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
def test_regression_losses_over_present_targets(loss):
    outputs = torch.tensor([[0.0], [2.0], [5.0], [1.0]])
    target = torch.tensor([[0.5], [float("nan")], [1.0], [1.0]])
    errors = [0.5, 4.0, 0.0]  # |output - target| over the present rows
    delta = 1.5
    by_hand = {
        "mse": sum(e**2 for e in errors) / 3,
        "l1": sum(errors) / 3,
        "huber": sum(0.5 * e**2 if e <= delta else delta * (e - 0.5 * delta) for e in errors) / 3,
    }[loss]
    spec = TaskSpec(
        name="size",
        type="regression",
        target_scaling="none",
        loss=loss,
        huber_delta=delta if loss == "huber" else None,
    )
    torch.testing.assert_close(model_loss(spec, outputs, target), torch.tensor(by_hand))


def test_huber_on_standardised_targets_counts_delta_in_standard_deviations():
    statistics = {"mean": [10.0], "std": [4.0], "count": 50}
    spec = TaskSpec(name="price", type="regression", loss="huber", target_statistics=statistics)
    assert spec.huber_delta == 1.0
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=[spec]))
    outputs = torch.tensor([[0.0], [1.0]])  # the head's standardised outputs
    target = torch.tensor([[10.0], [22.0]])  # in dollars: 0 and 3 standard deviations away
    loss = model._task_loss("price", outputs, target)
    torch.testing.assert_close(loss, torch.tensor((0.0 + (2.0 - 0.5)) / 2))


def test_a_batch_without_targets_gives_zero_with_every_option():
    none = torch.full((5,), -100)
    for spec in (classification(class_weights=[1.0, 2.0, 3.0], label_smoothing=0.1), classification()):
        loss = model_loss(spec, LOGITS.requires_grad_(), none)
        assert loss.item() == 0.0 and not torch.isnan(loss)


def test_every_weighting_method_sees_the_options_losses():
    """The balancing methods read the model's task losses (step_losses), which carry the options."""
    source = TaskSource(
        load_shop_dataset(12, missing_rate=0.3, seed=1),
        {
            "category": {"column": "category", "class_weights": [1.0, 2.0, 3.0, 0.5, 1.0], "label_smoothing": 0.1},
            "size": {"column": "size", "loss": "l1"},
        },
    )
    config = MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs)
    model = MultiTaskViTModel(config).eval()
    rows = source.rows(range(12))
    pixels = torch.randn(12, 3, 32, 32)
    labels = {
        "category": torch.tensor([row.labels["category"] for row in rows]),
        "size": torch.tensor([row.labels["size"] for row in rows]),
    }
    outputs = model(pixels, labels=labels)
    losses = step_losses(
        {spec.name: spec for spec in model.config.task_specs}, outputs, labels, model.task_loss_denominator
    )
    present = labels["category"] != -100
    category = F.cross_entropy(
        outputs.logits["category"][present],
        labels["category"][present],
        weight=torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0]),
        label_smoothing=0.1,
    )
    head = model.heads["size"]
    size_present = ~torch.isnan(labels["size"])
    scaled = head.standardized(labels["size"])
    standardised_outputs = (outputs.logits["size"] - torch.tensor(head.target_statistics["mean"])) / torch.tensor(
        head.target_statistics["std"]
    )
    size = (standardised_outputs - torch.nan_to_num(scaled))[size_present].abs().mean()
    torch.testing.assert_close(losses.mean, torch.stack([category, size]).detach())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"type": "classification", "labels": ["a", "b"], "class_weights": [1.0]}, "has 1 values but the task has 2"),
        ({"type": "regression", "class_weights": [1.0]}, "class_weights applies to classification tasks only"),
        ({"type": "classification", "labels": ["a", "b"], "pos_weight": 2.0}, "pos_weight applies to multilabel"),
        ({"type": "multilabel", "labels": ["a"], "label_smoothing": 0.1}, "label_smoothing applies to classification"),
        ({"type": "classification", "labels": ["a", "b"], "label_smoothing": 1.0}, "label_smoothing must be"),
        ({"type": "classification", "labels": ["a", "b"], "class_weights": [0, 0]}, "not all 0"),
        ({"type": "classification", "labels": ["a", "b"], "class_weights": "balance"}, "or 'balanced'"),
        ({"type": "regression", "loss": "hinge"}, "unknown loss 'hinge'; use one of mse, l1, huber"),
        ({"type": "regression", "huber_delta": 2.0}, "huber_delta applies to loss 'huber' only"),
        ({"type": "regression", "loss": "huber", "huber_delta": 0}, "huber_delta must be a finite number > 0"),
        (
            {
                "type": "classification",
                "labels": ["a", "b"],
                "class_weights": "balanced",
                "label_counts": {"counts": [5, 0], "rows": 5},
            },
            "label(s) ['b'] never occur in the 5 labelled training rows",
        ),
        (
            {
                "type": "multilabel",
                "labels": ["a"],
                "pos_weight": "balanced",
                "label_counts": {"counts": [4], "rows": 4},
            },
            "are on in every one of the 4 labelled training rows",
        ),
        (
            {"type": "classification", "labels": ["a", "b"], "label_counts": {"counts": [1], "rows": 1}},
            "label_counts must be",
        ),
    ],
)
def test_bad_loss_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=None) as error:
        TaskSpec(name="task", **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_balanced_weights_without_counts_refuse_to_run_unweighted():
    spec = classification(class_weights="balanced")
    with pytest.raises(ValueError, match="'balanced' weights need the training data's label counts"):
        model_loss(spec, LOGITS, CLASSES)


def balanced_shop_model(**options):
    source = shop_source(rows=48)
    specs = []
    for spec in source.task_specs:
        fields = spec.to_dict()
        if spec.name == "category":
            fields["class_weights"] = "balanced"
        if spec.name == "tags":
            fields["pos_weight"] = "balanced"
        specs.append({**fields, **options.get(spec.name, {})})
    torch.manual_seed(0)
    return source, MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=specs))


def test_trainer_counts_the_training_labels_for_balanced_weights_and_saves_them(tmp_path):
    source, model = balanced_shop_model()
    trainer = MultiTaskTrainer(model=model, args=arguments(tmp_path, max_steps=2), train_dataset=source)
    rows = source.rows(range(source.num_rows))
    category = [row.labels["category"] for row in rows if row.labels["category"] != -100]
    expected = [category.count(c) for c in range(5)]
    saved = model.config.get_task("category")
    assert saved.label_counts == {"counts": expected, "rows": len(category)}
    assert model.heads["category"].loss_weights == pytest.approx([len(category) / (5 * n) for n in expected])
    tags = [row.labels["tags"] for row in rows if row.labels["tags"][0] != -100]
    tag_counts = model.config.get_task("tags").label_counts
    assert tag_counts == {"counts": [int(sum(t[i] for t in tags)) for i in range(len(tags[0]))], "rows": len(tags)}
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))
    written = {task["name"]: task for task in json.loads((tmp_path / "model" / "config.json").read_text())["tasks"]}
    assert written["category"]["class_weights"] == "balanced"
    assert written["category"]["label_counts"] == {"counts": expected, "rows": len(category)}
    reloaded = MultiTaskViTModel.from_pretrained(tmp_path / "model")
    assert reloaded.heads["category"].loss_weights == pytest.approx(model.heads["category"].loss_weights)


def test_a_class_absent_from_the_training_rows_stops_balanced_weights_in_one_line(tmp_path):
    data = load_shop_dataset(40, missing_rate=0.0, seed=0)
    data = data.filter(lambda row: row["category"] != 4)
    source = TaskSource(data, {"category": {"column": "category", "class_weights": "balanced"}})
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    with pytest.raises(UserError, match=r"never occur in the \d+ labelled training rows") as error:
        MultiTaskTrainer(model=model, args=arguments(tmp_path), train_dataset=source)
    assert "\n" not in str(error.value)


def test_label_smoothing_factor_applies_to_classification_tasks_without_their_own(tmp_path):
    source = shop_source(rows=32)
    specs = [
        {**spec.to_dict(), **({"label_smoothing": 0.0} if spec.name == "colour" else {})} for spec in source.task_specs
    ]
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=specs))
    MultiTaskTrainer(model=model, args=arguments(tmp_path, label_smoothing_factor=0.1), train_dataset=source)
    smoothing = {spec.name: spec.label_smoothing for spec in model.config.task_specs}
    kinds = {spec.name: spec.type for spec in model.config.task_specs}
    assert smoothing["colour"] == 0.0  # its own setting stands
    assert all(smoothing[name] == 0.1 for name in kinds if kinds[name] == "classification" and name != "colour")
    assert all(smoothing[name] is None for name in kinds if kinds[name] != "classification")


def test_label_smoothing_factor_without_a_classification_task_is_refused(tmp_path):
    source = shop_source(rows=32, tasks=["tags", "size"])
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    with pytest.raises(UserError, match="this model has no classification task; leave it at 0"):
        MultiTaskTrainer(model=model, args=arguments(tmp_path, label_smoothing_factor=0.1), train_dataset=source)


def test_a_resumed_run_keeps_the_checkpoints_loss_settings(tmp_path):
    source, model = balanced_shop_model()
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, label_smoothing_factor=0.2)
    MultiTaskTrainer(model=model, args=args, train_dataset=source).train()
    recorded = model.config.get_task("category")

    # The same data with one more labelled row of class 0 would count otherwise; the checkpoint's counts stand.
    other = TaskSource(load_shop_dataset(60, missing_rate=0.2, seed=0), source.fixed_tasks(), name="shop")
    _, fresh = balanced_shop_model()
    resumed = MultiTaskTrainer(model=fresh, args=arguments(tmp_path, max_steps=4), train_dataset=other)
    assert fresh.config.get_task("category").label_counts != recorded.label_counts
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    restored = fresh.config.get_task("category")
    assert restored.label_counts == recorded.label_counts and restored.label_smoothing == 0.2
    assert fresh.heads["category"].loss_weights == pytest.approx(model.heads["category"].loss_weights)
    assert math.isfinite(resumed.state.log_history[-1]["train_loss"])
