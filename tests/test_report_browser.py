"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
Selenium. Skipped, with the reason, where either is missing (``.ci/run`` installs them when it can)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium.webdriver.common.by import By

import headless_browser  # skips this module, with the reason, without selenium or chromium
from clipiq.report import write
from test_report import ERROR, fake


@pytest.fixture(scope="module")
def browser():
    yield from headless_browser.start("--allow-file-access-from-files")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser-report")
    results = [fake("photos/a.png", 1), fake("other/b.jpg", 2, restored=True), fake("c.png", 3),
               fake("d.png", 4)]
    return write(results, out, failures=[("broken/x.jpg", ERROR)], worst_best_k=2)


_errors = headless_browser.severe_console_errors


def _scores(browser) -> list[float]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr.result")
    return [float(r.get_attribute("data-score")) for r in rows if r.is_displayed()]


def _images_loaded(browser) -> tuple[int, list[str]]:
    imgs = browser.find_elements(By.TAG_NAME, "img")
    broken = [i.get_attribute("src") for i in imgs
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
    return len(imgs), broken


def test_index_opens_without_console_errors_and_every_image_loads(browser, report):
    browser.get(report.as_uri())
    assert browser.find_element(By.ID, "results")
    n, broken = _images_loaded(browser)
    assert n >= 5 and not broken, broken  # histogram and gallery thumbnails
    assert not _errors(browser)


def test_sorting_by_score_reorders_the_rows(browser, report):
    browser.get(report.as_uri())
    header = browser.find_element(By.CSS_SELECTOR, '#results th[data-key="score"]')
    header.click()
    first = _scores(browser)
    assert first == sorted(first) or first == sorted(first, reverse=True)
    header.click()
    second = _scores(browser)
    assert second == first[::-1] and len(second) == 4


def test_the_filter_hides_rows_and_a_failed_file_shows_its_error(browser, report):
    browser.get(report.as_uri())
    failed = browser.find_element(By.CSS_SELECTOR, "#results tr.failed")
    assert failed.is_displayed() and "FAILED" in failed.text and "<script>" in failed.text  # shown, as text
    box = browser.find_element(By.ID, "filter")
    box.send_keys("broken")
    visible = [r for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr") if r.is_displayed()]
    assert len(visible) == 1 and visible[0].get_attribute("class") == "failed"
    box.clear()
    box.send_keys("b.jpg")
    assert len([r for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr.result")
                if r.is_displayed()]) == 1


def test_an_image_page_renders_and_its_screenshot_is_not_blank(browser, report, tmp_path):
    page = sorted(p for p in report.parent.glob("*.html") if p.name != "index.html")[0]
    browser.get(page.as_uri())
    n, broken = _images_loaded(browser)
    assert n >= 4 and not broken, broken
    assert not _errors(browser)
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page
    assert (pixels < 200).mean() > 0.05  # pictures and text, not only background
