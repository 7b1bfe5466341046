import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from mtl_hf import MultiTaskTrainer
from mtl_hf.data import TaskSource, load_shop_dataset
from tests.training_helpers import (
    SHOP_TASKS,
    StopAt,
    SumOfGradients,
    arguments,
    assert_same_parameters,
    digits_source,
    new_model,
    parameters,
    shop_source,
    step_logs,
)


def test_logs_carry_each_task_loss_and_weight(tmp_path):
    source = shop_source()
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path, weighting="uncertainty"), train_dataset=source)
    trainer.train()
    logs = step_logs(trainer)
    assert [entry["step"] for entry in logs] == [2, 4, 6]
    for entry in logs:
        for task in SHOP_TASKS:
            assert math.isfinite(entry[f"loss_{task}"]) and entry[f"weight_{task}"] > 0
    assert logs[-1]["weight_category"] != 1.0  # uncertainty weights moved


def test_evaluate_reports_every_task_metric_and_predict_matches_it(tmp_path):
    source, held_out = shop_source(), shop_source(rows=50, start=96, name="held_out")
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source, eval_dataset=held_out)
    trainer.train()
    metrics = trainer.evaluate()
    expected = {
        "category": ["accuracy", "macro_f1", "loss"],
        "colour": ["accuracy", "macro_f1", "loss"],
        "pattern": ["accuracy", "macro_f1", "loss"],
        "tags": ["micro_f1", "macro_f1", "mAP", "loss"],
        "size": ["mse", "mae", "r2", "loss"],
    }
    for task, names in expected.items():
        for name in names:
            assert f"eval_{task}_{name}" in metrics, (task, name)
    primaries = [
        metrics[k]
        for k in (
            "eval_category_accuracy",
            "eval_colour_accuracy",
            "eval_pattern_accuracy",
            "eval_tags_micro_f1",
            "eval_size_r2",
        )
    ]
    assert metrics["eval_average_score"] == pytest.approx(np.mean(primaries))

    output = trainer.predict(held_out)
    assert output.predictions["category"].shape == (50, 3 + 2)  # five categories
    targets = output.label_ids["category"]
    present = targets != -100
    assert output.metrics["test_category_accuracy"] == pytest.approx(
        accuracy_score(targets[present], output.predictions["category"].argmax(-1)[present])
    )
    assert output.metrics["test_category_accuracy"] == pytest.approx(metrics["eval_category_accuracy"])


