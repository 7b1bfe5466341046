"""Calibrated confidences: the expected calibration error and the thresholds against values worked out by hand,
the temperature fit against a known temperature, the config field, every answering path applying it, and an
over-confident model on real scans (the digits) whose held-out ECE falls while its answers stay as they were."""

import csv
import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from transformers import pipeline

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, TaskSource, load_digits_dataset
from mtl_hf.data.builtin.tables import write_catalogue_table
from mtl_hf.data.selection import first_rows
from mtl_hf.errors import UserError
from mtl_hf.inference.answers import answer_columns, answers_by_row
from mtl_hf.inference.review import review_cuts
from mtl_hf.metrics.calibration import (
    best_thresholds,
    expected_calibration_error,
    fit_temperature,
    fitted_calibration,
)
from mtl_hf.metrics.selective import answer_confidence, answer_right, review_cut
from mtl_hf.models.mtl_vit.configuration_mtl_vit import TaskSpec
from tests.compat.answering import THIS_VENV, answer_without_mtl_hf
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments

CLASSES = TaskSpec.from_dict({"name": "kind", "type": "classification", "labels": ["a", "b", "c"]})
LABELS = TaskSpec.from_dict({"name": "tags", "type": "multilabel", "labels": ["x", "y"]})
MISSING = -100


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


def test_classification_ece_is_the_binned_gap_worked_out_by_hand():
    # Top confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.5 (right), and a row without a target (ignored).
    probabilities = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.25, 0.25, 0.5], [0.98, 0.01, 0.01]]
    targets = [0, 1, 1, 2, MISSING]
    # Bins of 1/15: 0.9 in (0.867, 0.933], 0.6 in (0.533, 0.6], 0.5 in (0.467, 0.533].
    by_hand = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.6) + 1 / 4 * abs(1 - 0.5)
    ece = expected_calibration_error(CLASSES, np.log(probabilities), np.array(targets))
    assert ece == pytest.approx(by_hand, abs=1e-6)


def test_multilabel_ece_bins_every_known_label_score():
    scores = [[0.8, 0.1], [0.3, 0.95], [0.7, 0.5]]
    targets = np.array([[1, 0], [1, 1], [MISSING, MISSING]])
    by_hand = (abs(1 - 0.8) + abs(0 - 0.1) + abs(1 - 0.3) + abs(1 - 0.95)) / 4  # one known pair a bin
    assert expected_calibration_error(LABELS, logit(scores), targets) == pytest.approx(by_hand, abs=1e-6)


def test_the_fitted_temperature_is_the_one_that_drew_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 3))
    drawn = torch.softmax(torch.from_numpy(logits / 2.5), -1).numpy()
    targets = np.array([rng.choice(3, p=row) for row in drawn])
    assert fit_temperature(CLASSES, logits, targets) == pytest.approx(2.5, rel=0.05)
    ml_logits = rng.normal(0, 4, (10_000, 2))
    ml_targets = (rng.random((10_000, 2)) < 1 / (1 + np.exp(-ml_logits / 0.5))).astype(np.float32)
    assert fit_temperature(LABELS, ml_logits, ml_targets) == pytest.approx(0.5, rel=0.05)


def test_thresholds_are_the_ones_worked_out_by_hand():
    spec = TaskSpec.from_dict({"name": "tags", "type": "multilabel", "labels": ["x", "none", "hard"]})
    scores = np.array(
        [[0.9, 0.9, 0.9], [0.8, 0.8, 0.5], [0.7, 0.7, 0.1], [0.6, 0.6, 0.1], [0.3, 0.3, 0.1], [0.2, 0.2, 0.1],
         [0.99, 0.99, 0.99]]
    )  # fmt: skip
    targets = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0], [MISSING, 0, MISSING]])
    # Label x, cuts (precision, recall, F1): 0.9 (1, 1/3, .5), 0.8 (1, 2/3, .8), 0.7 (2/3, 2/3, .67),
    # 0.6 (3/4, 1, .86), 0.3 (3/5, 1, .75), 0.2 (1/2, 1, .67): best F1 at 0.6, halfway to the next score, 0.3.
    chosen, skipped = best_thresholds(scores, targets, spec.labels)
    assert chosen == {"x": pytest.approx(0.45), "hard": pytest.approx((0.5 + 0.1) / 2)}
    assert skipped == {"none": "no positive row"}
    # Precision >= 0.9: the cuts 0.9 and 0.8 reach it; the lower one accepts more rows. `hard` reaches 1/2 at best.
    chosen, skipped = best_thresholds(scores, targets, spec.labels, target_precision=0.9)
    assert chosen == {"x": pytest.approx(0.75)}
    assert skipped["hard"] == "reaches precision 0.500 at best, below 0.9"


