"""The recipe's own arguments beside `MultiTaskTrainingArguments`: where the model starts (`ModelArguments`) and
which data it learns from (`DataArguments`), each field with its help text for `--help`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...errors import UserError
from ...utils.validation import check_choice, comma_separated, structured_option

ADD_TASK_MODES = ("heads", "lora", "full")


@dataclass
class ModelArguments:
    """Where the model starts: a saved multi-task model, a pretrained backbone, or a backbone config."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A multi-task model saved by mtl_hf (folder or Hub id) to train further; "
            "its tasks must match the data's."
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained vision backbone (Hub id or folder, e.g. google/vit-base-patch16-224-in21k) "
            "whose weights start the shared encoder; the task heads start fresh."
        },
    )
    backbone_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "A backbone trained from scratch: its config as a mapping (or JSON), with model_type "
            "(default vit) and sizes, e.g. {image_size: 32, patch_size: 4, hidden_size: 64}."
        },
    )
    backbone_output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also save the trained backbone alone (config, safetensors weights and the image processor, "
            "no task heads) in this folder, as `backbone:` of another recipe takes it: the end of a pretraining run."
        },
    )
    add_tasks_to: str | None = field(
        default=None,
        metadata={
            "help": "A multi-task model saved by mtl_hf (folder or Hub id) that the data's new tasks are added to, "
            "its own heads kept (add_task_mode says how); the result is saved only if its old tasks pass the gate "
            "(max_old_task_drop). Data columns that are its old tasks are its old labelled rows, mixed in."
        },
    )
    add_task_mode: str = field(
        default="heads",
        metadata={
            "help": "With add_tasks_to: heads (backbone and old heads frozen, the old answers bit-identical), lora "
            "(low-rank adapters on the new tasks' path only: old answers bit-identical, two backbone passes when "
            "both are asked) or full (everything trains; the old heads kept near their answers by distillation)."
        },
    )
    old_data: str | None = field(
        default=None,
        metadata={
            "help": "With add_tasks_to: labelled rows of the old tasks to score them on before and after (its "
            "old_split); default: the table the old model recorded training on."
        },
    )
    old_split: str = field(
        default="validation", metadata={"help": "The split of old_data the old tasks are scored on."}
    )
    max_old_task_drop: float | None = field(
        default=None,
        metadata={
            "help": "With add_tasks_to: the most any old task's main score (accuracy, micro-F1, R^2) may fall, in "
            "its own units (0.02: two points of accuracy); beyond it the model is not saved (exit 2, kept aside)."
        },
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models are cached."})
    allow_pickled_weights: bool = field(
        default=False,
        metadata={
            "help": "Load a model or backbone that has only pickled weights (pytorch_model.bin), which can "
            "run code when loaded: only for folders you trust. Without it they are refused."
        },
    )

    def __post_init__(self):
        self.backbone_config = structured_option("backbone_config", self.backbone_config)
        starts = ("model_name_or_path", "backbone", "backbone_config", "add_tasks_to")
        given = [name for name in starts if getattr(self, name)]
        if len(given) != 1:
            raise UserError(
                "give exactly one of model_name_or_path (continue a saved model), backbone (pretrained weights), "
                f"backbone_config (from scratch) or add_tasks_to (new tasks on a saved model); got {given or 'none'}"
            )
        check_choice("add_task_mode", self.add_task_mode, ADD_TASK_MODES)
        if self.max_old_task_drop is not None and not self.max_old_task_drop >= 0:
            raise UserError(f"max_old_task_drop must be >= 0 (a score's fall), got {self.max_old_task_drop}")
        if not self.add_tasks_to:
            asked = [name for name in ("old_data", "max_old_task_drop") if getattr(self, name) is not None]
            if asked:
                raise UserError(f"{asked} apply to tasks added to a saved model: set add_tasks_to too, or drop them")


@dataclass
class DataArguments:
    """The training and evaluation data: one dataset (the fields below) or several (`sources`)."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "builtin:shop, builtin:digits, a local folder / Parquet file, or a Hub dataset id."},
    )
    tasks: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "The tasks: a list of label columns, or a mapping task -> column (or -> {column, type, "
            "labels, loss_weight, ...}). Types and label names come from the data where they can."
        },
    )
    dataset_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Options of a built-in dataset, e.g. {num_rows: 4000, eval_rows: 1000} for shop."},
    )
    sources: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={
            "help": "Several datasets: a list of mappings with the keys dataset, tasks and optionally name, "
            "dataset_options, train_split, eval_split, eval_fraction, image_column, streaming, "
            "storage_options, num_rows. Replaces dataset/tasks."
        },
    )
    image_column: str = field(default="image", metadata={"help": "The column that holds the images."})
    train_split: str = field(default="train", metadata={"help": "The split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={
            "help": "The split to evaluate on. Default: 'validation' where local data has one (a catalogue table, "
            "a prepared folder), else eval_fraction of the training split is held out."
        },
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share of the training rows held out for evaluation when there is no eval_split "
            "(map-style data only; 0 evaluates nothing)."
        },
    )
    id_column: str | None = field(
        default=None,
        metadata={
            "help": "A catalogue table's row id (e.g. sku): its hash puts each row in train / validation / test, "
            "the same on every run. Default: the image column."
        },
    )
    split_fractions: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "A catalogue table's splits and their shares, default {train: 0.8, validation: 0.1, test: 0.1}; "
            "a 'split' column in the table decides instead."
        },
    )
    separator: str = field(
        default="|",
        metadata={"help": "What separates the labels of a multilabel cell in a catalogue table (sale|new)."},
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the rows (data larger than memory); needs eval_split for evaluation."}
    )
    num_rows: int | None = field(
        default=None, metadata={"help": "Row count of a streaming dataset whose metadata lacks it."}
    )
    storage_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "fsspec options for a dataset in object storage (s3://..., gs://...): credentials, "
            "endpoint, e.g. {key: ..., secret: ..., client_kwargs: {endpoint_url: ...}}."
        },
    )
    max_train_rows: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    max_eval_rows: int | None = field(default=None, metadata={"help": "Evaluate on the first N rows only."})
    bad_image_policy: str = field(
        default="raise",
        metadata={
            "help": "An image that cannot be decoded: 'raise' (stop, naming the source, row and file) or "
            "'skip' (leave the row out, count it per source; see max_bad_image_fraction)."
        },
    )
    augment: bool = field(
        default=False,
        metadata={
            "help": "Random resized crops and horizontal flips in training (off when position or "
            "side carries meaning, as for shop's corner badges)."
        },
    )

    def __post_init__(self):
        if isinstance(self.tasks, str) and not self.tasks.lstrip().startswith(("{", "[")):
            self.tasks = comma_separated(self.tasks)  # a, b, c
        self.tasks = structured_option("tasks", self.tasks, (dict, list))
        self.dataset_options = structured_option("dataset_options", self.dataset_options) or {}
        self.storage_options = structured_option("storage_options", self.storage_options) or {}
        self.split_fractions = structured_option("split_fractions", self.split_fractions)
        self.sources = structured_option("sources", self.sources, (list,))
        if self.sources is None and (self.dataset is None or self.tasks is None):
            raise UserError("name the data: dataset and tasks, or a list of sources (each with dataset and tasks)")
        if self.sources is not None and (self.dataset is not None or self.tasks is not None):
            raise UserError("give either sources or dataset/tasks, not both")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise UserError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        from ...data.sources import BAD_IMAGE_POLICIES  # the data path imports torch: not before the recipe is read

        check_choice("bad_image_policy", self.bad_image_policy, BAD_IMAGE_POLICIES)

    def source_settings(self) -> list[dict[str, Any]]:
        """One settings dict per source, the single-dataset fields filling what a source leaves out."""
        defaults = {
            "dataset_options": self.dataset_options,
            "image_column": self.image_column,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "eval_fraction": self.eval_fraction,
            "streaming": self.streaming,
            "num_rows": self.num_rows,
            "name": None,
            "bad_image_policy": self.bad_image_policy,
            "storage_options": self.storage_options,
            "id_column": self.id_column,
            "split_fractions": self.split_fractions,
            "separator": self.separator,
        }
        entries = self.sources if self.sources is not None else [{"dataset": self.dataset, "tasks": self.tasks}]
        settings = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise UserError(f"sources[{index}] must be a mapping with dataset and tasks, got {entry!r}")
            unknown = sorted(set(entry) - set(defaults) - {"dataset", "tasks"})
            if unknown:
                raise UserError(f"sources[{index}]: unknown keys {unknown}; known keys: {sorted(defaults)}")
            missing = [key for key in ("dataset", "tasks") if entry.get(key) is None]
            if missing:
                raise UserError(f"sources[{index}] lacks {' and '.join(missing)}")
            settings.append({**defaults, **entry})
        return settings


__all__ = ["DataArguments", "ModelArguments"]
