"""`mtl-hf report`: one static HTML file, opened from disk in a real headless Chromium (as the serving page is
checked): every task's section, its figures drawn (decoded images, not broken ones), the review table and the
gallery of mistakes; screenshots saved in the test's folder. And the refusals: training rows, a bad output name."""

from __future__ import annotations

import json
import shutil

import pytest

from mtl_hf import MultiTaskTrainer, MultiTaskViTConfig, MultiTaskViTModel
from mtl_hf.commands.main import main as cli
from mtl_hf.data import ImageTransforms, TaskSource, load_shop_dataset
from mtl_hf.data.builtin.tables import write_catalogue_table
from tests.conftest import tiny_vit_config
from tests.training_helpers import arguments

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (dev extra)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
TASKS = {"category": "category", "colour": "colour", "tags": {"type": "multilabel"}, "size": "size"}
COLUMNS = ["--image_column", "image_path", "--id_column", "sku"]


@pytest.fixture(scope="module")
def calibrated_model(tmp_path_factory):
    """A catalogue of 600 shop photos (all four task types' columns); a tiny model trained briefly on its train
    split, calibrated on its validation split."""
    folder = tmp_path_factory.mktemp("report")
    table = write_catalogue_table(load_shop_dataset(600, missing_rate=0.0, seed=3), folder, "shop")
    source = TaskSource(table, TASKS, image_column="image_path", id_column="sku")
    model = MultiTaskViTModel(MultiTaskViTConfig(backbone_config=tiny_vit_config(), tasks=source.task_specs))
    trainer = MultiTaskTrainer(
        model,
        arguments(folder / "run", max_steps=60, per_device_train_batch_size=32, learning_rate=3e-3),
        train_dataset=source,
        image_transforms=ImageTransforms(size=(32, 32)),
    )
    trainer.train()
    trainer.save_model(str(folder / "model"))
    assert cli(["calibrate", str(folder / "model"), str(table), *COLUMNS]) == 0
    return folder / "model", table


@pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)
def test_the_report_opens_from_disk_with_every_tasks_section_and_figures(calibrated_model, tmp_path, capsys):
    from selenium.webdriver.common.by import By

    model, table = calibrated_model
    report = tmp_path / "report.html"
    assert cli(["report", str(model), str(table), *COLUMNS, "--output", str(report)]) == 0
    assert "report on 4 task(s) written to" in capsys.readouterr().out
    text = report.read_text()
    assert "http" not in text.replace("http-equiv", "") and "<script" not in text  # nothing fetched, nothing run
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        driver.get(report.as_uri())
        sections = {s.get_attribute("id"): s for s in driver.find_elements(By.CSS_SELECTOR, "section.task")}
        assert set(sections) == {f"task-{name}" for name in TASKS}
        for name, section in sections.items():
            images = section.find_elements(By.CSS_SELECTOR, "img.figure")
            drawn = [
                driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i) for i in images
            ]
            expected = 1 if name == "task-size" else 2  # regression: predicted against true; others + reliability
            assert len(images) == expected and all(width > 100 for width in drawn), (name, drawn)
            thumbnails = section.find_elements(By.CSS_SELECTOR, "img.thumbnail")
            assert 0 < len(thumbnails) <= 8 and all(
                driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbnails
            )
            assert "chance" in section.find_element(By.TAG_NAME, "p").text
        review = sections["task-category"].find_elements(By.CSS_SELECTOR, "table tr")
        assert len(review) == 1 + 4  # the header and the four targets
        assert "temperature" in sections["task-category"].find_element(By.TAG_NAME, "p").text
        assert not driver.find_elements(By.ID, "banner")
        driver.save_screenshot(str(tmp_path / "report-top.png"))
        driver.execute_script("arguments[0].scrollIntoView()", sections["task-tags"])
        driver.save_screenshot(str(tmp_path / "report-tags.png"))
        print(f"screenshots: {tmp_path / 'report-top.png'}, {tmp_path / 'report-tags.png'}")
    finally:
        driver.quit()


def test_the_report_refuses_training_rows_or_labels_them(calibrated_model, tmp_path, capsys):
    model, table = calibrated_model
    report = tmp_path / "train.html"
    assert cli(["report", str(model), str(table), *COLUMNS, "--split", "train", "--output", str(report)]) == 2
    assert "rows" in capsys.readouterr().err and not report.exists()
    flags = ["--split", "train", "--output", str(report), "--allow_training_rows", "--mistakes", "2"]
    assert cli(["report", str(model), str(table), *COLUMNS, *flags]) == 0
    assert 'id="banner">TRAINING-SET REPORT' in report.read_text()
    assert cli(["report", str(model), str(table), *COLUMNS, "--output", str(tmp_path / "report.pdf")]) == 2
    assert "the report is one HTML file" in capsys.readouterr().err
    config = json.loads((model / "config.json").read_text())
    assert set(config["calibration"]) == {"category", "colour", "tags"}