def test_a_task_with_few_rows_is_left_uncalibrated_and_named():
    rng = np.random.default_rng(1)
    logits = {"kind": rng.normal(0, 1, (30, 3))}
    targets = {"kind": np.r_[rng.integers(0, 3, 10), np.full(20, MISSING)]}
    fitted, left = fitted_calibration([CLASSES], logits, targets)
    assert fitted == [] and left == {"kind": "10 labelled rows, fewer than the 20 a fit needs"}
    with pytest.raises(Exception, match="a target precision is a share in"):
        fitted_calibration([CLASSES], logits, targets, target_precision=1.0)


def _config(calibration=None):
    tasks = [CLASSES.to_dict(), LABELS.to_dict(), {"name": "price", "type": "regression"}]
    return MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=tasks, calibration=calibration)


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        ({"colour": {"temperature": 2.0}}, "not a classification or multilabel task"),
        ({"price": {"temperature": 2.0}}, "not a classification or multilabel task"),
        ({"kind": {"temperature": 0.0}}, "temperature must be a positive number"),
        ({"kind": {"temperature": 2.0, "thresholds": {"a": 0.3}}}, "thresholds are for multilabel tasks"),
        ({"tags": {"temperature": 2.0, "thresholds": {"z": 0.3}}}, "labels \\['z'\\] that the task does not have"),
        ({"tags": {"temperature": 2.0, "thresholds": {"x": 1.3}}}, "must be in \\[0, 1\\]"),
        ({"tags": {"temperature": 2.0, "scale": 3}}, "must be a dict with 'temperature'"),
    ],
)
def test_a_calibration_that_does_not_fit_the_tasks_is_refused(calibration, message):
    with pytest.raises(ValueError, match=message):
        _config(calibration)


def test_calibration_round_trips_and_leaves_with_its_task(tmp_path):
    calibration = {"kind": {"temperature": 2.0}, "tags": {"temperature": 0.5, "thresholds": {"x": 0.3}}}
    model = MultiTaskViTModel(_config(calibration))
    model.save_pretrained(tmp_path)
    loaded = MultiTaskViTModel.from_pretrained(tmp_path)
    assert loaded.config.calibration == calibration
    loaded.remove_task("kind")
    assert loaded.config.calibration == {"tags": calibration["tags"]}
    loaded.save_pretrained(tmp_path / "less")
    assert MultiTaskViTConfig.from_pretrained(tmp_path / "less").calibration == {"tags": calibration["tags"]}


def test_answer_columns_divide_by_the_temperature_and_use_each_labels_threshold():
    specs = [CLASSES, LABELS]
    logits = {"kind": np.array([[2.0, 0.0, -1.0]], np.float32), "tags": np.array([[0.0, -0.4]], np.float32)}
    calibration = {"kind": {"temperature": 2.0}, "tags": {"temperature": 1.0, "thresholds": {"x": 0.6, "y": 0.3}}}
    columns = answer_columns(specs, logits, top_k=3, thresholds={}, calibration=calibration)
    expected = torch.softmax(torch.tensor([1.0, 0.0, -0.5]), -1)
    assert [s["score"] for s in columns["kind_scores"][0].as_py()] == pytest.approx(expected.tolist(), rel=1e-6)
    # sigmoid(0) = 0.5 < 0.6 (x out), sigmoid(-0.4) = 0.40 >= 0.3 (y in); at 0.5 everywhere it would be x, not y.
    assert columns["tags"].to_pylist() == [["y"]]
    asked = answer_columns(specs, logits, top_k=3, thresholds={"tags": 0.5}, calibration=calibration)
    assert asked["tags"].to_pylist() == [["x"]]  # a threshold asked for wins over the calibrated ones
    plain = answer_columns(specs, logits, top_k=3, thresholds={})
    assert plain["tags"].to_pylist() == [["x"]]
    assert [s["score"] for s in plain["kind_scores"][0].as_py()] == pytest.approx(
        torch.softmax(torch.tensor([2.0, 0.0, -1.0]), -1).tolist(), rel=1e-6
    )


