"""`mtl-hf predict` and `mtl-hf eval` on a saved model; errors and help."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, TaskSource, decode_image, load_shop_dataset, write_shop_parquet

from .conftest import tiny_vit_config

SHOP_TASKS = ["category", "colour", "tags", "size"]


@pytest.fixture
def saved_model(tmp_path):
    source = TaskSource(load_shop_dataset(8), SHOP_TASKS)
    model = MultiTaskViTModel(
        MultiTaskViTConfig(backbone_config=tiny_vit_config(patch_size=8), tasks=source.task_specs)
    )
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    return folder, model.eval()


@pytest.fixture
def images(tmp_path):
    paths = []
    for index, row in enumerate(load_shop_dataset(3, start=100)):
        path = tmp_path / f"photo{index}.png"
        row["image"].save(path)
        paths.append(path)
    return paths


def test_predict_json_gives_the_models_own_answers(saved_model, images, capsys):
    folder, model = saved_model
    assert cli(["predict", str(folder), *map(str, images), "--json", "--top_k", "2"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [answer["image"] for answer in answers] == [str(path) for path in images]

    transform = ImageTransforms(size=(32, 32))
    with torch.no_grad():
        logits = model(torch.stack([transform(decode_image(str(path))) for path in images])).logits
    for index, answer in enumerate(answers):
        assert answer["schema_version"] == 1
        predictions = answer["answers"]
        probabilities = torch.softmax(logits["category"][index], -1)
        assert len(predictions["category"]["scores"]) == 2
        assert predictions["category"]["label"] == model.config.get_task("category").labels[probabilities.argmax()]
        assert predictions["category"]["scores"][0]["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)
        tag_scores = torch.sigmoid(logits["tags"][index])
        expected_tags = {model.config.get_task("tags").labels[i] for i in torch.nonzero(tag_scores >= 0.5).flatten()}
        assert set(predictions["tags"]["labels"]) == expected_tags
        assert predictions["size"]["value"] == pytest.approx(float(logits["size"][index, 0]), abs=1e-5)


def test_predict_table_lists_every_task_per_image(saved_model, images, capsys):
    folder, _ = saved_model
    assert cli(["predict", str(folder), str(images[0])]) == 0
    out = capsys.readouterr().out
    assert str(images[0]) in out
    for task in SHOP_TASKS:
        assert f"  {task} " in out


def test_wrong_paths_give_a_clear_error_and_exit_code_2(saved_model, images, tmp_path, capsys):
    folder, _ = saved_model
    assert cli(["predict", str(folder), str(tmp_path / "missing.png")]) == 2
    assert "no image file at" in capsys.readouterr().err
    assert cli(["predict", str(tmp_path), str(images[0])]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert cli(["eval", str(folder), str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert cli(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert cli(["predict", str(folder), str(images[0].parent)]) == 2  # a folder of photos: a hint, one line
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mtl-hf predict: error: {images[0].parent} is a folder: give its image files, or tag all of it with "
        "--output OUT (Parquet answers)"
    ]
    assert cli(["predict", str(folder)]) == 2  # no image: one line, not a page of usage
    assert capsys.readouterr().err.strip().splitlines() == [
        "mtl-hf predict: error: the following arguments are required: SOURCE; see `mtl-hf predict --help`"
    ]


def test_eval_scores_every_task_like_the_trainer(saved_model, tmp_path, capsys):
    folder, model = saved_model
    parquet = write_shop_parquet(tmp_path / "data", 40, rows_per_shard=40, seed=3)[0]
    assert cli(["eval", str(folder), str(parquet), "--split", "train", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)

    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = MultiTaskTrainer(model, args, image_transforms=ImageTransforms(size=(32, 32)))
    expected = trainer.predict(TaskSource(str(parquet), SHOP_TASKS), metric_key_prefix="eval").metrics
    for task, metric in [("category", "accuracy"), ("colour", "accuracy"), ("tags", "micro_f1"), ("size", "r2")]:
        assert metrics[f"eval_{task}_{metric}"] == pytest.approx(expected[f"eval_{task}_{metric}"], abs=1e-6)


def test_eval_maps_renamed_columns_and_says_how(saved_model, tmp_path, capsys):
    folder, _ = saved_model
    renamed = (
        load_shop_dataset(16)
        .rename_column("colour", "baseColour")
        .remove_columns(["category", "tags", "size", "pattern"])
    )
    renamed.save_to_disk(str(tmp_path / "renamed"))
    assert cli(["eval", str(folder), str(tmp_path / "renamed"), "--split", "train"]) == 2
    assert "--tasks" in capsys.readouterr().err
    assert (
        cli(
            [
                "eval",
                str(folder),
                str(tmp_path / "renamed"),
                "--split",
                "train",
                "--json",
                "--tasks",
                '{"colour": "baseColour"}',
            ]
        )
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["eval_colour_accuracy"] <= 1.0 and "eval_category_accuracy" not in metrics


def test_help_everywhere(capsys):
    from pathlib import Path

    recipe = str(Path(__file__).resolve().parent.parent / "recipes" / "configs" / "demo.yaml")
    for command in (
        ["--help"],
        ["predict", "--help"],
        ["eval", "--help"],
        ["push", "--help"],
        ["train", "--help"],
        ["compare", "--help"],
        ["prepare", "--help"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            cli(command)
        assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "`mtl-hf train CONFIG.yaml --help` lists every field" in out  # train's summary says where the fields are
    assert "--budget {per-task,total,convergence}" in out and "--image_column IMAGE_COLUMN" in out  # compare, prepare
    with pytest.raises(SystemExit) as exit_info:
        cli(["train", recipe, "--help"])
    assert exit_info.value.code == 0 and "--dataset" in capsys.readouterr().out  # the recipe's own fields


def test_predict_accepts_numpy_and_pil(saved_model):
    from transformers import pipeline

    folder, _ = saved_model
    classify = pipeline("multi-task-image-classification", model=str(folder))
    picture = Image.new("RGB", (48, 40), (200, 30, 30))
    from_pil = classify(picture)
    from_array = classify(np.asarray(picture))
    assert from_pil == from_array


def test_the_command_answers_help_and_argument_errors_before_importing_torch(tmp_path):
    """The `mtl-hf` console script (sys.argv[0] == "mtl-hf") parses, and refuses a typo in one line, without
    importing torch or transformers' modeling code: `import mtl_hf` registers the model with transformers there only
    once a command loads a model. Each case in a fresh interpreter, as a user's shell would start it."""
    import subprocess
    import sys

    (tmp_path / "outputs").mkdir()
    cases = [
        (["--help"], 0, None),
        *(([name, "--help"], 0, None) for name in ("init", "train", "compare", "prepare", "eval", "predict")),
        *(([name, "--help"], 0, None) for name in ("export", "serve", "merge", "push", "calibrate", "audit", "report")),
        (["train", "missing.yaml"], 2, "config file missing.yaml not found"),
        (["compare", "missing.yaml"], 2, "config file missing.yaml not found"),
        (["eval", "outputs/nomodel", "builtin:shop"], 2, "no model folder at outputs/nomodel"),
        (["predict", "outputs/nomodel", "x.jpg"], 2, "no model folder at outputs/nomodel"),
        (["calibrate", "outputs/nomodel", "builtin:shop"], 2, "no model folder at outputs/nomodel"),
        (["audit", "outputs/nomodel", "builtin:shop", "--output", "a"], 2, "no model folder at outputs/nomodel"),
        (["report", "outputs/nomodel", "builtin:shop", "--output", "r.html"], 2, "no model folder at outputs/nomodel"),
        (["serve", "outputs/nomodel"], 2, "no model folder at outputs/nomodel"),
        (["export", "outputs/nomodel", "out"], 2, "no model folder at outputs/nomodel"),
        (["merge", "outputs/nomodel", "out"], 2, "no model folder at outputs/nomodel"),
        (["push", "outputs/nomodel", "shop/tagger"], 2, "is not a saved model folder"),
        (["evalx"], 2, "invalid choice: 'evalx'"),
    ]
    probe = (
        "import sys, json; sys.argv = ['mtl-hf', *json.loads(sys.argv[1])]\n"
        "from mtl_hf.commands.main import main\n"
        "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
        "heavy = sorted(m for m in ('torch', 'transformers.modeling_utils', 'datasets') if m in sys.modules)\n"
        "print(json.dumps({'code': code, 'heavy': heavy}), file=sys.stderr)"
    )
    for argv, code, message in cases:
        result = subprocess.run(
            [sys.executable, "-c", probe, json.dumps(argv)], capture_output=True, text=True, cwd=tmp_path, timeout=60
        )
        report = json.loads(result.stderr.strip().splitlines()[-1])
        assert report == {"code": code, "heavy": []}, (argv, result.stderr[-2000:])
        if message:
            errors = result.stderr.strip().splitlines()[:-1]
            assert len(errors) == 1 and message in errors[0], (argv, errors)
