"""Headless Chromium for the browser tests (the report's and the service page's): Debian's ``chromium`` and
``chromium-driver`` driven by Selenium. Importing this module inside a test module skips that module, with the
reason, where any of them is missing; :func:`start` skips when the browser is installed but cannot start."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not (CHROMIUM and DRIVER):
    pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver) to run the browser tests", allow_module_level=True)


def start(*extra_args: str) -> Iterator:
    """A headless Chromium session with the browser console log on; yields the driver and quits it after."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    except Exception as e:  # a browser that is installed but cannot start here (no sandbox support...)
        pytest.skip(f"headless chromium did not start: {str(e).splitlines()[0]}")
    yield driver
    driver.quit()


def severe_console_errors(driver) -> list[str]:
    """The browser console's SEVERE messages since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
