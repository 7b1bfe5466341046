"""What a newcomer hits: one-line errors (exit code 2) instead of tracebacks, no silent wrong results, nothing lost.

CLI cases run `mtl-hf` / `recipes/train.py` in this process (`in_process`) and assert the exit code and that
stderr holds one line; a subprocess is used where the process itself is the point (its start-up time, its exit,
two launchers compared).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import yaml
from PIL import Image

from mtl_hf.commands.main import main as cli
from mtl_hf.commands.recipe import parse_recipe as parse_args
from mtl_hf.commands.train import main as train_main
from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource, load_shop_dataset
from mtl_hf.utils.output_dir import LOCK_FILE
from tests.conftest import SMALLEST_VIT

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}


def run_command(*arguments, timeout=300):
    return subprocess.run(
        [sys.executable, *arguments], env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def in_process(capsys, *command) -> subprocess.CompletedProcess:
    """`mtl-hf ...` or `recipes/train.py ...` run in this process, as a finished process would report it."""
    capsys.readouterr()
    if command[0] == "recipes/train.py":
        try:
            train_main(list(command[1:]), prog="recipes/train.py")
            code = 0
        except SystemExit as exit:
            code = exit.code
    else:
        code = cli(list(command))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(command, code, captured.out, captured.err)


def one_line_error(result, prefix: str) -> str:
    """The error line; asserts exit code 2, no traceback, and that the error is the last line of stderr."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), last
    return last


@pytest.fixture
def tiny_digits(tmp_path):
    """The digits recipe cut to a few steps, saving a checkpoint at the end."""
    values = yaml.safe_load((ROOT / "recipes" / "configs" / "digits.yaml").read_text())
    values.update(
        num_train_epochs=1,
        max_train_rows=128,
        max_eval_rows=64,
        output_dir=str(tmp_path / "digits"),
        save_strategy="epoch",
        disable_tqdm=True,
        logging_steps=1,
    )
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def saved_files(folder: Path) -> dict[Path, int]:
    """Every file's modification time, but the run lock's (each run takes the lock and writes its pid)."""
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file() and path.name != LOCK_FILE}


@pytest.fixture
def saved_model(tiny_digits, tmp_path):
    assert cli(["train", str(tiny_digits)]) == 0
    return tmp_path / "digits"


# -- silent wrong results -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "flag", "closest"),
    [
        (["recipes/train.py", "{config}", "--learning_rat", "1e-3"], "--learning_rat", "--learning_rate"),
        (["train", "{config}", "--num_train_epoch", "1"], "--num_train_epoch", "--num_train_epochs"),
        (["predict", "{model}", "x.png", "--top", "2"], "--top", "--top_k"),
        (["eval", "{model}", "builtin:digits", "--max_row", "5"], "--max_row", "--max_rows"),
    ],
)
def test_abbreviated_or_unknown_flags_are_refused_naming_the_closest(
    tiny_digits, tmp_path, command, flag, closest, capsys
):
    command = [part.format(config=tiny_digits, model=tmp_path) for part in command]
    prefix = command[0] if command[0] == "recipes/train.py" else f"mtl-hf {command[0]}"
    line = one_line_error(in_process(capsys, *command), prefix)
    assert flag in line and f"did you mean {closest}?" in line


def test_negative_numbers_parse_as_values(tiny_digits):
    _, _, args = parse_args([str(tiny_digits), "--learning_rate", "-1e-3", "--weight_decay", "-0.5"])
    assert args.learning_rate == -1e-3 and args.weight_decay == -0.5


def test_eval_with_a_task_mapped_to_a_missing_column_names_it(saved_model, capsys):
    result = in_process(capsys, "eval", str(saved_model), "builtin:digits", "--tasks", '{"digit": "digt"}')
    line = one_line_error(result, "mtl-hf eval: error:")
    assert "no column(s) ['digt']" in line and "'digit'" in line and "its columns are" in line


