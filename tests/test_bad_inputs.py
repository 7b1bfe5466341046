"""Bad inputs across config, data, model, trainer, recipes and CLI: each gets one clear error naming the
culprit and the fix, and nothing already saved is damaged or left half-written.

Each case is a function that must raise; the table gives the error type and a pattern of its message.
Cases that touch saved files also check those files afterwards. (More cases live beside the features
they guard: tests/test_newcomer.py for CLI one-liners, tests/test_bad_images.py, test_checkpoint_state.py.)
"""

import errno
import fcntl
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from transformers import BertConfig

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import DataArguments
from mtl_hf.commands.recipe import parse_recipe as parse_args
from mtl_hf.commands.train import run
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskMixture, TaskSource, load_shop_dataset
from mtl_hf.training.checkpoint_state import STATE_JSON, last_complete_checkpoint
from mtl_hf.utils.output_dir import LOCK_FILE
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments, new_model, shop_source

ROOT = Path(__file__).resolve().parent.parent


def images(count, shape=(8, 8, 3)):
    return [np.zeros(shape, np.uint8)] * count


def collate(dataset, tasks):
    source = TaskSource(dataset, tasks)
    return MultiTaskCollator(source.task_specs, ImageTransforms(size=(8, 8)))(source.rows(range(len(dataset))))


def recipe(tmp_path, **overrides) -> Path:
    values = yaml.safe_load((ROOT / "recipes" / "configs" / "digits.yaml").read_text())
    values.update(
        num_train_epochs=1,
        max_train_rows=64,
        max_eval_rows=32,
        output_dir=str(tmp_path / "run"),
        save_strategy="epoch",
        disable_tqdm=True,
        logging_steps=1,
    )
    values.update(overrides)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# -- config -----------------------------------------------------------------------------------------


def yaml_key_typo(tmp_path):
    path = recipe(tmp_path)
    path.write_text(path.read_text() + "learning_rat: 0.1\n")
    parse_args([str(path)])


def yaml_key_twice(tmp_path):
    path = recipe(tmp_path)
    path.write_text("seed: 1\n" + path.read_text())
    parse_args([str(path)])


def unknown_task_type(tmp_path):
    MultiTaskViTConfig(tasks=[{"name": "colour", "type": "classify", "labels": ["red", "blue"]}])


def classification_without_labels(tmp_path):
    MultiTaskViTConfig(tasks=[{"name": "colour", "type": "classification"}])


def duplicate_task_names(tmp_path):
    MultiTaskViTConfig(tasks=[{"name": "size", "type": "regression"}, {"name": "size", "type": "regression"}])


def invalid_task_name(tmp_path):
    MultiTaskViTConfig(tasks=[{"name": "base-colour", "type": "regression"}])


def unknown_weighting(tmp_path):
    arguments(tmp_path, weighting="gradnorm")


def weighting_option_of_another_method(tmp_path):
    arguments(tmp_path, weighting="famo", weighting_options='{"temperature": 2}')


def bad_nan_policy(tmp_path):
    arguments(tmp_path, nan_policy="ignore")


def bad_image_fraction(tmp_path):
    arguments(tmp_path, max_bad_image_fraction=1.5)


# -- data -------------------------------------------------------------------------------------------


def unknown_task_column(tmp_path):
    TaskSource(load_shop_dataset(4), ["categry"])


def missing_image_column(tmp_path):
    TaskSource(load_shop_dataset(4), ["category"], image_column="photo")


def label_out_of_range(tmp_path):
    dataset = datasets.Dataset.from_dict({"image": images(3), "colour": [0, 1, 7]})
    collate(dataset.cast_column("colour", datasets.ClassLabel(names=["red", "blue"])), ["colour"])


def wrong_label_dtype(tmp_path):
    dataset = datasets.Dataset.from_dict({"image": images(2), "price": ["cheap", "dear"]})
    TaskSource(dataset, {"price": {"column": "price", "type": "regression"}})


def wrong_image_channels(tmp_path):
    collate(datasets.Dataset.from_dict({"image": images(2, (8, 8, 5)), "size": [1.0, 2.0]}), ["size"])


def corrupt_image_bytes(tmp_path):
    rows = load_shop_dataset(3).cast_column("image", datasets.Image(decode=False))
    rows = rows.map(
        lambda row, i: {"image": {"bytes": b"\xff\xd8\xff garbage", "path": None}} if i == 1 else row, with_indices=True
    )
    collate(rows, ["category"])


def empty_dataset(tmp_path):
    TaskSource(load_shop_dataset(4).select([]), ["category"])


