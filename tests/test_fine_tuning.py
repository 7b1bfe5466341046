"""Fine-tuning controls: a frozen backbone (linear probing), unfrozen after some steps (LP-FT), the heads' own
learning rate and layer-wise learning-rate decay, read off the optimizer's parameter groups and the parameters."""

from __future__ import annotations

import pytest
import torch
from transformers import ConvNextConfig, SwinConfig, TrainerCallback

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.errors import UserError
from mtl_hf.training.parameter_groups import backbone_layer_ids
from tests.training_helpers import arguments, assert_same_parameters, new_model, parameters, shop_source


class Snapshot(TrainerCallback):
    """The model's parameters after each optimizer step."""

    def __init__(self, model):
        self.model, self.after = model, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = parameters(self.model)


def backbone_moved(before, after) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before if name.startswith("backbone."))


def heads_moved(before, after) -> bool:
    return any(not torch.equal(before[name], after[name]) for name in before if name.startswith("heads."))


def test_a_frozen_backbone_does_not_move_and_is_not_in_the_optimizer(tmp_path):
    source = shop_source(rows=48)
    model = new_model(source)
    initial = parameters(model)
    trainer = MultiTaskTrainer(model, arguments(tmp_path, max_steps=3, freeze_backbone=True), train_dataset=source)
    trainer.train()
    assert not backbone_moved(initial, parameters(model)) and heads_moved(initial, parameters(model))
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for p in model.backbone.parameters())
    assert all(id(p) in optimized for p in model.heads.parameters())


def test_lp_ft_trains_the_heads_alone_then_everything(tmp_path):
    source = shop_source(rows=48)
    model = new_model(source)
    initial = parameters(model)
    snapshot = Snapshot(model)
    args = arguments(tmp_path, max_steps=5, freeze_backbone=True, unfreeze_backbone_at_step=2)
    trainer = MultiTaskTrainer(model, args, train_dataset=source, callbacks=[snapshot])
    trainer.train()
    assert not backbone_moved(initial, snapshot.after[2]) and heads_moved(initial, snapshot.after[2])
    assert backbone_moved(snapshot.after[2], snapshot.after[3])
    assert all(p.requires_grad for p in model.parameters())
    # one optimizer for the whole run: the backbone's parameters were in it from the start
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in model.parameters())


@pytest.mark.parametrize(
    ("weighting", "space"), [("pcgrad", "parameters"), ("upgrad", "representation"), ("nash_mtl", "parameters")]
)
def test_lp_ft_with_a_gradient_method_sums_the_head_losses_until_the_backbone_trains(tmp_path, weighting, space):
    """Frozen, there are no shared parameters to combine gradients on: each head trains on its own loss (the
    prior-weighted sum, as with static weights); unfrozen, the gradient method acts."""
    source = shop_source(rows=48)
    settings = dict(max_steps=4, freeze_backbone=True, unfreeze_backbone_at_step=2, batch_mode="mixed")
    runs = {}
    for method in (weighting, "static"):
        model = new_model(source)
        snapshot = Snapshot(model)
        args = arguments(tmp_path / method, weighting=method, gradient_space=space, **settings)
        MultiTaskTrainer(model, args, train_dataset=source, callbacks=[snapshot]).train()
        runs[method] = snapshot.after
    initial = parameters(new_model(source))
    gradient, static = runs[weighting], runs["static"]
    assert not backbone_moved(initial, gradient[2])
    for name, value in gradient[2].items():
        torch.testing.assert_close(value, static[2][name], rtol=1e-6, atol=1e-7, msg=name)
    assert backbone_moved(gradient[2], gradient[3])
    assert any(not torch.allclose(gradient[4][name], static[4][name]) for name in gradient[4])


