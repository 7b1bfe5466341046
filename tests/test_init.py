"""`mtl-hf init`: a shop's own table read as training reads it, and a recipe written from it that trains."""

import csv
import json

import pytest
import yaml

from mtl_hf.commands.init import bad_photo_limit, epochs_for
from mtl_hf.commands.main import main as cli
from mtl_hf.commands.prepare.catalogue import parse_tasks
from mtl_hf.data.survey import survey_catalogue
from mtl_hf.data.tables import DEFAULT_SPLITS, split_of
from mtl_hf.errors import UserError
from tests.conftest import SMALLEST_VIT
from tests.own_catalogue import FIELDS, write_catalogue

INIT = ["--image_column", "image_path", "--tasks", "category,colour,tags,price", "--id_column", "sku"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return write_catalogue(tmp_path_factory.mktemp("shop"), 60)  # rows 3 and 11 missing, 19 truncated, 27 HTML


def test_the_recipe_holds_what_the_table_holds(catalogue, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["init", str(catalogue), *INIT]) == 0
    out = capsys.readouterr().out
    recipe = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    rows = list(csv.DictReader(open(catalogue)))

    assert (recipe["dataset"], recipe["image_column"], recipe["id_column"]) == (str(catalogue), "image_path", "sku")
    for task in ("category", "colour"):
        assert recipe["tasks"][task] == {
            "column": task,
            "type": "classification",
            "labels": sorted({row[task] for row in rows if row[task]}),
        }
    assert recipe["tasks"]["tags"] == {
        "column": "tags",
        "type": "multilabel",
        "labels": sorted({tag for row in rows for tag in row["tags"].split("|") if tag}),
    }
    assert recipe["tasks"]["price"] == {"column": "price", "type": "regression"}

    splits = [split_of(row["sku"], DEFAULT_SPLITS) for row in rows]
    counts = {name: splits.count(name) for name in ("train", "validation", "test")}
    assert f"{len(rows)} rows; splits by a hash of each row's 'sku'" in out
    assert ", ".join(f"{name} {count}" for name, count in counts.items()) in out
    blank = sum(1 for row in rows if not row["colour"])
    assert f"colour: classification, 6 labels, {blank} blank" in out
    assert "2 photo(s) not found, e.g. " + str(catalogue.parent / "photos" / "p0003.jpg") in out
    assert "decoded all 58 photos that exist: 2 do not decode, e.g. " in out
    assert str(catalogue.parent / "photos" / "p0019.jpg") in out
    # 2 of 60 rows missing + 2 broken: 6.7%, so the run may meet up to 14% before it stops.
    assert "missing or broken: 6.7% of the rows; max_bad_image_fraction 0.14" in out
    assert recipe["bad_image_policy"] == "skip" and recipe["max_bad_image_fraction"] == 0.14
    assert recipe["num_train_epochs"] == epochs_for(counts["train"] - 2)
    assert out.strip().endswith("wrote recipe.yaml; next: mtl-hf train recipe.yaml")


def test_the_recipe_trains_and_the_test_split_is_left_for_eval(catalogue, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        cli(["init", str(catalogue), *INIT, "--image_size", "32", "--output", "shop.yaml", "--backbone", "scratch"])
        == 0
    )
    overrides = ["--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--use_cpu", "true"]
    overrides += ["--backbone_config", json.dumps({"model_type": "vit", **SMALLEST_VIT})]
    assert cli(["train", "shop.yaml", *overrides]) == 0
    model = tmp_path / "outputs" / catalogue.stem
    config = json.loads((model / "config.json").read_text())
    assert [(record["split"], record["split_by"]) for record in config["training_data"]] == [
        ("train", {"id_column": "sku", "fractions": DEFAULT_SPLITS})
    ]
    capsys.readouterr()
    assert cli(["eval", str(model), str(catalogue), "--split", "test", "--image_column", "image_path", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training_rows"] == 0


def test_init_refuses_in_one_line(catalogue, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("mine\n")
    assert cli(["init", str(catalogue), *INIT]) == 2
    assert "--output recipe.yaml exists" in capsys.readouterr().err
    assert (tmp_path / "recipe.yaml").read_text() == "mine\n"  # nothing lost

    cases = {
        ("--tasks", "category,style"): f"no column 'style'; the columns are {FIELDS}",
        ("--tasks", "tags:multi"): "--tasks: task 'tags' has type 'multi'; use one of classification, multilabel",
        ("--image_column", "photo"): "no column 'photo'",
        ("--image_size", "50"): "--image_size 50: give a multiple of 8",
    }
    for (flag, value), message in cases.items():
        arguments = [*INIT, "--output", "new.yaml", "--image_size", "64"]
        arguments[arguments.index(flag) + 1] = value
        assert cli(["init", str(catalogue), *arguments]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error
        assert not (tmp_path / "new.yaml").exists()


def test_the_survey_reads_types_the_data_cannot_tell_and_flags_quantities(tmp_path):
    from PIL import Image

    table = tmp_path / "t.csv"
    for index in range(39):  # p39.jpg is missing
        Image.new("RGB", (8, 8), "white").save(tmp_path / f"p{index}.jpg")
    with open(table, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["photo", "labels", "stock", "brand"])
        for index in range(40):
            writer.writerow([f"p{index}.jpg", "a|b" if index % 3 else "c", index * 7, "acme" if index else "rare"])
    survey = survey_catalogue(table, dict(parse_tasks("labels,stock,brand")), image_column="photo")
    by_name = {task.spec.name: task for task in survey.tasks}
    assert by_name["labels"].spec.type == "multilabel" and by_name["labels"].spec.labels == ["a", "b", "c"]
    assert by_name["stock"].spec.type == "classification" and len(by_name["stock"].spec.labels) == 40
    assert any("if it is a quantity, make the task `type: regression`" in note for note in by_name["stock"].notes)
    assert by_name["brand"].notes == ["task 'brand': label(s) ['rare'] on fewer than 5 rows each"]
    assert len(survey.missing_photos) == 1 and survey.photos_checked == survey.photos_present == 39

    typed = survey_catalogue(table, dict(parse_tasks("stock:regression")), image_column="photo")
    assert typed.tasks[0].spec.type == "regression" and typed.tasks[0].notes == []
    with pytest.raises(UserError, match="--tasks ' , ': an empty task name"):
        parse_tasks(" , ")
    with pytest.raises(UserError, match="--tasks names 'stock' twice"):  # two surveys of one column
        parse_tasks("stock,brand,stock")


def test_init_decodes_every_photo_or_says_which_sample_it_decoded(tmp_path, monkeypatch, capsys):
    """Broken photos past row 500 (where init once stopped decoding) are found; past the decode limit a seeded
    random sample is decoded and its size, share and the 95% bound of the broken share are printed; the limit
    written comes from the share of rows found, not of the first photos."""
    from PIL import Image

    from mtl_hf.data import survey as survey_module

    rows = []
    for index in range(530):
        name = f"p{index:03d}.png"
        if index in (510, 520):
            (tmp_path / name).write_bytes(b"<html>not found</html>")
        else:
            Image.new("RGB", (4, 4), (index % 256, 0, 0)).save(tmp_path / name)
        rows.append({"image": name, "kind": "ab"[index % 2]})
    with open(tmp_path / "t.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, ["image", "kind"])
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.chdir(tmp_path)
    assert cli(["init", "t.csv", "--image_column", "image", "--tasks", "kind"]) == 0
    out = capsys.readouterr().out
    assert "decoded all 530 photos that exist: 2 do not decode, e.g. " in out and "p510.png" in out
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text())["max_bad_image_fraction"] == 0.01  # 2 x 0.38%

    sampling = ["--decode_limit", "100", "--output", "sampled.yaml"]
    assert cli(["init", "t.csv", "--image_column", "image", "--tasks", "kind", *sampling]) == 0
    out = capsys.readouterr().out
    sampled = survey_catalogue(tmp_path / "t.csv", {"kind": None}, image_column="image", decode_limit=100)
    assert sampled.sampled and sampled.photos_checked == 100 and sampled.photos_present == 530
    broken = len(sampled.unreadable_photos)
    assert "decoded a random sample of 100 of the 530 photos that exist (19%, seeded)" in out
    bound = survey_module.wilson_upper_bound(broken, 100)  # nothing missing: the broken share's bound alone
    assert f"at most {bound:.1%} (95% bound)" in out
    assert yaml.safe_load((tmp_path / "sampled.yaml").read_text())["max_bad_image_fraction"] == bad_photo_limit(bound)


def test_init_refuses_a_table_whose_photos_cannot_be_read_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a photo")
    (tmp_path / "t.csv").write_text("image,kind\nbroken.png,a\nmissing.png,b\n")
    assert cli(["init", "t.csv", "--image_column", "image", "--tasks", "kind"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "none of the photos in 'image' can be read (1 not found, 1 of 1 checked" in error[0]
    assert not (tmp_path / "recipe.yaml").exists()


def test_epochs_and_the_bad_photo_limit():
    assert [epochs_for(rows) for rows in (50, 250, 2_000, 1_000_000)] == [100, 80, 10, 3]
    assert [bad_photo_limit(share) for share in (0.0, 0.004, 0.0125, 0.2)] == [0.01, 0.01, 0.03, 0.4]


def test_eval_skips_and_counts_broken_photos_by_reason_or_stops_at_the_first(catalogue, tmp_path, capsys):
    """`mtl-hf eval` scores a split holding missing and broken photos: each is left out and counted by the error
    that kept it out, and the table says how many rows were scored; --bad_image_policy raise stops at the first,
    naming it. The model (any model with the catalogue's tasks) was never trained on this table."""
    from mtl_hf import MultiTaskViTConfig, MultiTaskViTModel
    from mtl_hf.data import ImageTransforms
    from mtl_hf.data.survey import survey_catalogue
    from tests.conftest import tiny_vit_config

    survey = survey_catalogue(catalogue, dict(parse_tasks("category,colour,tags,price")), image_column="image_path")
    model = MultiTaskViTModel(
        MultiTaskViTConfig(backbone_config=tiny_vit_config(patch_size=8), tasks=[task.spec for task in survey.tasks])
    )
    model.save_pretrained(tmp_path / "model")
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(tmp_path / "model")
    rows = list(csv.DictReader(open(catalogue)))
    broken = {3: "FileNotFoundError", 11: "FileNotFoundError", 19: None, 27: None}  # 19 truncated, 27 an HTML page
    by_split = {
        name: [i for i, row in enumerate(rows) if split_of(row["sku"], DEFAULT_SPLITS) == name]
        for name in DEFAULT_SPLITS
    }
    split = max(by_split, key=lambda name: len(set(by_split[name]) & set(broken)))
    in_split = sorted(set(by_split[split]) & set(broken))
    assert in_split, "the catalogue's broken rows fall in some split"
    command = [
        "eval",
        str(tmp_path / "model"),
        str(catalogue),
        "--split",
        split,
        "--image_column",
        "image_path",
        "--id_column",
        "sku",
    ]
    capsys.readouterr()
    assert cli([*command, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    skipped = {key.removeprefix("eval_skipped_"): n for key, n in metrics.items() if key.startswith("eval_skipped_")}
    assert sum(skipped.values()) == len(in_split)
    assert skipped.get("FileNotFoundError", 0) == sum(broken[i] == "FileNotFoundError" for i in in_split)
    assert metrics["eval_rows_scored"] == len(by_split[split]) - len(in_split)
    assert cli(command) == 0
    out = capsys.readouterr().out
    assert (
        f"{len(by_split[split]) - len(in_split)} of {len(by_split[split])} rows scored ({len(in_split)} left out: "
        in out
    )
    assert cli([*command, "--bad_image_policy", "raise"]) == 2
    # (progress bars share the line's start on stderr)
    errors = [line for line in capsys.readouterr().err.splitlines() if "mtl-hf eval: error:" in line]
    assert len(errors) == 1 and f"p{in_split[0]:04d}.jpg" in errors[0], errors  # the first, named
