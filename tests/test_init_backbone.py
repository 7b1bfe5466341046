"""`mtl-hf init` chooses the backbone by the training rows per label, and the pretrained path works end to end: a
tiny checkpoint of each family it proposes or takes, served by the local Hub stand-in on 127.0.0.1 under the real
ids, is named in the recipe, downloaded by `mtl-hf train`, and trained. Nothing is fetched from outside."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import yaml
from transformers import AutoModel, BitImageProcessor, Dinov2Config, ViTConfig, ViTImageProcessor

from mtl_hf.commands import backbone_choice
from mtl_hf.commands.backbone_choice import RowsPerLabel, choose_backbone, rows_per_label
from mtl_hf.commands.main import main as cli
from mtl_hf.data.survey import survey_catalogue
from tests.hub.local_hub import LocalHub
from tests.own_catalogue import write_catalogue
from tests.test_hub import hub_env

INIT = ["--image_column", "image_path", "--tasks", "category,colour,tags,price", "--id_column", "sku"]
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
TRAIN = ["--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "true"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return write_catalogue(tmp_path_factory.mktemp("shop"), 60, broken=False)


def test_rows_per_label_are_counted_on_the_training_rows(catalogue):
    survey = survey_catalogue(
        catalogue,
        {"category": None, "colour": None, "tags": "multilabel", "price": None},
        image_column="image_path",
        id_column="sku",
    )
    import csv

    from mtl_hf.data.tables import DEFAULT_SPLITS, split_of

    rows = [row for row in csv.DictReader(open(catalogue)) if split_of(row["sku"], DEFAULT_SPLITS) == "train"]
    counts = Counter(row["colour"] for row in rows if row["colour"])
    expected = sorted(counts[label] for label in survey.tasks[1].spec.labels)
    found = {entry.task: entry for entry in rows_per_label(survey.tasks)}
    assert set(found) == {"category", "colour", "tags"}  # a regression task has no labels
    assert found["colour"].fewest == expected[0]
    middle = len(expected) // 2
    assert found["colour"].median == (expected[middle - 1] + expected[middle]) / 2  # six colours: an even count
    tags = Counter(tag for row in rows for tag in row["tags"].split("|") if tag)
    assert found["tags"].fewest == min(tags.values())


@pytest.mark.parametrize(
    ("median", "gpu", "expected"),
    [
        (backbone_choice.SCRATCH_ROWS_PER_LABEL, False, ("scratch", None, False)),
        (backbone_choice.SCRATCH_ROWS_PER_LABEL - 1, False, ("pretrained", "facebook/dinov2-small", False)),
        (backbone_choice.SCRATCH_ROWS_PER_LABEL - 1, True, ("pretrained", "facebook/dinov2-base", False)),
        (backbone_choice.LP_FT_ROWS_PER_LABEL - 1, False, ("pretrained", "facebook/dinov2-small", True)),
    ],
)
def test_the_rule_decides_by_the_smallest_median(median, gpu, expected):
    per_label = [RowsPerLabel("colour", 1, median), RowsPerLabel("category", 5, median + 500)]
    choice = choose_backbone(per_label, "auto", gpu=gpu)
    assert (choice.start, choice.name, choice.lp_ft) == expected
    assert f"'colour' has a median of {median:g} training rows per label" in choice.reason
    assert choose_backbone(per_label, "scratch", gpu=gpu).start == "scratch"


def serve_tiny_checkpoints(hub: LocalHub) -> None:
    """A tiny DINOv2 and a tiny ViT, each with the image processor its family publishes, under the real ids."""
    families = {
        "facebook/dinov2-small": (
            Dinov2Config(image_size=32, patch_size=8, **TOWER),
            BitImageProcessor(
                size={"shortest_edge": 36},
                crop_size={"height": 32, "width": 32},
                do_center_crop=True,
                image_mean=[0.485, 0.456, 0.406],
                image_std=[0.229, 0.224, 0.225],
            ),
        ),
        "google/vit-base-patch16-224-in21k": (
            ViTConfig(image_size=32, patch_size=8, **TOWER),
            ViTImageProcessor(size={"height": 32, "width": 32}),
        ),
    }
    for repo_id, (config, processor) in families.items():
        AutoModel.from_config(config).save_pretrained(hub.repo_folder(repo_id))
        processor.save_pretrained(hub.repo_folder(repo_id))


def mtl_hf(arguments, hub, tmp_path):
    return subprocess.run(
        [sys.executable, "-m", "mtl_hf", *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        env=hub_env(hub, tmp_path),
        cwd=tmp_path,
    )


@pytest.mark.parametrize(("backbone", "model_type"), [("auto", "dinov2"), ("google/vit-base-patch16-224-in21k", "vit")])
def test_the_pretrained_recipe_trains_from_the_hub(catalogue, tmp_path, backbone, model_type):
    with LocalHub(tmp_path / "hub") as hub:
        serve_tiny_checkpoints(hub)
        init = mtl_hf(["init", str(catalogue), *INIT, "--backbone", backbone], hub, tmp_path)
        assert init.returncode == 0, init.stderr[-3000:]
        recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
        name = "facebook/dinov2-small" if backbone == "auto" else backbone
        assert recipe["backbone"] == name and "backbone_config" not in recipe
        # A ViT-B steps less, and its lower blocks less again, than a ViT-S.
        expected = (1e-4, 0.75) if backbone == "auto" else (5e-5, 0.65)
        assert (recipe["learning_rate"], recipe["layer_decay"], recipe["head_learning_rate"]) == (*expected, 1e-3)
        # 60 rows: a handful per label, so the heads learn on the frozen backbone first.
        assert recipe["freeze_backbone"] is True and recipe["unfreeze_backbone_at_step"] >= 1
        assert f"backbone: {name}, because " in init.stdout and "'colour' has a median of" in init.stdout
        assert "cannot be reached" not in init.stdout

        train = mtl_hf(["train", "recipe.yaml", *TRAIN, "--unfreeze_backbone_at_step", "1"], hub, tmp_path)
        assert train.returncode == 0, train.stderr[-3000:]
    downloaded = {request["path"] for request in hub.requests if request["method"] == "GET"}
    assert any(path.startswith(f"/{name}/resolve/") and path.endswith("/model.safetensors") for path in downloaded)
    config = yaml.safe_load((tmp_path / "outputs" / "products" / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == model_type


def test_a_backbone_the_hub_does_not_have_is_refused_before_anything(catalogue, tmp_path):
    with LocalHub(tmp_path / "hub") as hub:
        serve_tiny_checkpoints(hub)
        init = mtl_hf(["init", str(catalogue), *INIT, "--backbone", "facebook/dinov3-tiny"], hub, tmp_path)
        assert init.returncode == 2 and not (tmp_path / "recipe.yaml").exists()
        assert init.stderr.strip().splitlines() == [
            "mtl-hf init: error: --backbone facebook/dinov3-tiny: no such model on the Hub (HTTP 404); check the name "
            "(owner/name)"
        ]
        # A recipe naming one is refused in one line before training, too.
        assert mtl_hf(["init", str(catalogue), *INIT], hub, tmp_path).returncode == 0
        text = (tmp_path / "recipe.yaml").read_text().replace("facebook/dinov2-small", "facebook/dinov3-tiny")
        (tmp_path / "recipe.yaml").write_text(text)
        train = mtl_hf(["train", "recipe.yaml", *TRAIN], hub, tmp_path)
    assert train.returncode == 2, train.stderr[-2000:]
    assert (
        train.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "no model facebook/dinov3-tiny on the Hub (" + hub.endpoint + " answered HTTP 404) and no local folder of "
            "that name: check the name (owner/name, as on its Hub page)"
        )
    )
    assert not list((tmp_path / "outputs").rglob("*.safetensors"))  # nothing trained


def test_offline_init_says_in_one_line_what_scratch_needs(catalogue, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["init", str(catalogue), *INIT]) == 0  # the tests run with HF_HUB_OFFLINE=1
    notes = [line for line in capsys.readouterr().out.splitlines() if "cannot be reached" in line]
    assert len(notes) == 1
    assert f"needs about {backbone_choice.SCRATCH_ROWS_PER_LABEL} training rows per label" in notes[0]
    assert "--backbone scratch" in notes[0]
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["backbone"] == "facebook/dinov2-small"


def test_a_task_with_one_label_in_its_training_rows_is_refused(tmp_path, monkeypatch, capsys):
    import csv

    table = write_catalogue(tmp_path / "shop", 40, broken=False)
    rows = list(csv.DictReader(open(table)))
    from mtl_hf.data.tables import DEFAULT_SPLITS, split_of

    for row in rows:  # red in every training row; blue only in a held-out one
        row["colour"] = "red" if split_of(row["sku"], DEFAULT_SPLITS) == "train" else "blue"
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.chdir(tmp_path)
    assert cli(["init", str(table), *INIT]) == 2
    error = capsys.readouterr().err.strip()
    assert error.splitlines() == [
        "mtl-hf init: error: task 'colour' has only 'red' in its training rows: nothing to learn; leave it out of "
        "--tasks, or add rows with its other labels"
    ]
    assert not (tmp_path / "recipe.yaml").exists()


def test_a_named_checkpoints_size_comes_from_its_name():
    sizes = {name: backbone_choice.size_of(name) for name in backbone_choice.PRETRAINED.values()}
    assert sizes == {"facebook/dinov2-small": "small", "facebook/dinov2-base": "base"}
    assert backbone_choice.size_of("google/vit-large-patch16-224") == "base"
    assert backbone_choice.size_of("WinKawaii/vit-small-patch16-224") == "small"
    assert backbone_choice.size_of("facebook/deit-tiny-patch16-224") == "small"
    assert backbone_choice.size_of("outputs/baseline") == "small"  # "baseline" is not "base"
