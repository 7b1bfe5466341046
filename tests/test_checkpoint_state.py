"""Checkpoints hold the multi-task state as safetensors + JSON, written by an `on_save` callback; no pickle is
written or read, and a resume takes the newest complete checkpoint."""

import logging
import os
import pickle

import pytest
import torch

from mtl_hf import MultiTaskTrainer
from mtl_hf.balancing import WEIGHTING_METHODS, build_weighting
from mtl_hf.data import ImageTransforms
from mtl_hf.training.checkpoint_state import (
    PICKLED_STATE,
    STATE_JSON,
    STATE_TENSORS,
    load_multitask_state,
    save_multitask_state,
)
from tests.training_helpers import StopAt, arguments, assert_same_parameters, new_model, shop_source

TASKS = ["a", "b", "c"]
PICKLE_MAGIC = b"\x80"  # protocol 2+ pickles start with PROTO; torch.save's zip files hold one as data.pkl


def trained_state(name: str) -> torch.nn.Module:
    """A weighting after a few observed steps, so every kind of state it keeps is filled."""
    method = build_weighting(name, TASKS)
    generator = torch.Generator().manual_seed(0)
    present = torch.tensor([True, False, True])
    for _ in range(3):
        losses = torch.rand(3, generator=generator) + 0.5
        method.observe(losses, torch.ones(3, dtype=torch.bool))
        if method.uses_gradients:
            jacobian = torch.randn(3, 6, generator=generator, dtype=torch.float64)
            method.host_weights(jacobian @ jacobian.T, torch.ones(3, dtype=torch.bool))
            method.host_weights(jacobian @ jacobian.T, present)
        if method.needs_losses_after_step:
            method.end_step(losses * 0.9, torch.ones(3, dtype=torch.bool))
        method.end_epoch()
    return method


