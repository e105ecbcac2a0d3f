"""The service's page in a real browser: a uvicorn server in a background thread on 127.0.0.1 serving
``create_app`` on the random ``test-tiny`` backbone, driven by headless Chromium (Debian's ``chromium`` and
``chromium-driver``) through Selenium. Skipped, with the reason, where either is missing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headless_browser  # skips this module, with the reason, without selenium or chromium

pytest.importorskip("fastapi", reason="the service needs its extra: pip install .[serve]")
uvicorn = pytest.importorskip("uvicorn", reason="the service needs its extra: pip install .[serve]")
httpx = pytest.importorskip("httpx", reason="the service needs its extra: pip install .[serve]")
from selenium.webdriver.common.by import By  # noqa: E402  (after the skips: selenium may be absent)
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from clipiq.serve import ServeSettings, create_app  # noqa: E402

WAIT_S = 30
KEY = "browser-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(settings: ServeSettings) -> Iterator[str]:
    """Run the app under uvicorn in a thread until the generator is closed; yields the base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="clipiq-serve-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if not thread.is_alive():
                raise RuntimeError("the server thread exited before it was ready")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}/readyz did not answer 200 within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _settings(**kw) -> ServeSettings:
    return ServeSettings(model="test-tiny", device="cpu", restore=("dehaze-dcp",), explain_segmenter="grid", **kw)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from _serve(_settings())


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    yield from _serve(_settings(api_key=KEY))


@pytest.fixture(scope="module")
def browser():
    yield from headless_browser.start()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A small smooth RGB PNG with some structure (a gradient, a block and noise)."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.float32)
    img[20:60, 30:90] = [200, 60, 40]
    img += rng.normal(0, 8, img.shape)
    path = tmp_path_factory.mktemp("serve-browser") / "photo one.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


_errors = headless_browser.severe_console_errors


def _open(browser, base: str) -> None:
    browser.get(f"{base}/")
    browser.get_log("browser")  # drop what earlier pages logged
    WebDriverWait(browser, WAIT_S).until(lambda d: "metric" in d.find_element(By.ID, "config").text
                                         or "not available" in d.find_element(By.ID, "config").text)


def _upload(browser, path: Path):
    browser.find_element(By.ID, "files").send_keys(str(path))
    return WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'div.card[data-name="{path.name}"]'))


def _loaded(browser, img) -> bool:
    return bool(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))


def _done(card) -> bool:
    return bool(card.find_element(By.CSS_SELECTOR, ".score").text) or card.find_element(
        By.CSS_SELECTOR, ".error").is_displayed()


def test_the_page_loads_its_settings_without_console_errors(browser, server):
    _open(browser, server)
    config = browser.find_element(By.ID, "config").text
    assert "clipiqa" in config and "dehaze-dcp" in config, config
    assert browser.find_element(By.ID, "files").get_attribute("type") == "file"
    html = browser.page_source
    assert "http://" not in html.replace(server, "") and "https://" not in html  # nothing from elsewhere
    assert not _errors(browser)


def test_an_uploaded_image_gets_its_score_attributes_heatmap_and_regions(browser, server, photo):
    _open(browser, server)
    card = _upload(browser, photo)
    WebDriverWait(browser, WAIT_S).until(lambda d: _done(card))
    assert not card.find_element(By.CSS_SELECTOR, ".error").is_displayed(), card.text
    score = float(card.find_element(By.CSS_SELECTOR, ".score").text)
    assert 0.0 <= score <= 1.0
    assert abs(float(card.get_attribute("data-score")) - score) < 1e-3
    heat = card.find_element(By.CSS_SELECTOR, "img.heatmap")
    WebDriverWait(browser, WAIT_S).until(lambda d: _loaded(d, heat))
    assert heat.get_attribute("src").startswith("data:image/png;base64,")
    assert 0 < float(heat.value_of_css_property("opacity")) < 1  # drawn over the photo, not instead of it
    assert _loaded(browser, card.find_element(By.CSS_SELECTOR, "img.photo"))
    bars = card.find_elements(By.CSS_SELECTOR, ".attributes li")
    assert bars and all(li.get_attribute("data-attribute") for li in bars)
    regions = card.find_elements(By.CSS_SELECTOR, ".regions li")
    assert 1 <= len(regions) <= 3
    region_scores = [float(li.get_attribute("data-score")) for li in regions]
    assert region_scores == sorted(region_scores)  # worst first
    assert not _errors(browser)


def test_a_corrupt_file_shows_its_name_and_the_servers_message_in_its_card(browser, server, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really an image")
    _open(browser, server)
    card = _upload(browser, bad)
    error = card.find_element(By.CSS_SELECTOR, ".error")
    WebDriverWait(browser, WAIT_S).until(lambda d: error.is_displayed())
    assert "broken.png" in error.text and len(error.text) > len("broken.png: ") + 5, error.text
    assert "failed" in card.get_attribute("class")
    assert not card.find_element(By.CSS_SELECTOR, ".score").text


def test_restore_shows_before_and_after_with_both_scores(browser, server, photo):
    _open(browser, server)
    card = _upload(browser, photo)
    WebDriverWait(browser, WAIT_S).until(lambda d: _done(card))
    button = WebDriverWait(browser, WAIT_S).until(
        lambda d: card.find_element(By.CSS_SELECTOR, '.restore-button[data-method="dehaze-dcp"]'))
    assert button.text == "Restore with dehaze-dcp"
    button.click()
    box = card.find_element(By.CSS_SELECTOR, ".restored")
    WebDriverWait(browser, WAIT_S).until(lambda d: box.is_displayed() or card.find_element(
        By.CSS_SELECTOR, ".error").is_displayed())
    assert box.is_displayed(), card.find_element(By.CSS_SELECTOR, ".error").text
    before, after = box.find_element(By.CSS_SELECTOR, "img.before"), box.find_element(By.CSS_SELECTOR, "img.after")
    WebDriverWait(browser, WAIT_S).until(lambda d: _loaded(d, before) and _loaded(d, after))
    for cls in (".score-before", ".score-after"):
        assert 0.0 <= float(box.find_element(By.CSS_SELECTOR, cls).text) <= 1.0
    assert not _errors(browser)


def test_the_api_key_box_sends_a_bearer_header_and_is_kept_for_the_session(browser, keyed_server, photo):
    _open(browser, keyed_server)
    config = browser.find_element(By.ID, "config")
    assert "not available" in config.text, config.text  # 401 without the key
    box = browser.find_element(By.ID, "api-key")
    box.clear()
    box.send_keys(KEY + Keys.TAB)
    WebDriverWait(browser, WAIT_S).until(lambda d: "metric" in config.text)
    card = _upload(browser, photo)
    WebDriverWait(browser, WAIT_S).until(lambda d: _done(card))
    float(card.find_element(By.CSS_SELECTOR, ".score").text)
    browser.refresh()  # sessionStorage survives a reload of the tab
    WebDriverWait(browser, WAIT_S).until(lambda d: "metric" in d.find_element(By.ID, "config").text)
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == KEY
    browser.execute_script("sessionStorage.clear()")