def test_the_pipeline_answers_as_the_answer_columns_do(tmp_path):
    calibration = {"kind": {"temperature": 3.0}, "tags": {"temperature": 0.7, "thresholds": {"x": 0.2, "y": 0.9}}}
    torch.manual_seed(0)
    model = MultiTaskViTModel(_config(calibration)).eval()
    model.save_pretrained(tmp_path)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(tmp_path)
    classify = pipeline("multi-task-image-classification", model=str(tmp_path))
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    answer = classify(image, top_k=3)["answers"]
    pixels = classify.preprocess(image)["pixel_values"]
    with torch.no_grad():
        logits = {name: value.numpy() for name, value in model(pixel_values=pixels).logits.items()}
    columns = answer_columns(model.config.task_specs, logits, top_k=3, thresholds={}, calibration=calibration)
    assert [(s["label"], pytest.approx(s["score"], rel=1e-5)) for s in columns["kind_scores"][0].as_py()] == [
        (s["label"], s["score"]) for s in answer["kind"]["scores"]
    ]
    assert columns["tags"].to_pylist()[0] == answer["tags"]["labels"]


# -- an over-confident model on real scans --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def over_confident(tmp_path_factory):
    """The digits (1,797 real 8x8 scans) as a catalogue table split by id; a tiny model trained 600 steps on 80 of
    its training rows: right on those, far less so elsewhere, and sure of itself everywhere."""
    folder = tmp_path_factory.mktemp("digits")
    table = write_catalogue_table(load_digits_dataset(), folder, "digits")
    tasks = {"digit": "digit", "traits": {"type": "multilabel"}}
    source = first_rows(TaskSource(table, tasks, image_column="image_path", id_column="sku"), 80)
    torch.manual_seed(0)
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    trainer = MultiTaskTrainer(
        model,
        arguments(folder / "run", max_steps=600, per_device_train_batch_size=32, learning_rate=3e-3),
        train_dataset=source,
        image_transforms=ImageTransforms(size=(32, 32)),
    )
    trainer.train()
    trainer.save_model(str(folder / "model"))
    return folder, table


