import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, DeiTConfig, Dinov2Config, SwinConfig, ViTModel

from mtl_hf import MISSING_CLASS, MultiTaskViTConfig, MultiTaskViTModel
from tests.conftest import SHOP_TASKS, tiny_vit_config

NAN = float("nan")


def assert_same_weights(model, reference):
    got, expected = model.state_dict(), reference.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def assert_same_outputs(out, reference):
    # Equal weights can still differ in the last bit: BLAS picks kernels by memory alignment.
    assert set(out.logits) == set(reference.logits)
    for name in reference.logits:
        torch.testing.assert_close(out.logits[name], reference.logits[name], rtol=1e-6, atol=1e-6)
    if reference.loss is not None:
        torch.testing.assert_close(out.loss, reference.loss, rtol=1e-6, atol=1e-6)


def shop_labels(batch_size: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    category = torch.randint(0, 3, (batch_size,), generator=g)
    category[1] = MISSING_CLASS
    tags = torch.randint(0, 2, (batch_size, 4), generator=g).float()
    tags[2, 1:] = MISSING_CLASS
    price = torch.rand(batch_size, generator=g) * 10
    price[3] = NAN
    return {"category": category, "tags": tags, "price": price}


@pytest.fixture
def model(shop_config) -> MultiTaskViTModel:
    return MultiTaskViTModel(shop_config).eval()


def test_logits_have_one_head_per_task_with_the_right_shape(model, pixel_values):
    out = model(pixel_values)
    assert set(out.logits) == {"category", "tags", "price"}
    assert out.logits["category"].shape == (6, 3)
    assert out.logits["tags"].shape == (6, 4)
    assert out.logits["price"].shape == (6, 1)
    assert out.loss is None and out.task_losses is None


def test_model_has_no_unused_backbone_pooler(model, pixel_values):
    assert getattr(model.backbone, "pooler", None) is None
    out = model(pixel_values, labels=shop_labels())
    out.loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_total_loss_equals_a_hand_computation(shop_config, pixel_values):
    shop_config.tasks[0]["loss_weight"] = 2.0
    shop_config.tasks[2]["loss_weight"] = 0.5
    model = MultiTaskViTModel(shop_config).eval()
    labels = shop_labels()
    out = model(pixel_values, labels=labels)

    category_rows = labels["category"] != MISSING_CLASS
    expected_category = F.cross_entropy(out.logits["category"][category_rows], labels["category"][category_rows])
    tag_present = labels["tags"] != MISSING_CLASS
    expected_tags = F.binary_cross_entropy_with_logits(out.logits["tags"][tag_present], labels["tags"][tag_present])
    price_present = ~torch.isnan(labels["price"])
    expected_price = F.mse_loss(out.logits["price"][:, 0][price_present], labels["price"][price_present])

    torch.testing.assert_close(out.task_losses["category"], expected_category)
    torch.testing.assert_close(out.task_losses["tags"], expected_tags)
    torch.testing.assert_close(out.task_losses["price"], expected_price)
    torch.testing.assert_close(out.loss, 2.0 * expected_category + expected_tags + 0.5 * expected_price)


def test_loss_only_counts_the_tasks_in_labels(model, pixel_values):
    labels = shop_labels()
    out = model(pixel_values, labels={"tags": labels["tags"]})
    assert set(out.task_losses) == {"tags"}
    torch.testing.assert_close(out.loss, out.task_losses["tags"])
    assert set(out.logits) == {"category", "tags", "price"}


def test_missing_targets_give_zero_gradient_to_their_images(model):
    pixel_values = torch.randn(4, 3, 32, 32, requires_grad=True)
    labels = {"category": torch.tensor([2, MISSING_CLASS, 0, MISSING_CLASS])}
    out = model(pixel_values, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    per_image = pixel_values.grad.abs().flatten(1).sum(1)
    assert per_image[1] == 0 and per_image[3] == 0
    assert per_image[0] > 0 and per_image[2] > 0


@pytest.mark.parametrize(
    ("task", "all_missing"),
    [
        ("category", torch.full((6,), MISSING_CLASS)),
        ("tags", torch.full((6, 4), float(MISSING_CLASS))),
        ("price", torch.full((6, 1), NAN)),
    ],
)
def test_a_task_with_every_target_missing_adds_zero_and_no_gradient(model, pixel_values, task, all_missing):
    labels = shop_labels()
    labels[task] = all_missing
    out = model(pixel_values, labels=labels)
    assert out.task_losses[task].item() == 0.0
    assert torch.isfinite(out.loss)
    others = sum(value for name, value in out.task_losses.items() if name != task)
    torch.testing.assert_close(out.loss, others)
    out.loss.backward()
    head_grads = [p.grad for p in model.heads[task].parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in head_grads)


def test_tasks_argument_runs_only_those_heads(model, pixel_values):
    labels = shop_labels()
    out = model(pixel_values, labels={"price": labels["price"]}, tasks=["price"])
    assert set(out.logits) == {"price"}
    full = model(pixel_values)
    torch.testing.assert_close(out.logits["price"], full.logits["price"])


def test_regression_accepts_flat_or_column_targets(model, pixel_values):
    price = shop_labels()["price"]
    flat = model(pixel_values, labels={"price": price}).loss
    column = model(pixel_values, labels={"price": price[:, None]}).loss
    torch.testing.assert_close(flat, column)


@pytest.mark.parametrize(
    ("labels", "tasks", "error", "message"),
    [
        (
            {"category": torch.tensor([0, 1, 2, 3, 0, 1])},
            None,
            ValueError,
            r"task 'category': label 3 out of range \(3 labels",
        ),
        ({"category": torch.tensor([0, -1, 2, 0, 0, 1])}, None, ValueError, "task 'category': label -1 out of range"),
        ({"category": torch.zeros(6)}, None, TypeError, r"labels\['category'\]: classification targets are class ids"),
        ({"category": torch.zeros(6, 3, dtype=torch.long)}, None, ValueError, r"must have shape \(batch_size,\)"),
        ({"category": torch.zeros(5, dtype=torch.long)}, None, ValueError, r"has shape \(5,\) but the batch has 6"),
        ({"category": [0, 1, 2, 0, 1, 2]}, None, TypeError, "must be a torch.Tensor"),
        ({"tags": torch.full((6, 4), 2.0)}, None, ValueError, r"task 'tags': multilabel target 2.0 is not in \[0, 1\]"),
        ({"tags": torch.zeros(6, 3)}, None, ValueError, r"labels\['tags'\] must have shape \(6, 4\), got \(6, 3\)"),
        ({"price": torch.full((6,), float("inf"))}, None, ValueError, "regression target is infinite"),
        ({"colour": torch.zeros(6, dtype=torch.long)}, None, ValueError, r"labels: unknown task\(s\) \['colour'\]"),
        ({"category": torch.zeros(6, dtype=torch.long)}, ["price"], ValueError, "not in tasks="),
        ({}, None, ValueError, "labels is an empty dict"),
        (torch.zeros(6, dtype=torch.long), None, TypeError, "labels must be a dict"),
        (None, ["colour"], ValueError, r"tasks: unknown task\(s\) \['colour'\]"),
    ],
)
def test_bad_targets_are_refused_with_a_clear_error(model, pixel_values, labels, tasks, error, message):
    with pytest.raises(error, match=message):
        model(pixel_values, labels=labels, tasks=tasks)


def test_save_and_reload_through_auto_model_gives_equal_outputs(tmp_path, model, pixel_values):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))

    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is MultiTaskViTModel
    assert reloaded.config.tasks == model.config.tasks
    assert reloaded.config.get_task("category").id2label == {0: "shirt", 1: "shoe", 2: "bag"}
    assert_same_weights(reloaded, model)
    labels = shop_labels()
    before, after = model(pixel_values, labels=labels), reloaded(pixel_values, labels=labels)
    assert_same_outputs(after, before)