def assert_same_state(restored, expected, where=""):
    if isinstance(expected, torch.Tensor):
        assert isinstance(restored, torch.Tensor) and restored.dtype == expected.dtype, where
        torch.testing.assert_close(restored, expected, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(expected, dict):
        assert sorted(restored) == sorted(expected), where
        for key in expected:
            assert_same_state(restored[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(restored) == len(expected), where
        for index, (a, b) in enumerate(zip(restored, expected, strict=True)):
            assert_same_state(a, b, f"{where}/{index}")
    else:
        assert restored == expected or (expected != expected and restored != restored), where


@pytest.mark.parametrize("name", sorted(WEIGHTING_METHODS))
def test_every_weighting_state_round_trips_through_safetensors_and_json(name, tmp_path):
    method = trained_state(name)
    state = {"weighting": method.state_dict(), "weighting_name": name, "mixture": {"epoch": 1, "step": 7, "seed": 3}}
    save_multitask_state(tmp_path, state)
    assert sorted(os.listdir(tmp_path)) == [STATE_JSON, STATE_TENSORS]
    restored = load_multitask_state(tmp_path)
    assert_same_state(restored, {**state, "weighting": dict(state["weighting"])})
    fresh = build_weighting(name, TASKS)
    fresh.load_state_dict(restored["weighting"])
    assert_same_state(dict(fresh.state_dict()), dict(method.state_dict()))


def test_state_that_would_need_pickle_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint state at /weighting/solver: a object cannot be saved"):
        save_multitask_state(tmp_path, {"weighting": {"solver": object()}})
    assert not (tmp_path / STATE_JSON).exists()


def test_checkpoints_hold_no_pickled_multitask_state_and_resume_exactly(tmp_path):
    source = shop_source()
    settings = dict(max_steps=8, weighting="famo", save_strategy="steps", save_steps=4, batch_mode="mixed")
    full = MultiTaskTrainer(new_model(source), arguments(tmp_path / "full", **settings), train_dataset=source)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert (checkpoint / STATE_JSON).is_file() and (checkpoint / STATE_TENSORS).is_file()
    assert not (checkpoint / PICKLED_STATE).exists()
    assert not (checkpoint / STATE_TENSORS).read_bytes().startswith(PICKLE_MAGIC)

    resumed = MultiTaskTrainer(
        new_model(source, seed=5), arguments(tmp_path / "full", **settings), train_dataset=source
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert_same_parameters(resumed.model, full.model, rtol=1e-5, atol=1e-6)
    assert_same_state(dict(resumed.weighting.state_dict()), dict(full.weighting.state_dict()))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # loading this pickle would create the marker file


def test_a_checkpoint_with_pickled_state_is_refused_without_unpickling_it(tmp_path):
    source = shop_source()
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    MultiTaskTrainer(new_model(source), args, train_dataset=source, callbacks=[StopAt(2)]).train()
    checkpoint = tmp_path / "checkpoint-2"
    (checkpoint / STATE_JSON).unlink()
    (checkpoint / STATE_TENSORS).unlink()
    marker = tmp_path / "the pickle ran"
    (checkpoint / PICKLED_STATE).write_bytes(pickle.dumps({"mixture": _RunsCode(str(marker))}))
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    with pytest.raises(ValueError, match=rf"holds {PICKLED_STATE}, a pickle .* so it is not read"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert not marker.exists()


def test_resume_true_skips_a_checkpoint_cut_short_and_takes_the_last_complete_one(tmp_path, caplog):
    source = shop_source()
    args = arguments(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
    MultiTaskTrainer(new_model(source), args, train_dataset=source, callbacks=[StopAt(4)]).train()
    (tmp_path / "checkpoint-4" / STATE_JSON).unlink()  # killed while saving: the completion mark never landed
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    with caplog.at_level(logging.WARNING, logger="mtl_hf"):
        assert trainer.resolve_checkpoint(True) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-4 is incomplete" in caplog.text
    (tmp_path / "checkpoint-2" / STATE_JSON).unlink()
    with pytest.raises(ValueError, match=r"holds no complete checkpoint to resume from \(incomplete: checkpoint-2, "):
        trainer.resolve_checkpoint(True)


def test_checkpoint_weights_keep_the_live_names_so_trainers_own_loader_restores_every_key(tmp_path):
    """transformers 5 saves models under their original (v4) parameter names and converts them back in
    `from_pretrained`; Trainer's checkpoint loader reads the names raw, and skipped every renamed backbone
    key with only a warning. Checkpoints now keep the live names; saved models keep the original ones."""
    from safetensors import safe_open
    from transformers import AutoModel

    source = shop_source()
    trainer = MultiTaskTrainer(
        new_model(source), arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=2), train_dataset=source
    )
    trainer.train()
    live = set(trainer.model.state_dict())
    with safe_open(tmp_path / "checkpoint-2" / "model.safetensors", "pt") as weights:
        assert set(weights.keys()) == live
    trainer.save_model(str(tmp_path / "final"))
    with safe_open(tmp_path / "final" / "model.safetensors", "pt") as weights:
        assert any(".encoder.layer." in key for key in weights.keys())  # downloads keep transformers' own names

    fresh = MultiTaskTrainer(new_model(source, seed=9), arguments(tmp_path), train_dataset=source)
    fresh._load_from_checkpoint(str(tmp_path / "checkpoint-2"))  # Trainer's own loader, not an override
    assert_same_parameters(fresh.model, trainer.model, rtol=0, atol=0)
    for folder in ("checkpoint-2", "final"):
        assert_same_parameters(AutoModel.from_pretrained(tmp_path / folder), trainer.model, rtol=0, atol=0)


@pytest.fixture
def pickled_only_model(tmp_path):
    """A saved model whose weights were converted to a pickled pytorch_model.bin (as old uploads are)."""
    source = shop_source(rows=16)
    model = new_model(source)
    folder = tmp_path / "pickled"
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return model, folder


def test_a_model_folder_with_only_pickled_weights_is_refused_unless_allowed(pickled_only_model):
    from transformers import AutoModel

    from mtl_hf import MultiTaskViTModel

    model, folder = pickled_only_model
    for load in (MultiTaskViTModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(
            ValueError,
            match=r"pickled\W+holds only pickled weights \(pytorch_model\.bin\).*"
            r"allow_pickled_weights=True",
        ):
            load(folder)
    allowed = MultiTaskViTModel.from_pretrained(folder, allow_pickled_weights=True)
    assert_same_parameters(allowed, model, rtol=0, atol=0)


def test_the_cli_refuses_pickled_weights_in_one_line_and_takes_the_flag(pickled_only_model, tmp_path, capsys):
    from mtl_hf.commands.main import main as cli
    from mtl_hf.data import load_shop_dataset

    _, folder = pickled_only_model
    photo = tmp_path / "photo.png"
    load_shop_dataset(1)[0]["image"].save(photo)
    assert cli(["predict", str(folder), str(photo)]) == 2
    assert cli(["eval", str(folder), "builtin:shop", "--max_rows", "8"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("--allow_pickled_weights" in line for line in errors), errors
    assert cli(["predict", str(folder), str(photo), "--allow_pickled_weights"]) == 0
    assert cli(["eval", str(folder), "builtin:shop", "--max_rows", "8", "--allow_pickled_weights"]) == 0


def test_a_recipe_continuing_a_pickled_model_or_backbone_needs_the_flag(pickled_only_model):
    from mtl_hf.commands.recipe import ModelArguments, build_model

    model, folder = pickled_only_model
    for field_name in ("model_name_or_path", "backbone"):
        with pytest.raises(ValueError, match="holds only pickled weights"):
            build_model(ModelArguments(**{field_name: str(folder)}), model.config.task_specs)
    continued, _ = build_model(
        ModelArguments(model_name_or_path=str(folder), allow_pickled_weights=True), model.config.task_specs
    )
    assert_same_parameters(continued, model, rtol=0, atol=0)