def test_calibrating_an_over_confident_model_lowers_its_held_out_ece_and_keeps_its_answers(
    over_confident, tmp_path, capsys
):
    folder, table = over_confident
    model = tmp_path / "model"
    shutil.copytree(folder / "model", model)
    column = ["--image_column", "image_path"]
    assert cli(["eval", str(model), str(table), "--split", "test", *column, "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert cli(["calibrate", str(model), str(table), *column]) == 0  # the validation split
    printed = capsys.readouterr().out
    assert "temperature" in printed and "calibration written to" in printed
    config = MultiTaskViTConfig.from_pretrained(model)
    assert set(config.calibration) == {"digit", "traits"}
    assert config.calibration["digit"]["temperature"] > 1.5  # over-confident: the scores are spread out
    assert set(config.calibration["traits"]["thresholds"]) == {"even", "prime", "above_four"}
    assert (model / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (model / "README.md").read_text()  # the card written at training, its calibration section added
    assert card.count("## Calibration") == 1 and card.index("## Calibration") < card.index("## Limitations")
    assert f"| `digit` | {config.calibration['digit']['rows']} |" in card and "(calibration.png)" in card
    diagram = tmp_path / "reliability.png"
    assert (
        cli(
            [
                "eval",
                str(model),
                str(table),
                "--split",
                "test",
                *column,
                "--json",
                "--reliability_diagram",
                str(diagram),
            ]
        )
        == 0
    )
    after = json.loads(capsys.readouterr().out)
    assert diagram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Held-out rows: no choice saw them. The argmax does not move; the calibration error falls by half or more.
    assert after["eval_digit_accuracy"] == before["eval_digit_accuracy"]
    assert after["eval_traits_mAP"] == pytest.approx(before["eval_traits_mAP"], abs=1e-9)
    assert after["eval_digit_ece_uncalibrated"] == pytest.approx(before["eval_digit_ece"], abs=1e-6)
    for task in ("digit", "traits"):
        assert after[f"eval_{task}_ece"] < 0.5 * before[f"eval_{task}_ece"], (task, before, after)


def test_calibrate_refuses_what_it_cannot_do_in_one_line(over_confident, tmp_path, capsys, monkeypatch):
    folder, table = over_confident
    model = tmp_path / "model"
    shutil.copytree(folder / "model", model)
    column = ["--image_column", "image_path"]
    config_before = (model / "config.json").read_text()

    def refused(*extra):
        assert cli(["calibrate", str(model), str(table), *column, *extra]) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]  # after the weights' loading bar, where one ran
        assert error.startswith("mtl-hf calibrate: error: ") and (model / "config.json").read_text() == config_before
        return error

    assert "a precision is a share in (0, 1)" in refused("--target_precision", "1.5")
    assert "rows" in refused("--split", "train") and "trained on" in refused("--split", "train")
    # A label whose rows reach the precision at no threshold (whether real rows do depends on the model: forced).
    import mtl_hf.metrics.calibration as calibration_module

    real = calibration_module.best_thresholds
    with monkeypatch.context() as patched:
        patched.setattr(
            calibration_module,
            "best_thresholds",
            lambda *args, **kwargs: ({}, {"prime": "reaches precision 0.800 at best, below 0.999"}),
        )
        assert "is reached by no threshold for traits:prime" in refused("--target_precision", "0.999")
    assert calibration_module.best_thresholds is real
    bare = tmp_path / "bare.csv"
    with open(table) as source, open(bare, "w", newline="") as target:
        rows = list(csv.DictReader(source))
        writer = csv.DictWriter(target, fieldnames=["sku", "image_path", "traits"])
        writer.writeheader()
        writer.writerows({key: row[key] for key in ("sku", "image_path", "traits")} for row in rows)
    shutil.copytree(folder / "photos", tmp_path / "photos")
    # A task the rows do not label is left uncalibrated, and named.
    assert cli(["calibrate", str(model), str(bare), *column, "--id_column", "sku"]) == 0
    assert "digit            not calibrated: no column in the data" in capsys.readouterr().out
    assert set(MultiTaskViTConfig.from_pretrained(model).calibration) == {"traits"}


def test_a_model_saved_without_calibration_answers_as_before():
    # The 0.1.0 release's model: the pipeline's scores are the plain softmax / sigmoid of its recorded logits, and a
    # multilabel label is in at 0.5.
    from tests.test_release_fixtures import FIXTURES, recorded_outputs

    pixel_values, logits = recorded_outputs()
    classify = pipeline("multi-task-image-classification", model=str(FIXTURES / "model"))
    assert classify.model.config.calibration is None
    answer = classify.postprocess({task: value[:1] for task, value in logits.items()}, top_k=10)["answers"]
    category = torch.softmax(logits["category"][0], -1)
    assert [s["score"] for s in answer["category"]["scores"]] == pytest.approx(sorted(category.tolist(), reverse=True))
    tags = torch.sigmoid(logits["tags"][0])
    spec = classify.model.config.get_task("tags")
    assert sorted(answer["tags"]["labels"]) == sorted(
        label for label, score in zip(spec.labels, tags.tolist(), strict=True) if score >= 0.5
    )
    assert not math.isnan(float(category.sum()))


@pytest.mark.parametrize("transformers_version", [THIS_VENV, "lowest", "newest"])
def test_the_remote_code_answers_with_the_calibration(tmp_path, transformers_version):
    """Where mtl_hf is not installed (the pipeline and handler.py of the saved folder), on each supported
    transformers: the same calibrated answers as mtl_hf's pipeline gives."""
    calibration = {"kind": {"temperature": 3.0}, "tags": {"temperature": 0.7, "thresholds": {"x": 0.2, "y": 0.9}}}
    torch.manual_seed(0)
    model = MultiTaskViTModel(_config(calibration)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    ImageTransforms(size=(32, 32)).image_processor().save_pretrained(folder)
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    torch.save(torch.zeros(1, 3, 32, 32), tmp_path / "inputs.pt")
    report = answer_without_mtl_hf(folder, tmp_path / "inputs.pt", photo, transformers_version, tmp_path)
    expected = pipeline("multi-task-image-classification", model=str(folder))(str(photo))["answers"]
    for task in ("kind", "tags"):
        ours, theirs = report["pipeline"]["answers"][task], expected[task]
        assert ours.get("label", ours.get("labels")) == theirs.get("label", theirs.get("labels")), task
        assert [a["label"] for a in ours["scores"]] == [a["label"] for a in theirs["scores"]], task
        assert [a["score"] for a in ours["scores"]] == pytest.approx([a["score"] for a in theirs["scores"]])
    handler = report["handler"]["answers"]["kind"]
    assert handler["scores"][0]["score"] == pytest.approx(expected["kind"]["scores"][0]["score"])


# -- the review queue -----------------------------------------------------------------------------------------------


def test_the_review_cut_is_the_one_worked_out_by_hand():
    from scipy.stats import beta

    curve = {"confidence": [0.99, 0.9, 0.8, 0.7], "accepted": [10, 25, 50, 100], "right": [10, 25, 50, 90], "rows": 120}
    # Candidates: the cut with the most rows within each 1/20 of the 120 rows (6, 12, ... 120): all four cuts, so
    # each is tested at 0.1 / 4. An all-right cut of n rows has the lower bound 0.025 ** (1 / n): 10 -> 0.69,
    # 25 -> 0.86, 50 -> 0.93; 90 of 100 -> 0.83. Against 0.9 only the 50-row cut passes: it is the lowest.
    assert beta.ppf(0.025, 90, 11) < 0.9 < 0.025 ** (1 / 50) and 0.025 ** (1 / 25) < 0.9
    cut = review_cut(curve, 0.9)
    assert cut == {"cut": 0.8, "coverage": 50 / 120, "precision": 1.0, "bound": pytest.approx(0.025 ** (1 / 50))}
    # The plain rule takes the lowest cut whose observed precision reaches the target: 90/100.
    assert review_cut(curve, 0.9, rule="plain")["cut"] == 0.7
    # One candidate (100 rows): tested at 0.1; 0.99 needs 0.99 ** n <= 0.1, n >= 230.
    with pytest.raises(UserError, match=r"promising 0.99 needs at least 230 right answers in a row"):
        review_cut({"confidence": [0.9], "accepted": [100], "right": [100], "rows": 100}, 0.99)


def test_a_multilabel_answers_confidence_is_that_of_all_its_decisions():
    scores = np.array([[0.9, 0.2], [0.9, 0.2], [0.9, 0.2], [0.9, 0.2]])
    targets = np.array([[1, 0], [1, 1], [MISSING, 0], [MISSING, MISSING]])
    cuts = [0.5, 0.3]  # label x in (0.9 >= 0.5), label y out (0.2 < 0.3)
    assert answer_confidence(LABELS, scores, cuts) == pytest.approx([0.9 * 0.8] * 4)
    right = answer_right(LABELS, scores, targets, cuts)
    assert right[:3].tolist() == [1.0, 0.0, 1.0] and math.isnan(right[3])


def test_answers_carry_needs_review_below_each_tasks_cut():
    logits = {"kind": np.log([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3]]), "tags": logit([[0.99, 0.01], [0.6, 0.01]])}
    columns = answer_columns([CLASSES, LABELS], logits, top_k=1, thresholds={}, review_cuts={"kind": 0.8, "tags": 0.7})
    assert columns["kind_needs_review"].to_pylist() == [False, True]
    assert columns["tags_needs_review"].to_pylist() == [False, True]  # 0.99 * 0.99 and 0.6 * 0.99
    assert columns["needs_review"].to_pylist() == [False, True]
    rows = answers_by_row([CLASSES, LABELS], columns)
    assert rows[1]["needs_review"] is True and rows[0]["answers"]["kind"]["needs_review"] is False
    plain = answer_columns([CLASSES, LABELS], logits, top_k=1, thresholds={})
    assert "needs_review" not in plain and "needs_review" not in answers_by_row([CLASSES, LABELS], plain)[0]


def test_predict_marks_the_answers_below_the_cut_for_review(over_confident, tmp_path, capsys):
    folder, table = over_confident
    model = tmp_path / "model"
    shutil.copytree(folder / "model", model)
    column = ["--image_column", "image_path"]
    assert cli(["calibrate", str(model), str(table), *column]) == 0
    config = MultiTaskViTConfig.from_pretrained(model)
    assert config.calibration["digit"]["review"]["rows"] == config.calibration["digit"]["rows"]
    capsys.readouterr()
    output = tmp_path / "tagged"
    keep = ["--keep_columns", "sku,image_path"]
    code = cli(
        ["predict", str(model), str(table), "--output", str(output), *column, *keep, "--review_precision", "0.3"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Review queue" in printed and "digit" in printed
    cuts = review_cuts(config, 0.3, {}, {}, str(model))
    rows = pq.read_table(output / "predictions").to_pylist()
    assert len(rows) == 1797
    for row in rows:
        assert row["digit_needs_review"] == (row["digit_scores"][0]["score"] < cuts["digit"]["cut"])
        assert row["needs_review"] == (row["digit_needs_review"] or row["traits_needs_review"])
    # The rows let through are a share near the validation rows' coverage (all rows here, training ones included).
    through = np.mean([not row["digit_needs_review"] for row in rows])
    assert 0 < through < 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--review_precision", "1.2"], "a precision is a share in (0, 1)"),
        (["--review_precision", "price=0.9"], "not a classification or multilabel task"),
        (["--review_precision", "0.9", "--threshold", "traits=0.3"], "which --threshold traits=0.3 changes"),
        (["--review_precision", "0.9999"], "no confidence cut reaches precision 0.9999"),
        (["--review_precision", "0.9", "--no_output"], "works on a catalogue: give --output OUT"),
    ],
)
def test_review_precision_refusals_are_one_line(over_confident, tmp_path, capsys, flags, message):
    folder, table = over_confident
    model = tmp_path / "model"
    shutil.copytree(folder / "model", model)
    config = json.loads((model / "config.json").read_text())
    curve = {"confidence": [0.9, 0.5], "accepted": [300, 400], "right": [290, 330], "rows": 400}
    config["calibration"] = {
        "digit": {"temperature": 1.0, "review": curve},
        "traits": {"temperature": 1.0, "review": curve},
    }
    (model / "config.json").write_text(json.dumps(config))
    output = [] if "--no_output" in flags else ["--output", str(tmp_path / "out")]
    flags = [flag for flag in flags if flag != "--no_output"]
    source = str(table) if output else str(folder / "photos" / "digits00000.png")
    assert cli(["predict", str(model), source, *output, "--image_column", "image_path", *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mtl-hf predict: error: ") and message in error, error
    assert not (tmp_path / "out").exists()


def test_review_precision_on_an_uncalibrated_model_names_the_fix(over_confident, tmp_path, capsys):
    folder, table = over_confident
    flags = ["--output", str(tmp_path / "out"), "--image_column", "image_path", "--review_precision", "0.9"]
    assert cli(["predict", str(folder / "model"), str(table), *flags]) == 2
    assert "run `mtl-hf calibrate" in capsys.readouterr().err


def test_predict_on_images_answers_at_the_calibrated_thresholds(over_confident, tmp_path, capsys):
    folder, _ = over_confident
    model = tmp_path / "model"
    shutil.copytree(folder / "model", model)
    config = json.loads((model / "config.json").read_text())
    labels = ["even", "prime", "above_four"]
    config["calibration"] = {"traits": {"temperature": 1.0, "thresholds": dict.fromkeys(labels, 0.0)}}
    (model / "config.json").write_text(json.dumps(config))
    photo = str(folder / "photos" / "digits00000.png")
    assert cli(["predict", str(model), photo, "--json", "--top_k", "5"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]["answers"]
    assert sorted(answer["traits"]["labels"]) == sorted(labels)  # every label reaches a threshold of 0
    assert cli(["predict", str(model), photo, "--json", "--top_k", "5", "--threshold", "1.0"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["answers"]["traits"]["labels"] == []  # the one asked for wins


# -- label errors ---------------------------------------------------------------------------------------------------


def test_ranked_issues_name_the_contradicted_rows_most_suspect_first():
    from mtl_hf.metrics.label_issues import ranked_issues

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    probabilities = np.full((300, 3), 0.02)
    probabilities[np.arange(300), targets] = 0.96  # every label backed by its photo ...
    wrong = [7, 42, 99]
    for row, confidence in zip(wrong, (0.03, 0.01, 0.02), strict=True):  # ... but these three: another class's
        probabilities[row] = 0.02
        probabilities[row, (targets[row] + 1) % 3] = 0.98 - confidence
        probabilities[row, targets[row]] = confidence
    issues = ranked_issues(CLASSES, probabilities, targets)
    # No clean row is named; cleanlab's estimate of how many there are may leave one out; the given label's
    # probability ranks them, lowest first.
    found = [issue["index"] for issue in issues]
    assert found[:2] == [42, 99] and set(found) <= set(wrong)
    assert issues[0]["given"] == CLASSES.labels[targets[42]] and issues[0]["given_probability"] == pytest.approx(0.01)
    price = TaskSpec.from_dict({"name": "price", "type": "regression"})
    values = rng.normal(10, 1, 200)
    predicted = values + rng.normal(0, 0.1, 200)
    values[5] += 5  # fifty times the residuals' spread
    assert [issue["index"] for issue in ranked_issues(price, predicted, values)] == [5]


def test_out_of_fold_probabilities_never_see_their_own_row():
    from mtl_hf.metrics.label_issues import out_of_fold

    # Random features: a head that saw a row's label would fit it; one that did not is at chance.
    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(200, 64)), rng.integers(0, 3, 200)
    held_out = out_of_fold(CLASSES, features, targets, folds=5)
    assert held_out.shape == (200, 3) and np.allclose(held_out.sum(1), 1.0)
    assert (held_out.argmax(1) == targets).mean() < 0.5
    with pytest.raises(UserError, match="fewer than --folds 5"):
        out_of_fold(CLASSES, features[:4], targets[:4], folds=5)


def test_audit_finds_flipped_digits_and_refuses_bad_inputs(over_confident, tmp_path, capsys):
    folder, table = over_confident
    with open(table) as file:
        rows = list(csv.DictReader(file))
    rng = np.random.default_rng(0)
    flipped = set(rng.choice(len(rows), 60, replace=False).tolist())
    for index in flipped:
        rows[index]["digit"] = str((int(rows[index]["digit"]) + 1 + int(rng.integers(9))) % 10)
    noisy = folder / "noisy.csv"
    with open(noisy, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    flags = ["--image_column", "image_path", "--id_column", "sku"]
    assert cli(["audit", str(folder / "model"), str(noisy), "--output", str(tmp_path / "audit"), *flags]) == 0
    printed = capsys.readouterr().out
    assert "trained the model: its embeddings have seen" in printed  # 80 of the rows trained it
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert set(summary["tasks"]) == {"digit", "traits"} and summary["folds"] == 5
    with open(tmp_path / "audit" / "suspects.csv") as file:
        suspects = [row for row in csv.DictReader(file) if row["task"] == "digit"]
    planted = {rows[index]["sku"] for index in flipped}
    top = [row["id"] for row in suspects[: len(planted)]]
    # A weak model (half its answers wrong on new scans) still ranks flipped labels well above their 4% share.
    assert len(set(top) & planted) / len(top) > 0.2, len(set(top) & planted)
    assert [int(row["rank"]) for row in suspects] == list(range(1, len(suspects) + 1))
    assert all(row["given"] != row["suggested"] for row in suspects[:20])

    def refused(*extra):
        assert cli(["audit", str(folder / "model"), str(noisy), *flags, *extra]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "exists and is not empty" in refused("--output", str(tmp_path / "audit"))
    assert "--folds must be at least 2" in refused("--output", str(tmp_path / "a2"), "--folds", "1")
    assert "fewer than --folds 50" in refused("--output", str(tmp_path / "a3"), "--folds", "50", "--max_rows", "20")


def test_audit_by_fine_tuning_scores_each_fold_with_a_model_that_never_saw_it(over_confident, tmp_path, capsys):
    import yaml

    folder, table = over_confident
    recipe = tmp_path / "recipe.yaml"
    backbone = {"model_type": "vit", **tiny_vit_config().to_diff_dict()}
    backbone = {key: value for key, value in backbone.items() if key not in ("transformers_version", "architectures")}
    recipe.write_text(
        yaml.safe_dump(
            {
                "backbone_config": backbone,
                "max_steps": 4,
                "per_device_train_batch_size": 16,
                "use_cpu": True,
                "max_train_rows": 64,
            }  # fmt: skip
        )
    )
    tasks = ["--tasks", json.dumps({"digit": "digit", "traits": {"type": "multilabel"}})]
    flags = ["--image_column", "image_path", "--id_column", "sku", "--max_rows", "60", "--folds", "2", *tasks]
    output = tmp_path / "audit"
    assert cli(["audit", str(recipe), str(table), "--output", str(output), *flags]) == 0
    summary = json.loads((output / "audit.json").read_text())
    assert summary["method"] == f"2-fold fine-tuning of {recipe}" and summary["training_rows"] == 0
    assert set(summary["tasks"]) == {"digit", "traits"} and summary["rows"] == 60
    # Each fold's table: the held-out rows are its validation split, the others its training split.
    with open(output / "folds" / "fold-0.csv") as first, open(output / "folds" / "fold-1.csv") as second:
        splits = [[row["split"] for row in csv.DictReader(first)], [row["split"] for row in csv.DictReader(second)]]
    assert all({a, b} == {"train", "validation"} for a, b in zip(*splits, strict=True))
    assert all((output / "folds" / f"model-{fold}" / "model.safetensors").is_file() for fold in (0, 1))
    capsys.readouterr()
    parquet = tmp_path / "rows.parquet"
    assert cli(["audit", str(recipe), str(parquet), "--output", str(tmp_path / "a2"), *flags]) == 2
    assert "an audit by fine-tuning splits a catalogue table" in capsys.readouterr().err


def test_audit_names_each_suspects_own_id_when_training_rows_are_left_out(over_confident, tmp_path):
    folder, table = over_confident
    with open(table) as file:
        digit_of = {row["sku"]: row["digit"] for row in csv.DictReader(file)}
    flags = ["--image_column", "image_path", "--id_column", "sku", "--skip_training_rows"]
    assert cli(["audit", str(folder / "model"), str(table), "--output", str(tmp_path / "audit"), *flags]) == 0
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    with open(tmp_path / "audit" / "suspects.csv") as file:
        suspects = [row for row in csv.DictReader(file) if row["task"] == "digit"]
    assert suspects and summary["tasks"]["digit"]["labelled_rows"] == summary["rows"]
    # The 80 rows the model trained on are left out; each suspect's id is the row whose label it reports.
    assert all(digit_of[row["id"]] == row["given"] for row in suspects)