def source_weights_naming_no_source(tmp_path):
    TaskMixture(
        [TaskSource(load_shop_dataset(4), ["category"], name="shop")],
        batch_size=2,
        strategy="weights",
        weights={"shopp": 1.0},
    )


def streamed_source_without_eval_split(tmp_path):
    write_dir = tmp_path / "shards"
    from mtl_hf.data import write_shop_parquet

    write_shop_parquet(write_dir, 20, rows_per_shard=10)
    from mtl_hf.commands.recipe import load_data

    load_data(DataArguments(dataset=str(write_dir), tasks=["category"], streaming=True, num_rows=20), seed=0)


def storage_options_for_a_builtin_dataset(tmp_path):
    from mtl_hf.commands.recipe import load_data

    load_data(DataArguments(dataset="builtin:shop", tasks=["category"], storage_options={"key": "k"}), seed=0)


# -- model ------------------------------------------------------------------------------------------


def text_backbone(tmp_path):
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    MultiTaskViTModel(MultiTaskViTConfig(backbone_config=config, tasks=[{"name": "size", "type": "regression"}]))


def data_task_the_model_lacks(tmp_path):
    other = TaskSource(load_shop_dataset(8), {"hue": "colour"})
    MultiTaskTrainer(new_model(shop_source(rows=8)), arguments(tmp_path), train_dataset=other)


def data_labels_differ_from_the_model(tmp_path):
    model = MultiTaskViTModel(
        MultiTaskViTConfig(
            backbone_config=tiny_vit_config(),
            tasks=[{"name": "category", "type": "classification", "labels": ["a", "b"]}],
        )
    )
    MultiTaskTrainer(model, arguments(tmp_path), train_dataset=TaskSource(load_shop_dataset(8), ["category"]))


# -- trainer ----------------------------------------------------------------------------------------


def gradient_method_under_fp16(tmp_path):
    source = shop_source(rows=8)
    MultiTaskTrainer(
        new_model(source), arguments(tmp_path, weighting="upgrad", fp16=True, use_cpu=True), train_dataset=source
    )


def resume_with_another_weighting(tmp_path):
    source = shop_source(rows=32)
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, weighting="famo")
    MultiTaskTrainer(new_model(source), args, train_dataset=source).train()
    other = arguments(tmp_path, max_steps=6, save_strategy="steps", save_steps=2, weighting="equal")
    MultiTaskTrainer(new_model(source), other, train_dataset=source).train(resume_from_checkpoint=True)


def resume_with_another_seed(tmp_path):
    source = shop_source(rows=32)
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    MultiTaskTrainer(new_model(source), args, train_dataset=source).train()
    other = arguments(tmp_path, max_steps=6, save_strategy="steps", save_steps=2, seed=7)
    MultiTaskTrainer(new_model(source), other, train_dataset=source).train(resume_from_checkpoint=True)


def resume_from_an_empty_folder(tmp_path):
    source = shop_source(rows=8)
    MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source).train(resume_from_checkpoint=True)


def evaluate_without_eval_data(tmp_path):
    source = shop_source(rows=8)
    MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source).evaluate()


def disk_full_while_saving(tmp_path):
    import mtl_hf.training.checkpoint_state as checkpoint_state

    real = checkpoint_state.save_file

    def fills_up(tensors, path):
        if "checkpoint-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    checkpoint_state.save_file = fills_up
    try:
        source = shop_source(rows=32)
        args = arguments(tmp_path, max_steps=6, save_strategy="steps", save_steps=2)
        MultiTaskTrainer(new_model(source), args, train_dataset=source).train()
    finally:
        checkpoint_state.save_file = real


def disk_full_leaves_the_last_good_checkpoint(tmp_path):
    assert (tmp_path / "checkpoint-2" / STATE_JSON).is_file()
    assert not (tmp_path / "checkpoint-4" / STATE_JSON).exists()
    assert last_complete_checkpoint(tmp_path).endswith("checkpoint-2")


# -- recipes and CLI --------------------------------------------------------------------------------


