"""The real app in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's Chromium.

Uses the shipped zoo when its manifest lists models, otherwise the tiny test zoo. A full-page
screenshot is left in test-artifacts/ (git-ignored) for a human to look at.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
UPLOAD = REPO / "assets" / "examples" / "photo_coffee.jpg"
UPLOAD_NAME = "browser_upload.jpg"
START_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 90_000

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _zoo_for_browser(tiny_zoo_dir: Path) -> Path:
    shipped = REPO / "assets" / "models"
    manifest = shipped / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("models"):
        return shipped
    return tiny_zoo_dir


def _wait_healthy(url: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not become healthy in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def _wait_idle(page) -> None:
    page.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]", timeout=RUN_TIMEOUT_MS)


def test_home_page_renders_every_stage_and_top5_in_chromium(tiny_zoo_dir, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/run (it installs Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    zoo = _zoo_for_browser(tiny_zoo_dir)
    first_card = json.loads((zoo / "manifest.json").read_text())["models"][0]
    stages = first_card["stages"]  # the home page starts on the manifest's first model
    assert stages, "the first zoo model should have attention stages"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "streamlit.log"
    env = {**os.environ, "LTPA_ZOO": str(zoo)}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
             f"--server.port={port}", "--server.address=127.0.0.1",
             "--browser.gatherUsageStats=false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(url, server, log_path)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 2600})
                page.goto(url)
                page.wait_for_selector("[data-testid=stFileUploader] input[type=file]",
                                       state="attached", timeout=RUN_TIMEOUT_MS)
                _wait_idle(page)
                page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(
                    {"name": UPLOAD_NAME, "mimeType": "image/jpeg", "buffer": UPLOAD.read_bytes()})
                main = page.locator("[data-testid=stMain]")
                expect(main.get_by_text(UPLOAD_NAME, exact=False).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
                _wait_idle(page)
                for stage in stages:
                    # The overlay of the stage over the image, and its raw map as a Plotly heatmap.
                    expect(main.locator("[data-testid=stImage]").filter(has_text=f"{stage} (")
                           ).to_have_count(1, timeout=RUN_TIMEOUT_MS)
                    expect(main.locator(".js-plotly-plot").filter(has_text=f"{stage} (")
                           ).to_have_count(1, timeout=RUN_TIMEOUT_MS)
                top5 = main.locator(".js-plotly-plot").filter(has_text="Top-5")
                expect(top5).to_have_count(1, timeout=RUN_TIMEOUT_MS)
                assert top5.locator("g.bars path, g.point path").count() == 5
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "browser_home.png"), full_page=True)
                assert main.locator("[data-testid=stException]").count() == 0
            finally:
                browser.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)
