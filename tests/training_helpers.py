"""Small trainers for the training tests: the shop and digits data, a tiny ViT, quick arguments."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from mtl_hf import MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.balancing import GramianWeighting
from mtl_hf.data import TaskSource, load_digits_dataset, load_shop_dataset
from tests.conftest import tiny_vit_config

SHOP_TASKS = ["category", "colour", "pattern", "tags", "size"]


def shop_source(rows=96, start=0, missing_rate=0.2, name="shop", tasks=SHOP_TASKS) -> TaskSource:
    return TaskSource(load_shop_dataset(rows, start=start, missing_rate=missing_rate, seed=0), tasks, name=name)


def digits_source(rows=64, name="digits") -> TaskSource:
    return TaskSource(load_digits_dataset().select(range(rows)), ["digit", "traits"], name=name)


def new_model(*sources: TaskSource, seed=0, **backbone) -> MultiTaskViTModel:
    torch.manual_seed(seed)
    specs = [spec for source in sources for spec in source.task_specs]
    unique = list({spec.name: spec for spec in specs}.values())
    return MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(**backbone), tasks=unique))


def arguments(tmp_path, **overrides) -> MultiTaskTrainingArguments:
    values = dict(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        logging_steps=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return MultiTaskTrainingArguments(**values)


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same_parameters(model, reference, *, rtol, atol) -> None:
    expected = parameters(reference)
    for name, value in parameters(model).items():
        torch.testing.assert_close(value, expected[name], rtol=rtol, atol=atol, msg=name)


def step_logs(trainer) -> list[dict]:
    """The training log entries (one per logging step), without the final summary."""
    return [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
            control.should_save = True


def start_training_by_hand(trainer, steps: int) -> None:
    """What `Trainer.train` sets up before its first step, for tests that call `training_step` themselves."""
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    trainer.current_gradient_accumulation_steps = 1


class SumOfGradients(GramianWeighting):
    """A gradient method whose answer is known: weight 1 for every task, the plain sum (as `equal` gives)."""

    name = "equal"  # restored checkpoints compare names; this one never saves

    def gramian_weights(self, gramian, tasks):
        return torch.ones(gramian.shape[0], dtype=gramian.dtype)


def write_shop_recipe(path, *, data_lines: str, output_dir, max_steps: int, extra_lines: str = ""):
    """A recipe YAML that trains a tiny ViT on the shop's five tasks from `data_lines` (dataset: ...)."""
    path.write_text(
        f"{data_lines}\ntasks: [{', '.join(SHOP_TASKS)}]\n"
        "backbone_config: {model_type: vit, image_size: 32, patch_size: 8, hidden_size: 32, num_hidden_layers: 1, "
        "num_attention_heads: 2, intermediate_size: 64}\n"
        f"output_dir: {output_dir}\nmax_steps: {max_steps}\nper_device_train_batch_size: 16\n"
        f"eval_strategy: 'no'\nsave_strategy: 'no'\nreport_to: none\nuse_cpu: true\n{extra_lines}"
    )
    return path