def test_a_second_run_into_a_used_output_dir_stops_and_says_how_to_resume(saved_model, tiny_digits, capsys):
    before = saved_files(saved_model)
    line = one_line_error(in_process(capsys, "recipes/train.py", str(tiny_digits)), "recipes/train.py: error:")
    assert "holds a previous run's checkpoints (checkpoint-2)" in line
    assert "--resume_from_checkpoint true" in line and "--overwrite_output_dir true" in line
    assert saved_files(saved_model) == before

    # Asked explicitly: the old checkpoints go, the new run's take their place.
    assert cli(["train", str(tiny_digits), "--overwrite_output_dir", "true", "--max_steps", "1"]) == 0
    assert sorted(path.name for path in saved_model.glob("checkpoint-*")) == ["checkpoint-1"]


def test_resuming_a_finished_run_changes_nothing(saved_model, tiny_digits, capsys):
    before = saved_files(saved_model)
    assert cli(["train", str(tiny_digits), "--resume_from_checkpoint", "true"]) == 0
    assert "is complete (" in capsys.readouterr().out
    assert saved_files(saved_model) == before


def test_a_failed_push_leaves_the_local_card_unchanged(saved_model, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at start-up
    card = (saved_model / "README.md").read_bytes()
    result = in_process(capsys, "push", str(saved_model), "someone/shop-tagger")  # offline: fails
    one_line_error(result, "mtl-hf push: error:")
    assert (saved_model / "README.md").read_bytes() == card


# -- nothing lost -------------------------------------------------------------------------------------


def image_folder_with_a_truncated_eval_image(folder: Path) -> Path:
    rows = load_shop_dataset(48)
    for split, indices in [("train", range(0, 32)), ("validation", range(32, 48))]:
        for index in indices:
            row = rows[index]
            path = (
                folder
                / split
                / rows.features["category"].int2str(row["category"] if row["category"] is not None else 0)
                / f"photo{index}.png"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            row["image"].save(path)
    broken = sorted((folder / "validation").rglob("*.png"))[3]
    broken.write_bytes(broken.read_bytes()[:60])  # a download cut short
    return broken


def test_an_evaluation_failure_keeps_the_trained_model_and_names_the_file(tmp_path, capsys):
    broken = image_folder_with_a_truncated_eval_image(tmp_path / "photos")
    config = tmp_path / "photos.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": str(tmp_path / "photos"),
                "tasks": {"category": "label"},
                "eval_split": "validation",
                "backbone_config": SMALLEST_VIT,
                "output_dir": str(tmp_path / "out"),
                "max_steps": 2,
                "per_device_train_batch_size": 8,
                "report_to": "none",
                "use_cpu": True,
                "disable_tqdm": True,
            }
        )
    )
    line = one_line_error(in_process(capsys, "recipes/train.py", str(config)), "recipes/train.py: error:")
    assert f"(file {broken})" in line and "cannot decode the image" in line
    assert (tmp_path / "out" / "model.safetensors").is_file()  # saved before the evaluation failed


# -- one-line errors, no Hub detours for local typos -----------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        ["eval", "outputs/nomodel", "builtin:shop"],
        ["eval", "./nomodel", "builtin:shop"],
        ["predict", "/abs/nope", "photo.png"],
        ["eval", "{model}", "./nodata"],
        ["eval", "{model}", "/abs/nodata"],
    ],
)
def test_a_missing_local_path_is_one_line_naming_it(saved_model, arguments, capsys):
    arguments = [argument.format(model=saved_model) for argument in arguments]
    missing = next(a for a in arguments[1:] if "no" in Path(a).name and not a.startswith(str(saved_model)))
    line = one_line_error(in_process(capsys, *arguments), f"mtl-hf {arguments[0]}: error:")
    assert missing in line, line
    assert "local" in line or "Hub" in line  # says which of the two it tried


def test_a_missing_model_is_reported_within_seconds_by_a_fresh_process():
    started = time.monotonic()
    result = run_command("-m", "mtl_hf", "eval", "outputs/nomodel", "builtin:shop", timeout=60)
    line = one_line_error(result, "mtl-hf eval: error:")
    assert "outputs/nomodel" in line
    assert time.monotonic() - started < 20  # the interpreter's start included; no Hub retries