def rates_by_name(trainer) -> dict[str, float]:
    rate_of = {id(p): group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    return {name: rate_of[id(p)] for name, p in trainer.model.named_parameters()}


def test_heads_get_their_own_learning_rate(tmp_path):
    source = shop_source(rows=32)
    args = arguments(tmp_path, max_steps=1, learning_rate=1e-4, head_learning_rate=1e-2, weight_decay=0.05)
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    trainer.create_optimizer()
    rates = rates_by_name(trainer)
    assert {rates[name] for name in rates if name.startswith("heads.")} == {1e-2}
    assert {rates[name] for name in rates if name.startswith("backbone.")} == {1e-4}
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4  # Trainer logs the first group's rate
    decays = {id(p): group["weight_decay"] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert decays[id(trainer.model.heads["category"].out_proj.weight)] == 0.05
    assert decays[id(trainer.model.heads["category"].out_proj.bias)] == 0.0


def test_layer_wise_decay_gives_each_block_its_rate_through_the_schedule(tmp_path):
    source = shop_source(rows=32)
    decay, base = 0.5, 1e-3
    args = arguments(tmp_path, max_steps=4, learning_rate=base, layer_decay=decay, warmup_steps=2)
    trainer = MultiTaskTrainer(new_model(source, num_hidden_layers=3), args, train_dataset=source)
    trainer.train()
    expected = {
        "backbone.embeddings.patch_embeddings.projection.weight": decay**4,
        "backbone.layers.0.attention.q_proj.weight": decay**3,
        "backbone.layers.1.mlp.fc2.weight": decay**2,
        "backbone.layers.2.layernorm_before.weight": decay**1,
        "backbone.layernorm.weight": 1.0,
        "heads.category.out_proj.weight": 1.0,
    }
    initial = {id(p): group["initial_lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    for name, scale in expected.items():
        parameter = dict(trainer.model.named_parameters())[name]
        assert initial[id(parameter)] == pytest.approx(base * scale), name
    # the scheduler scaled every group alike: each group's rate over its initial rate is the same at every step
    ratios = {group["lr"] / group["initial_lr"] for group in trainer.optimizer.param_groups if group["initial_lr"]}
    assert len({round(r, 12) for r in ratios}) == 1


def test_backbones_without_numbered_blocks_refuse_layer_decay():
    swin = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
    convnext = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
    for backbone in (swin, convnext):
        model = MultiTaskViTModel(
            MultiTaskViTConfig(
                backbone_config=backbone, tasks=[{"name": "c", "type": "classification", "num_outputs": 2}]
            )
        )
        with pytest.raises(UserError, match="layer_decay needs a backbone with one sequence of numbered blocks"):
            backbone_layer_ids(model.backbone)


def test_layer_decay_on_a_backbone_without_numbered_blocks_is_refused_before_training(tmp_path):
    swin = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
    source = shop_source(rows=16, tasks=["category"])
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=swin, tasks=source.task_specs))
    with pytest.raises(UserError, match="and SwinModel has none"):
        MultiTaskTrainer(model, arguments(tmp_path, layer_decay=0.7), train_dataset=source)


def test_a_resumed_lp_ft_run_gives_the_parameters_of_an_uninterrupted_one(tmp_path):
    source = shop_source(rows=48)
    settings = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        freeze_backbone=True,
        unfreeze_backbone_at_step=3,
        head_learning_rate=3e-3,
        layer_decay=0.7,
        weighting="uncertainty",
    )
    uninterrupted = MultiTaskTrainer(new_model(source), arguments(tmp_path / "full", **settings), train_dataset=source)
    uninterrupted.train()
    for checkpoint in ("checkpoint-2", "checkpoint-4"):  # before and after the unfreeze step
        resumed = MultiTaskTrainer(
            new_model(source, seed=7), arguments(tmp_path / f"from-{checkpoint}", **settings), train_dataset=source
        )
        resumed.train(resume_from_checkpoint=str(tmp_path / "full" / checkpoint))
        assert_same_parameters(resumed.model, uninterrupted.model, rtol=1e-5, atol=1e-6)
        assert [g["lr"] for g in resumed.optimizer.param_groups] == [
            g["lr"] for g in uninterrupted.optimizer.param_groups
        ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"freeze_backbone": True, "weighting": "pcgrad"}, "weighting 'pcgrad' combines the tasks' gradients on"),
        (
            {"freeze_backbone": True, "weighting": "upgrad", "gradient_space": "representation"},
            "which freeze_backbone keeps frozen for the whole run",
        ),
        ({"unfreeze_backbone_at_step": 2}, "unfreeze_backbone_at_step 2 needs freeze_backbone"),
        ({"layer_decay": 1.5}, r"layer_decay must be in \(0, 1\]"),
        ({"head_learning_rate": 0.0}, "head_learning_rate must be > 0"),
        ({"freeze_backbone": True, "layer_decay": 0.7}, "layer_decay sets the rates of a backbone that"),
    ],
)
def test_bad_fine_tuning_settings_are_refused_in_one_line(tmp_path, settings, message):
    source = shop_source(rows=16)
    with pytest.raises(UserError, match=message) as error:
        MultiTaskTrainer(new_model(source), arguments(tmp_path, **settings), train_dataset=source)
    assert "\n" not in str(error.value)


def test_an_unfreeze_step_past_the_run_is_refused(tmp_path):
    source = shop_source(rows=16)
    args = arguments(tmp_path, max_steps=4, freeze_backbone=True, unfreeze_backbone_at_step=4)
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    with pytest.raises(UserError, match="unfreeze_backbone_at_step 4 is not before the run's end \\(4 steps\\)"):
        trainer.train()


def test_fine_tuning_settings_and_loss_options_are_recipe_keys(tmp_path):
    from mtl_hf.commands.recipe import parse_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "dataset: builtin:shop\n"
        "tasks:\n"
        "  category: {column: category, class_weights: balanced, label_smoothing: 0.1}\n"
        "  tags: {column: tags, pos_weight: 2.0}\n"
        "  size: {column: size, loss: huber, huber_delta: 0.5}\n"
        "backbone_config: {model_type: vit, image_size: 32, patch_size: 4, hidden_size: 32, num_hidden_layers: 2,"
        " num_attention_heads: 2, intermediate_size: 64}\n"
        f"output_dir: {tmp_path / 'out'}\n"
        "use_cpu: true\n"
        "freeze_backbone: true\n"
        "unfreeze_backbone_at_step: 100\n"
        "head_learning_rate: 0.01\n"
        "layer_decay: 0.75\n"
    )
    _, data_args, args = parse_recipe([str(recipe), "--layer_decay", "0.65"])
    assert args.freeze_backbone and args.unfreeze_backbone_at_step == 100 and args.head_learning_rate == 0.01
    assert args.layer_decay == 0.65  # the flag overrides the YAML
    assert data_args.tasks["category"] == {"column": "category", "class_weights": "balanced", "label_smoothing": 0.1}
    assert data_args.tasks["size"]["loss"] == "huber"
