"""Every `TrainingArguments` field whose job MultiTaskTrainer does its own way is either honoured (and shown to
reach what it controls) or refused in one line when set: none is accepted and then silently ignored."""

from __future__ import annotations

import dataclasses

import pytest
from transformers import TrainingArguments

from mtl_hf import MultiTaskTrainer
from mtl_hf.errors import UserError
from mtl_hf.training.assembly import HONOURED_ARGUMENTS, IGNORED_ARGUMENTS, REFUSED_TRAINING_ARGUMENTS
from tests.training_helpers import arguments, new_model, shop_source

REFUSED_VALUES = {
    "dataloader_drop_last": True,
    "train_sampling_strategy": "sequential",
    "data_seed": 7,
    "auto_find_batch_size": True,
    "eval_accumulation_steps": 2,
    "eval_do_concat_batches": False,
    "batch_eval_metrics": True,
    "include_for_metrics": ["inputs"],
    "prediction_loss_only": True,
    "label_names": ["labels"],
    "remove_unused_columns": True,
    "neftune_noise_alpha": 5.0,
    "include_num_input_tokens_seen": True,
}


def test_the_tables_name_real_fields_and_each_refused_field_is_tried_here():
    fields = {field.name for field in dataclasses.fields(TrainingArguments)}
    assert set(REFUSED_TRAINING_ARGUMENTS) <= fields and set(HONOURED_ARGUMENTS) <= fields
    assert not set(REFUSED_TRAINING_ARGUMENTS) & set(HONOURED_ARGUMENTS)
    assert set(REFUSED_VALUES) == set(REFUSED_TRAINING_ARGUMENTS)
    assert not set(IGNORED_ARGUMENTS) & fields  # those are Trainer's keyword arguments, refused in test_bad_inputs


@pytest.mark.parametrize("name", sorted(REFUSED_VALUES))
def test_a_replaced_argument_set_to_another_value_is_refused(tmp_path, name):
    source = shop_source(rows=16)
    args = arguments(tmp_path, **{name: REFUSED_VALUES[name]})
    with pytest.raises(UserError, match=f"^{name}=.* has no effect in MultiTaskTrainer") as error:
        MultiTaskTrainer(new_model(source), args, train_dataset=source)
    assert "\n" not in str(error.value)


def test_their_defaults_are_accepted(tmp_path):
    source = shop_source(rows=16)
    MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source)


def test_honoured_arguments_reach_the_data_path(tmp_path):
    """label_smoothing_factor: tests/test_task_losses.py; the others here."""
    source = shop_source(rows=32)
    args = arguments(
        tmp_path,
        per_device_train_batch_size=8,
        dataloader_num_workers=1,
        dataloader_persistent_workers=True,
        dataloader_prefetch_factor=3,
        seed=11,
        ignore_data_skip=False,
    )
    trainer = MultiTaskTrainer(new_model(source), args, train_dataset=source)
    loader = trainer.get_train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (1, True, 3)
    assert loader.mixture.batch_size == 8 and loader.mixture.seed == 11
    assert trainer.args.ignore_data_skip is True  # the mixture restores its own position


def test_an_optimizer_given_by_the_user_also_trains_the_weightings_learned_parameters(tmp_path):
    import torch

    source = shop_source(rows=32)
    model = new_model(source)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = MultiTaskTrainer(
        model,
        arguments(tmp_path, max_steps=3, weighting="uncertainty"),
        train_dataset=source,
        optimizers=(optimizer, None),
    )
    learned = [p for p in trainer.weighting.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in learned]
    trainer.train()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert learned and all(id(p) in optimized for p in learned)
    assert any(not torch.equal(p, b) for p, b in zip(learned, before, strict=True))
