"""The page `mtl-hf serve` shows at `/`, in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): a photo chosen in the page is answered, every task rendered as the JSON endpoint answers it;
a file that is not a photo shows the server's error. A screenshot is saved in the test's folder."""

from __future__ import annotations

import shutil

import pytest

from mtl_hf.data import load_shop_dataset

from .test_predict_catalogue import save_model
from .test_serve import Server

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (dev extra)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)


def shown(answer: dict) -> str:
    """What the page shows as a task's answer (page.html)."""
    if "value" in answer:
        return f"{answer['value']:.3f}"
    if "label" in answer:
        return answer["label"]
    return ", ".join(answer["labels"]) or "(none)"


def test_a_photo_chosen_in_the_page_is_answered_task_by_task(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    save_model(tmp_path / "model")
    photo, not_a_photo = tmp_path / "photo.png", tmp_path / "notes.png"
    load_shop_dataset(1, start=31)[0]["image"].resize((256, 256)).save(photo)
    not_a_photo.write_text("a text file named like a photo")
    server = Server(tmp_path / "model")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,820"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        expected = server.post(photo.read_bytes()).json()["predictions"][0]
        driver.get(server.url)
        WebDriverWait(driver, 30).until(lambda d: "sha256:" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "answers").is_displayed())
        rows = driver.find_elements(By.CSS_SELECTOR, "#answers tbody tr")
        rendered = {row.get_attribute("data-task"): row.find_element(By.CLASS_NAME, "answer").text for row in rows}
        assert rendered == {task: shown(answer) for task, answer in expected["answers"].items()}
        scores = driver.find_element(By.CSS_SELECTOR, '#answers tr[data-task="category"] .score').text
        assert scores.startswith(f"{expected['answers']['category']['scores'][0]['label']} ")
        driver.save_screenshot(str(tmp_path / "page.png"))

        driver.find_element(By.ID, "file").send_keys(str(not_a_photo))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "error").text)
        assert "not an image format this server reads" in driver.find_element(By.ID, "error").text
        assert not driver.find_element(By.ID, "answers").is_displayed()
    finally:
        driver.quit()
        server.stop()
    assert (tmp_path / "page.png").stat().st_size > 10_000