@pytest.mark.parametrize("space", ["representation", "parameters"])
def test_the_gradient_path_equals_the_loss_path_when_combining_by_sum(tmp_path, space):
    # SGD, not Adam: Adam would blow up the rounding noise of gradients that are zero in exact
    # arithmetic (the attention's key bias) into full-size steps.
    settings = dict(weighting="equal", batch_mode="mixed", optim="sgd", learning_rate=0.05, gradient_space=space)
    source = shop_source()
    plain = MultiTaskTrainer(new_model(source), arguments(tmp_path / "a", **settings), train_dataset=source)
    plain.train()
    surgery = MultiTaskTrainer(
        new_model(source),
        arguments(tmp_path / "b", **settings),
        train_dataset=source,
        weighting=SumOfGradients(SHOP_TASKS),
    )
    surgery.train()
    assert_same_parameters(surgery.model, plain.model, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weighting", ["uncertainty", "famo", "rlw", "stch", "imtl_l", "pcgrad", "gradvac", "nash_mtl"])
def test_resume_gives_the_parameters_of_an_uninterrupted_run(tmp_path, weighting):
    source = shop_source()  # 96 rows, batch 16: 6 steps an epoch, so the run crosses an epoch
    settings = dict(
        max_steps=14,
        weighting=weighting,
        save_strategy="steps",
        save_steps=8,
        batch_mode="mixed",
        sampling_strategy="proportional",
    )
    uninterrupted = MultiTaskTrainer(new_model(source), arguments(tmp_path / "full", **settings), train_dataset=source)
    uninterrupted.train()

    # The same run, interrupted right after its checkpoint at step 8.
    first = MultiTaskTrainer(
        new_model(source), arguments(tmp_path / "cut", **settings), train_dataset=source, callbacks=[StopAt(8)]
    )
    first.train()
    assert first.state.global_step == 8
    resumed = MultiTaskTrainer(
        new_model(source, seed=123), arguments(tmp_path / "cut", **settings), train_dataset=source
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-8"))

    assert_same_parameters(resumed.model, uninterrupted.model, rtol=1e-5, atol=1e-6)
    for key, value in uninterrupted.weighting.state_dict().items():
        torch.testing.assert_close(resumed.weighting.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_matches_the_bigger_batch(tmp_path):
    source = shop_source(rows=128, missing_rate=0.0)  # no missing targets: every half-batch mean has the same count
    big = MultiTaskTrainer(
        new_model(source),
        arguments(tmp_path / "big", max_steps=3, per_device_train_batch_size=32, weighting="equal"),
        train_dataset=source,
    )
    big.train()
    accumulated = MultiTaskTrainer(
        new_model(source),
        arguments(
            tmp_path / "acc",
            max_steps=3,
            per_device_train_batch_size=16,
            gradient_accumulation_steps=2,
            weighting="equal",
        ),
        train_dataset=source,
    )
    accumulated.train()
    assert_same_parameters(accumulated.model, big.model, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    source = shop_source()
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path, bf16=True, max_steps=3), train_dataset=source)
    before = parameters(trainer.model)
    trainer.train()
    logs = step_logs(trainer)
    assert all(math.isfinite(entry["loss"]) for entry in logs)
    assert any(not torch.equal(p, before[name]) for name, p in parameters(trainer.model).items())


def test_bad_setups_are_refused(tmp_path):
    source = shop_source()
    with pytest.raises(ValueError, match="unknown weighting 'gradnorm'"):
        arguments(tmp_path, weighting="gradnorm")
    with pytest.raises(ValueError, match=r"weighting 'famo' has no option\(s\) \['temperature'\]"):
        arguments(tmp_path, weighting="famo", weighting_options='{"temperature": 2}')
    with pytest.raises(ValueError, match="unknown batch_mode 'by_task'"):
        arguments(tmp_path, batch_mode="by_task")
    other = TaskSource(load_shop_dataset(20), {"hue": "colour"})
    with pytest.raises(ValueError, match=r"task\(s\) \['hue'\] that the model lacks"):
        MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=other)
    with pytest.raises(TypeError, match="args must be MultiTaskTrainingArguments"):
        from transformers import TrainingArguments

        MultiTaskTrainer(new_model(source), TrainingArguments(output_dir=str(tmp_path)), train_dataset=source)
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source)
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(FileNotFoundError, match="was not written by MultiTaskTrainer"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


def test_the_best_checkpoint_by_average_score_is_loaded_at_the_end(tmp_path):
    source, held_out = shop_source(), shop_source(rows=40, start=96, name="held_out")
    args = arguments(
        tmp_path,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="average_score",
    )
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source, eval_dataset=held_out)
    trainer.train()
    scores = {e["step"]: e["eval_average_score"] for e in trainer.state.log_history if "eval_average_score" in e}
    best_step = max(scores, key=scores.get)
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.evaluate()["eval_average_score"] == pytest.approx(scores[best_step], abs=1e-6)


def test_gradient_surgery_runs_with_accumulation_and_bf16(tmp_path):
    source = shop_source()
    args = arguments(
        tmp_path, weighting="cagrad", batch_mode="mixed", gradient_accumulation_steps=2, bf16=True, max_steps=2
    )
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    before = parameters(trainer.model)
    trainer.train()
    after = parameters(trainer.model)
    assert all(torch.isfinite(p).all() for p in after.values())
    assert not torch.equal(after["backbone.embeddings.cls_token"], before["backbone.embeddings.cls_token"])


def test_a_task_without_targets_in_the_evaluation_rows_is_named_not_silently_averaged(tmp_path, caplog):
    source = shop_source(rows=32)
    rows = load_shop_dataset(24, start=200, missing_rate=0.2, seed=0).map(lambda row: {"size": None})
    held_out = TaskSource(rows, {spec.name: spec.name for spec in source.task_specs}, name="held_out")
    trainer = MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source, eval_dataset=held_out)
    with caplog.at_level("WARNING", logger="mtl_hf.training.evaluation"):
        metrics = trainer.evaluate()
    assert math.isnan(metrics["eval_size_r2"]) and metrics["eval_unscored_tasks"] == 1
    others = ["eval_category_accuracy", "eval_colour_accuracy", "eval_pattern_accuracy", "eval_tags_micro_f1"]
    assert metrics["eval_average_score"] == pytest.approx(np.mean([metrics[key] for key in others]))
    assert any("task(s) ['size'] have no targets in these rows" in r.getMessage() for r in caplog.records)


