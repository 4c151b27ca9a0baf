"""The HTML report in a real headless Chromium, with the network cut off: it loads, and the plots render."""

from __future__ import annotations

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from lezea_otel.analysis.runs import load_run
from lezea_otel.cli.demo import run as demo_run
from lezea_otel.cli.report import write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1400,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def test_report_renders_offline(browser, tmp_path):
    """Every plot has drawn SVG with data (the observers' samples too), no console error, and a screenshot
    is written."""
    tracker = demo_run(steps=20, runs_dir=str(tmp_path / "runs"))
    report = write_report(load_run(tracker.run_dir), tmp_path / "report.html")
    browser.get(report.as_uri())
    browser.implicitly_wait(10)
    for name in ("metric-loss", "metric-grad-norm", "observed", "resources", "timeline"):
        plot = browser.find_element("id", f"plot-{name}")
        assert plot.size["height"] > 100 and plot.size["width"] > 300, name
        traces = browser.execute_script(f"return document.getElementById('plot-{name}').data.length")
        assert traces > 0, name
        assert plot.find_elements("css selector", "svg.main-svg"), name
    curves = browser.execute_script(
        "return document.getElementById('plot-metric-loss').data.map(t => t.name)")
    assert {"builder:b0/network:net-b0/train", "builder:b1/network:net-b1/val"} <= set(curves)
    assert "data_loading" in browser.find_element("id", "tables").text
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