def output_dir_not_writable(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    run(*parse_args([str(recipe(tmp_path, output_dir=str(tmp_path / "a_file" / "run")))]))


def two_runs_into_one_folder(tmp_path):
    path = recipe(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # what the first run saved so far
    with open(folder / LOCK_FILE, "a+") as other_run:
        other_run.write("4242")
        other_run.flush()
        fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first run, still training
        run(*parse_args([str(path)]))


def two_runs_leave_the_first_runs_files(tmp_path):
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["_mtl_hf.lock", "config.json"]
    assert (tmp_path / "run" / "config.json").read_text() == "{}"


def a_used_output_dir(tmp_path):
    path = recipe(tmp_path)
    run(*parse_args([str(path)]))
    run(*parse_args([str(path)]))


def resume_with_a_different_recipe(tmp_path):
    path = recipe(tmp_path, save_strategy="steps", save_steps=5, max_steps=10, num_train_epochs=3)
    run(*parse_args([str(path)]))
    run(*parse_args([str(path), "--resume_from_checkpoint", "true", "--weighting", "famo", "--max_steps", "20"]))


def cli_eval_a_missing_column(tmp_path):
    model = tmp_path / "model"
    new_model(shop_source(rows=8)).save_pretrained(model)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(model)
    code = cli(["eval", str(model), "builtin:shop", "--tasks", '{"category": "categry"}', "--max_rows", "8"])
    raise SystemExit(code)


CASES = [
    # (case, error type, message pattern, check of what is on disk afterwards)
    (
        yaml_key_typo,
        ValueError,
        r"unknown argument\(s\) \['learning_rat'\] - learning_rat \(did you mean "
        r"learning_rate\?\)",
        None,
    ),
    (yaml_key_twice, ValueError, r"recipe\.yaml: 'seed' is set twice \(lines 1 and \d+\); keep one", None),
    (unknown_task_type, ValueError, r"task 'colour': unknown type 'classify'; use one of classification", None),
    (classification_without_labels, ValueError, r"task 'colour': a classification task needs `labels`", None),
    (duplicate_task_names, ValueError, r"duplicate task names \['size'\]; every task needs its own name", None),
    (invalid_task_name, ValueError, r"invalid task name 'base-colour': use letters, digits and underscores", None),
    (unknown_weighting, ValueError, r"unknown weighting 'gradnorm'; use one of", None),
    (weighting_option_of_another_method, ValueError, r"weighting 'famo' has no option\(s\) \['temperature'\]", None),
    (bad_nan_policy, ValueError, r"unknown nan_policy 'ignore'; use one of stop, skip_step", None),
    (bad_image_fraction, ValueError, r"max_bad_image_fraction must be in \[0, 1\], got 1.5", None),
    (unknown_task_column, ValueError, r"source 'categry': no column 'categry'; the columns are \[", None),
    (missing_image_column, ValueError, r"source 'category': no column 'photo'; the columns are \[", None),
    (label_out_of_range, ValueError, r"source 'colour', row 2: task 'colour': label 7 out of range \(2 labels\)", None),
    (
        wrong_label_dtype,
        ValueError,
        r"task 'price' gives type='regression' but column 'price' holds "
        r"classification labels; drop 'type' from the task .* or cast the column",
        None,
    ),
    (
        wrong_image_channels,
        ValueError,
        r"source 'size', row 0: cannot decode the image \(ValueError: an image array "
        r"needs 1, 2 \(grey \+ alpha\), 3 or 4 channels, got 5",
        None,
    ),
    (corrupt_image_bytes, ValueError, r"source 'category', row 1: cannot decode the image \(", None),
    (empty_dataset, ValueError, r"source 'category' is empty: it has no rows to train on", None),
    (source_weights_naming_no_source, ValueError, r"weights must name every source exactly: unknown \['shopp'\]", None),
    (
        streamed_source_without_eval_split,
        ValueError,
        r"is streamed, so no share of it can be held out for "
        r"evaluation: set eval_split",
        None,
    ),
    (
        storage_options_for_a_builtin_dataset,
        ValueError,
        r"storage_options apply to datasets in object storage \(s3://, gs://, \.\.\.\), not to 'builtin:shop'",
        None,
    ),
    (text_backbone, ValueError, r"backbone model_type 'bert' is not a vision model \(its input is 'input_ids'", None),
    (data_task_the_model_lacks, ValueError, r"the training data has task\(s\) \['hue'\] that the model lacks", None),
    (data_labels_differ_from_the_model, ValueError, r"task 'category' differs between the data .* and the model", None),
    (
        gradient_method_under_fp16,
        ValueError,
        r"weighting 'upgrad' .* cannot work under fp16 loss scaling; use bf16",
        None,
    ),
    (
        resume_with_another_weighting,
        ValueError,
        r"the checkpoint was trained with weighting 'famo', this trainer "
        r"uses 'equal'",
        None,
    ),
    (
        resume_with_another_seed,
        ValueError,
        r"this state was saved with seed 0, but the mixture has seed 7: resuming "
        r"would replay a different sequence",
        None,
    ),
    (resume_from_an_empty_folder, ValueError, r"holds no complete checkpoint to resume from; start a fresh run", None),
    (evaluate_without_eval_data, ValueError, r"nothing to evaluate: pass eval_dataset", None),
    (
        disk_full_while_saving,
        OSError,
        r"could not save the multi-task state into .*checkpoint-4 \(No space left on "
        r"device\); that checkpoint stays incomplete and a resume skips it",
        disk_full_leaves_the_last_good_checkpoint,
    ),
    (
        output_dir_not_writable,
        ValueError,
        r"output_dir .*a_file/run cannot be written \(Not a directory\): choose "
        r"another --output_dir",
        None,
    ),
    (
        two_runs_into_one_folder,
        ValueError,
        r"output_dir .*run is in use by another run \(pid 4242\): wait for it",
        two_runs_leave_the_first_runs_files,
    ),
    (
        a_used_output_dir,
        ValueError,
        r"holds a previous run's checkpoints \(checkpoint-\d+\): resume it with "
        r"--resume_from_checkpoint true",
        None,
    ),
    (
        resume_with_a_different_recipe,
        ValueError,
        r"the checkpoint was trained with weighting 'static', this "
        r"trainer uses 'famo'",
        None,
    ),
    (cli_eval_a_missing_column, SystemExit, r"^2$", None),
]


@pytest.mark.parametrize(("case", "error", "pattern", "check"), CASES, ids=[case[0].__name__ for case in CASES])
def test_bad_input_gets_a_clear_error(tmp_path, case, error, pattern, check):
    with pytest.raises(error, match=pattern):
        case(tmp_path)
    if check is not None:
        check(tmp_path)


def test_there_are_at_least_25_distinct_cases():
    assert len({case.__name__ for case, *_ in CASES}) >= 25


def test_messages_are_one_line():
    """What the table matches is the whole message: none of them spans lines (checked on a sample)."""
    for case in (unknown_task_type, unknown_task_column, text_backbone, empty_dataset):
        with pytest.raises(Exception) as raised:
            case(Path("/nonexistent"))
        assert "\n" not in str(raised.value)


def test_the_cli_line_for_a_missing_column_names_the_columns(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_eval_a_missing_column(tmp_path)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("mtl-hf eval: error:") and "no column(s) ['categry']; its columns are [" in line


def test_a_misspelt_task_option_names_the_closest_one(tmp_path, capsys):
    """A typo one level down in a recipe (a task's option) gets its 'did you mean' like a top-level one."""
    from mtl_hf.commands.main import main as cli

    recipe = tmp_path / "typo.yaml"
    recipe.write_text(
        "dataset: builtin:shop\ndataset_options: {num_rows: 16, eval_rows: 8, image_size: 32}\n"
        "tasks:\n  category: {column: category, loss_wieght: 2}\n"
        "backbone_config: {image_size: 32, patch_size: 8}\n"
        f"output_dir: {tmp_path / 'out'}\nmax_steps: 1\nuse_cpu: true\nreport_to: none\n"
    )
    assert cli(["train", str(recipe)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "task 'category': unknown options ['loss_wieght'] - loss_wieght (did you mean loss_weight?)" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"compute_metrics": lambda prediction: {}}, "MultiTaskTrainer does not take compute_metrics: each task"),
        ({"preprocess_logits_for_metrics": lambda logits, labels: logits}, "does not take preprocess_logits_for"),
        ({"compute_loss_func": lambda outputs, labels, num_items: 0}, "does not take compute_loss_func"),
        ({"model_init": lambda: None}, "does not take model_init: the trainer needs the model itself"),
    ],
    ids=["compute_metrics", "preprocess_logits", "compute_loss_func", "model_init"],
)
def test_trainer_arguments_the_trainer_would_ignore_are_refused(tmp_path, extra, message):
    """Trainer takes these and MultiTaskTrainer would never read them: a silent no-op is refused instead."""
    from mtl_hf import MultiTaskTrainer
    from mtl_hf.errors import UserError
    from tests.training_helpers import arguments, new_model, shop_source

    source = shop_source(rows=16)
    with pytest.raises(UserError, match=message):
        MultiTaskTrainer(new_model(source), arguments(tmp_path), train_dataset=source, **extra)


@pytest.mark.parametrize(
    ("metric", "greater"),
    [
        ("size_mse", False),
        ("eval_size_mae", False),
        ("loss", False),
        ("category_accuracy", True),
        ("average_score", True),
    ],
)
def test_the_best_checkpoint_follows_the_direction_of_its_metric(tmp_path, metric, greater):
    """A lower-is-better task metric named for load_best_model_at_end keeps the lowest, not the highest."""
    from mtl_hf import MultiTaskTrainingArguments

    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), metric_for_best_model=metric, use_cpu=True)
    assert args.greater_is_better is greater
    chosen = MultiTaskTrainingArguments(
        output_dir=str(tmp_path), metric_for_best_model=metric, greater_is_better=not greater, use_cpu=True
    )
    assert chosen.greater_is_better is (not greater)  # the user's choice stands