def test_return_dict_false_gives_a_tuple(model, pixel_values):
    out = model(pixel_values, labels=shop_labels(), return_dict=False)
    assert isinstance(out, tuple)
    loss, task_losses, logits = out
    assert loss.ndim == 0 and set(task_losses) == set(logits) == {"category", "tags", "price"}


def test_hidden_states_come_from_the_backbone(model, pixel_values):
    out = model(pixel_values, output_hidden_states=True)
    assert len(out.hidden_states) == 3  # embeddings + 2 layers
    assert out.hidden_states[-1].shape == (6, 65, 64)


def test_head_options_mean_pooling_and_hidden_layer(pixel_values):
    config = MultiTaskViTConfig(
        backbone_config=tiny_vit_config(),
        tasks=[
            {"name": "a", "type": "classification", "labels": ["x", "y"], "pooling": "mean", "hidden_size": 16},
            {"name": "b", "type": "regression", "pooling": "cls", "dropout": 0.3},
        ],
    )
    model = MultiTaskViTModel(config).eval()
    assert model.heads["a"].dense.out_features == 16 and model.heads["a"].out_proj.in_features == 16
    assert model.heads["b"].dense is None and model.heads["b"].dropout.p == 0.3
    out = model(pixel_values, output_hidden_states=True)
    tokens = model.backbone(pixel_values).last_hidden_state
    head = model.heads["a"]
    expected = head.out_proj(head.activation(head.dense(tokens.mean(dim=1))))
    torch.testing.assert_close(out.logits["a"], expected)
    torch.testing.assert_close(out.logits["b"], model.heads["b"].out_proj(tokens[:, 0]))