def test_recipe_errors_are_one_line(tiny_digits, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_digits.read_text() + "\nlearning_rat: 0.1\n")
    line = one_line_error(in_process(capsys, "recipes/train.py", str(bad)), "recipes/train.py: error:")
    assert "unknown argument(s) ['learning_rat']" in line
    flags = ["--weighting", "gradnorm"]
    line = one_line_error(in_process(capsys, "recipes/train.py", str(tiny_digits), *flags), "recipes/train.py: error:")
    assert "unknown weighting 'gradnorm'" in line
    flags = ["--dataset", "./nodata"]
    line = one_line_error(in_process(capsys, "recipes/train.py", str(tiny_digits), *flags), "recipes/train.py: error:")
    assert "no data at ./nodata" in line
    # A real process too: the recipe script's own exit code and its one line.
    line = one_line_error(run_command("recipes/train.py", str(bad)), "recipes/train.py: error:")
    assert "unknown argument(s) ['learning_rat']" in line


def test_predict_on_a_file_that_is_not_an_image_names_it(saved_model, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    line = one_line_error(in_process(capsys, "predict", str(saved_model), str(notes)), "mtl-hf predict: error:")
    assert str(notes) in line and "cannot decode the image" in line


# -- the model card ---------------------------------------------------------------------------------------


def test_the_card_shows_chance_scores_and_says_the_data_is_synthetic(tmp_path):
    out = tmp_path / "demo"
    flags = [
        "--dataset_options",
        '{"num_rows": 256, "eval_rows": 64}',
        "--max_steps",
        "2",
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--save_strategy",
        "no",
        "--eval_strategy",
        "no",
    ]
    assert cli(["train", str(ROOT / "recipes" / "configs" / "demo.yaml"), *flags]) == 0
    card = (out / "README.md").read_text()
    chance = json.loads((out / "eval_chance_results.json").read_text())
    assert "| task | type | outputs | metric | score | chance |" in card
    assert f"| {chance['eval_category_accuracy']:.4f} |" in card
    assert "synthetic product photos drawn by mtl_hf at 32 px" in card


def test_a_truncated_png_names_its_file(tmp_path):
    from mtl_hf.data import ImageTransforms, MultiTaskCollator, TaskSource

    broken = image_folder_with_a_truncated_eval_image(tmp_path / "photos")
    source = TaskSource(str(tmp_path / "photos"), {"category": "label"}, split="validation")
    collator = MultiTaskCollator(source.task_specs, ImageTransforms(size=(32, 32)))
    with pytest.raises(ValueError, match=f"\\(file {broken}\\): cannot decode the image"):
        collator(source.rows(range(len(source.dataset))))
    Image.open(sorted((tmp_path / "photos" / "validation").rglob("*.png"))[0]).verify()  # the others are fine


def test_a_stream_left_open_at_exit_closes_without_a_warning(tmp_path):
    """A half-read streaming source held until interpreter exit: datasets' Parquet reader must be
    closed while pyarrow is still importable, or Python prints 'Exception ignored in ... ArrowInvalid'."""
    script = f"""
from mtl_hf.data import MultiTaskCollator, ImageTransforms, TaskMixture, TaskSource, write_shop_parquet
write_shop_parquet({str(tmp_path / "shards")!r}, 2000, rows_per_shard=1000)
source = TaskSource({str(tmp_path / "shards")!r}, ["category"], streaming=True)
mixture = TaskMixture([source], batch_size=8, seed=0, shuffle_buffer_size=64)
batches = iter(mixture.dataloader(MultiTaskCollator(mixture.task_specs, ImageTransforms(size=(32, 32)))))
print(next(batches)["pixel_values"].shape)
"""
    result = run_command("-c", script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([8, 3, 32, 32])" in result.stdout
    assert "Exception ignored" not in result.stderr, result.stderr[-2000:]


def test_mtl_hf_train_and_accelerate_launch_give_identical_weights_at_the_same_threads(tiny_digits, tmp_path):
    """The README's two ways of running a recipe are one recipe. Their scores differ only when their
    thread counts do: `accelerate launch` without a config sets OMP_NUM_THREADS=1 (unless it is set),
    and float sums in another order round differently."""
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    weights = {}
    for name, launcher in [
        ("cli", ["-m", "mtl_hf", "train"]),
        ("accelerate", ["-m", "accelerate.commands.launch", "recipes/train.py"]),
    ]:
        output = tmp_path / name
        command = [sys.executable, *launcher, str(tiny_digits), "--output_dir", str(output), "--max_eval_rows", "16"]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "CPU threads per process: 1" in result.stderr  # the recipe says how many threads it computes with
        weights[name] = (output / "model.safetensors").read_bytes()
    assert weights["cli"] == weights["accelerate"]


def test_a_broken_row_in_a_held_out_split_is_named_by_its_row_in_the_source(tmp_path):
    from mtl_hf.data.selection import hold_out

    rows = load_shop_dataset(40)
    broken_row = 17
    error_page = {"bytes": b"<html>404</html>", "path": None}  # a shop's error page saved as the photo
    table = rows.cast_column("image", datasets.Image(decode=False)).map(
        lambda row, index: {"image": error_page if index == broken_row else row["image"]}, with_indices=True
    )
    source = TaskSource(table, ["category"], name="photos")
    train, held_out = hold_out(source, 0.5, seed=0)
    assert sorted(train.row_numbers + held_out.row_numbers) == list(range(40))
    part = held_out if broken_row in held_out.row_numbers else train
    collator = MultiTaskCollator(part.task_specs, ImageTransforms(size=(32, 32)))
    with pytest.raises(ValueError, match=rf"source 'photos\w*', row {broken_row}: cannot decode the image"):
        collator(part.rows(range(part.num_rows)))
    # A selection of a selection keeps the source's numbering.
    assert part.with_tasks(["category"]).row_numbers == part.row_numbers


def test_a_key_given_twice_in_a_recipe_is_refused_naming_both_lines(tiny_digits, tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("learning_rate: 0.1\n" + tiny_digits.read_text())  # the file sets learning_rate again below
    with pytest.raises(ValueError, match=r"twice\.yaml: 'learning_rate' is set twice \(lines 1 and \d+\)"):
        parse_args([str(twice)])


def test_trainer_resuming_a_finished_run_trains_nothing_and_restores_its_weights(tmp_path):
    from mtl_hf import MultiTaskTrainer
    from tests.training_helpers import arguments, assert_same_parameters, new_model, shop_source

    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    finished = MultiTaskTrainer(new_model(shop_source()), args, train_dataset=shop_source())
    finished.train()
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    again = MultiTaskTrainer(new_model(shop_source(), seed=1), args, train_dataset=shop_source())
    output = again.train(resume_from_checkpoint=True)
    assert output.global_step == 4 and again.state.global_step == 4
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()} == before
    assert_same_parameters(again.model, finished.model, rtol=0, atol=0)  # the checkpoint's weights, not seed 1's


def test_a_second_make_demo_is_one_line_without_a_traceback(tmp_path):
    printed = subprocess.run(
        ["make", "-s", "-n", "demo", f"BIN={Path(sys.executable).parent}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    launch = printed[printed.index(str(Path(sys.executable).parent / "accelerate")) :].replace("\\\n", " ")
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    (tmp_path / "outputs" / "demo").mkdir(parents=True)
    (tmp_path / "outputs" / "demo" / "config.json").write_text("{}")  # the first run's model
    result = subprocess.run(["bash", "-c", launch], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert (
        "recipes/train.py: error: output_dir outputs/demo holds a previous run's saved model: choose another "
        "--output_dir, or pass --overwrite_output_dir true to replace it"
    ) in result.stderr.splitlines()