def test_a_second_train_call_keeps_one_group_for_the_weightings_parameters(tmp_path):
    """uncertainty learns its log-variances with the model: a second `train()` on the same trainer (more epochs,
    or a fit continued in a notebook) reuses the optimizer instead of adding those parameters again."""
    source = shop_source(rows=16)
    trainer = MultiTaskTrainer(
        new_model(source), arguments(tmp_path, max_steps=2, weighting="uncertainty"), train_dataset=source
    )
    trainer.train()
    log_variances = [p for p in trainer.weighting.parameters() if p.requires_grad]
    first = [p.detach().clone() for p in log_variances]
    trainer.train()
    groups = [g for g in trainer.optimizer.param_groups if any(p is log_variances[0] for p in g["params"])]
    assert len(groups) == 1 and groups[0]["params"] == log_variances
    assert any(not torch.equal(before, now) for before, now in zip(first, log_variances, strict=True))


def test_when_exhausted_stop_gives_every_epoch_the_steps_trainer_planned(tmp_path):
    """Two sources mixed until the first runs out: Trainer plans num_train_epochs x len(mixture) steps and its
    schedule on them; every epoch has that length, so the run ends where the schedule does (learning rate 0)."""
    sources = [shop_source(rows=70, name="shop"), digits_source(rows=40, name="digits")]
    trainer = MultiTaskTrainer(
        new_model(*sources),
        arguments(
            tmp_path,
            max_steps=-1,
            num_train_epochs=4,
            per_device_train_batch_size=8,
            batch_mode="mixed",
            when_exhausted="stop",
            logging_steps=1,
        ),
        train_dataset=sources,
    )
    per_epoch = len(trainer.train_mixture)
    trainer.train()
    assert trainer.state.max_steps == 4 * per_epoch == trainer.state.global_step
    rates = [entry["learning_rate"] for entry in step_logs(trainer)]
    assert len(rates) == 4 * per_epoch and rates[-1] == pytest.approx(1e-3 / (4 * per_epoch))
    epochs = [entry["epoch"] for entry in step_logs(trainer)]
    assert epochs[per_epoch - 1] == pytest.approx(1.0) and epochs[-1] == pytest.approx(4.0)


def test_workers_send_uint8_pixels_normalised_where_the_batch_reaches_the_device(tmp_path):
    """The training loader's batches hold uint8 pixels, a quarter of float32's bytes; `_prepare_inputs` (the
    private hook every batch passes on its way to the device) turns them into the normalised float pixels the
    transform gives, and the loss is the one of those pixels."""
    source = shop_source(rows=32)
    model = new_model(source)
    trainer = MultiTaskTrainer(model, arguments(tmp_path, per_device_train_batch_size=8), train_dataset=[source])
    batch = next(iter(trainer.get_train_dataloader()))
    pixels = batch["pixel_values"]
    assert pixels.dtype == torch.uint8 and pixels.shape[1:] == (3, 32, 32)
    transform = trainer.image_transforms
    expected = (pixels.float() / 255 - torch.tensor(transform.mean).view(1, 3, 1, 1)) / torch.tensor(
        transform.std
    ).view(1, 3, 1, 1)
    prepared = trainer._prepare_inputs(dict(batch))
    assert prepared["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(prepared["pixel_values"], expected, rtol=1e-5, atol=1e-5)
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, trainer._prepare_inputs(dict(batch)))
        by_hand = model(pixel_values=expected, labels=batch["labels"], tasks=batch.get("tasks")).loss
    torch.testing.assert_close(loss, by_hand)


def test_only_checkpoints_bound_for_the_hub_draw_the_card_and_its_curves(tmp_path, monkeypatch):
    """Drawing the curves took 0.4 s a save, ten times a tiny model's steps; a checkpoint kept for resuming (or
    restoring the best) does not need them: the card and curves come with the final save_model, and with every
    checkpoint that is pushed (tests/test_hub.py checks what arrives)."""
    import mtl_hf.training.model_card as model_card

    drawn = []
    draw = model_card.plot_training_curves
    monkeypatch.setattr(model_card, "plot_training_curves", lambda *a, **k: drawn.append(a[2]) or draw(*a, **k))
    source = shop_source(rows=32)
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=1, save_total_limit=None)
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    trainer.train()
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert len(checkpoints) == 4 and not drawn
    assert not any((folder / name).exists() for folder in checkpoints for name in ("README.md", "training_curves.png"))
    trainer.save_model()
    assert drawn == [str(tmp_path / "training_curves.png")]
    assert (tmp_path / "README.md").is_file() and (tmp_path / "training_curves.png").is_file()