@pytest.mark.parametrize(
    ("backbone_config", "expected"),
    [
        (tiny_vit_config(), "cls"),
        (Dinov2Config(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=1, num_attention_heads=4), "cls"),
        (SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4), "mean"),
    ],
    ids=["vit", "dinov2", "swin"],
)
def test_default_pooling_follows_the_backbone(tmp_path, backbone_config, expected, pixel_values):
    # A class token where the backbone has one; the mean of the tokens otherwise (backbones with a pooled
    # output of their own, which they pool with: tests/test_backbones.py).
    tasks = [{"name": "a", "type": "classification", "labels": ["x", "y"]}, {"name": "b", "type": "regression"}]
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone_config, tasks=tasks)).eval()
    assert [spec.pooling for spec in model.config.task_specs] == [expected, expected]
    hidden = model.backbone(pixel_values).last_hidden_state
    tokens = hidden.flatten(2).transpose(1, 2) if hidden.ndim == 4 else hidden
    pooled = tokens[:, 0] if expected == "cls" else tokens.mean(dim=1)
    torch.testing.assert_close(model(pixel_values).logits["b"], model.heads["b"](pooled))
    model.add_task({"name": "c", "type": "regression"})
    assert model.config.get_task("c").pooling == expected
    model.save_pretrained(tmp_path)
    assert [spec.pooling for spec in AutoModel.from_pretrained(tmp_path).config.task_specs] == [expected] * 3


def test_heads_are_initialised_from_initializer_range():
    config = MultiTaskViTConfig(
        backbone_config=tiny_vit_config(hidden_size=256, intermediate_size=256),
        tasks=[{"name": "a", "type": "classification", "num_outputs": 200}],
        initializer_range=0.05,
    )
    head = MultiTaskViTModel(config).heads["a"].out_proj
    assert torch.count_nonzero(head.bias) == 0
    assert math.isclose(head.weight.std().item(), 0.05, rel_tol=0.1)  # truncated at +-2: std ~0.044-0.05


def test_from_backbone_copies_the_pretrained_weights_exactly(tmp_path):
    pretrained = ViTModel(tiny_vit_config())
    pretrained.save_pretrained(tmp_path / "vit")
    model = MultiTaskViTModel.from_backbone(str(tmp_path / "vit"), tasks=SHOP_TASKS)
    expected = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("pooler.")}
    got = model.backbone.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert model.config.backbone_config.hidden_size == 64 and model.config.task_names == ["category", "tags", "price"]

    model.save_pretrained(tmp_path / "mtl")
    reloaded = AutoModel.from_pretrained(tmp_path / "mtl")
    assert torch.equal(reloaded.backbone.embeddings.cls_token, pretrained.embeddings.cls_token)


def test_add_task_leaves_the_rest_untouched_and_survives_reload(tmp_path, model, pixel_values):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits_before = model(pixel_values).logits
    model.add_task({"name": "season", "type": "classification", "labels": ["spring", "summer", "autumn", "winter"]})

    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.config.task_names == ["category", "tags", "price", "season"]
    out = model(pixel_values)
    assert out.logits["season"].shape == (6, 4)
    for name in logits_before:
        assert torch.equal(out.logits[name], logits_before[name])

    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert_same_weights(reloaded, model)
    assert_same_outputs(reloaded(pixel_values), out)

    with pytest.raises(ValueError, match="task 'season' exists already"):
        model.add_task({"name": "season", "type": "regression"})


def test_remove_task_leaves_the_rest_untouched(model, pixel_values):
    logits_before = model(pixel_values).logits
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("heads.tags.")}
    model.remove_task("tags")
    assert model.config.task_names == ["category", "price"]
    assert set(model.state_dict()) == set(before)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    out = model(pixel_values)
    assert set(out.logits) == {"category", "price"}
    assert torch.equal(out.logits["category"], logits_before["category"])

    with pytest.raises(KeyError, match="unknown task 'tags'"):
        model.remove_task("tags")
    model.remove_task("price")
    with pytest.raises(ValueError, match="the model's only task"):
        model.remove_task("category")


def test_gradient_checkpointing_gives_the_same_gradients(shop_config, pixel_values):
    model = MultiTaskViTModel(shop_config)
    model.train()  # checkpointing only acts in training mode; all dropouts are 0 here
    labels = shop_labels()

    def gradients_and_saved_tensors():
        saved = []
        model.zero_grad()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = model(pixel_values, labels=labels).loss
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}, sum(saved)

    plain, plain_saved = gradients_and_saved_tensors()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed, checkpointed_saved = gradients_and_saved_tensors()
    # The layers' activations are recomputed in the backward pass instead of kept.
    assert checkpointed_saved < plain_saved / 2
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


@pytest.mark.parametrize(
    "backbone_config",
    [
        DeiTConfig(
            image_size=32,
            patch_size=4,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
        ),
        Dinov2Config(image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=2, num_attention_heads=4),
    ],
    ids=["deit", "dinov2"],
)
def test_other_backbone_families_train_and_round_trip(tmp_path, backbone_config, pixel_values):
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=backbone_config, tasks=SHOP_TASKS)).eval()
    out = model(pixel_values, labels=shop_labels())
    assert torch.isfinite(out.loss)
    assert {k: tuple(v.shape) for k, v in out.logits.items()} == {"category": (6, 3), "tags": (6, 4), "price": (6, 1)}
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded.config.backbone_config) is type(backbone_config)
    assert_same_weights(reloaded, model)
    assert_same_outputs(reloaded(pixel_values, labels=shop_labels()), out)
