"""The real app in a real browser: ``streamlit run app.py`` driven by Playwright in Debian's Chromium.

Uses the shipped zoo when its manifest lists models, otherwise the tiny test zoo. Screenshots are
left in test-artifacts/ (git-ignored) for a human to look at: the home page in full, every page's
first screen at 1280x720, each Lesson step, a preset the Lesson opened and a hostile link.
"""
from __future__ import annotations

import json
import os
import re
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


@pytest.fixture(scope="module")
def app_url(tiny_zoo_dir, tmp_path_factory):
    """``streamlit run app.py`` on a free port for this module's tests; its URL."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/run (it installs Debian's chromium)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {**os.environ, "LTPA_ZOO": str(_zoo_for_browser(tiny_zoo_dir))}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
             f"--server.port={port}", "--server.address=127.0.0.1",
             "--browser.gatherUsageStats=false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(url, server, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _open(browser, url: str, width: int = 1280, height: int = 720):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_selector("[data-testid=stApp]", timeout=RUN_TIMEOUT_MS)
    page.wait_for_timeout(500)  # the first script run starts after the websocket connects
    _wait_idle(page)
    return page


def _no_exception(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0


def test_home_page_renders_every_stage_and_top5_in_chromium(app_url, browser, tiny_zoo_dir):
    from playwright.sync_api import expect

    zoo = _zoo_for_browser(tiny_zoo_dir)
    first_card = json.loads((zoo / "manifest.json").read_text())["models"][0]
    stages = first_card["stages"]  # the home page starts on the manifest's first model
    assert stages, "the first zoo model should have attention stages"
    page = _open(browser, app_url, 1400, 2600)
    page.wait_for_selector("[data-testid=stFileUploader] input[type=file]", state="attached", timeout=RUN_TIMEOUT_MS)
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
    _no_exception(page)


PAGES = {"home": "", "compare": "Compare", "models": "Models", "masks": "Masks",
         "adversarial": "Adversarial", "lesson": "Lesson", "faithfulness": "Faithfulness"}


def test_every_page_at_1280x720_with_home_in_the_sidebar(app_url, browser):
    """Screenshots of the first screen of every page (what is above the fold), for the notes."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    for name, path in PAGES.items():
        page = _open(browser, f"{app_url}/{path}")
        sidebar = page.locator("[data-testid=stSidebar]")
        expect(sidebar.locator("[data-testid=stPageLink]").first).to_contain_text("Home", timeout=RUN_TIMEOUT_MS)
        assert sidebar.get_by_text("app", exact=True).count() == 0
        if name == "home":
            # The first stage's overlay is on the first screen, whole.
            first_map = page.locator("[data-testid=stMain] [data-testid=stImage]").first
            expect(first_map).to_be_visible(timeout=RUN_TIMEOUT_MS)
            box = first_map.bounding_box()
            assert box is not None and box["y"] + box["height"] <= 720, box
        if name == "models":
            # The tables load their code lazily: wait until they are drawn, not grey placeholders.
            expect(page.locator("[data-testid=stMain] [data-testid=stDataFrame]").first
                   ).to_be_visible(timeout=RUN_TIMEOUT_MS)
            expect(page.locator("[data-testid=stSkeleton]")).to_have_count(0, timeout=RUN_TIMEOUT_MS)
        page.screenshot(path=str(ARTIFACTS / f"page_{name}_1280x720.png"))
        _no_exception(page)
        page.close()


def test_lesson_steps_open_their_pages_and_a_shared_link_reopens_a_view(app_url, browser):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = _open(browser, f"{app_url}/Lesson")
    main = page.locator("[data-testid=stMain]")
    step = 1
    while True:
        expect(main.locator("h2").first).to_contain_text(f"Step {step} of", timeout=RUN_TIMEOUT_MS)
        _wait_idle(page)  # the step's buttons are drawn after its heading
        assert f"step={step}" in page.url
        page.screenshot(path=str(ARTIFACTS / f"lesson_step{step}.png"))
        next_button = main.get_by_role("button", name="Next step →")
        if next_button.count() == 0:
            break
        next_button.click()
        step += 1
        _wait_idle(page)
    assert step == 5
    # Back to step 3 and follow its first preset: the Masks page opens in the preset's state.
    for previous in (4, 3):
        # Wait for each step to be drawn before the next click: a click during a rerun is lost.
        main.get_by_role("button", name="← Previous step").click()
        _wait_idle(page)
        expect(main.locator("h2").first).to_contain_text(f"Step {previous} of", timeout=RUN_TIMEOUT_MS)
    _wait_idle(page)
    # A click that lands while the page reruns is lost (Streamlit redraws the link): click again,
    # at most three times, until the preset's page opens.
    for attempt in range(3):
        main.locator("[data-testid=stPageLink]").first.click()
        try:
            page.wait_for_url("**/Masks?**", timeout=RUN_TIMEOUT_MS // 3)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            _wait_idle(page)
    page.wait_for_timeout(500)
    _wait_idle(page)
    assert "rule=top" in page.url and "t=25" in page.url, page.url
    expect(main.get_by_text("top q % of pixels = 25", exact=False).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert main.locator("[data-testid=stAlertContentWarning]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "lesson_preset_masks.png"))
    _no_exception(page)

    # A shared link, opened in a fresh tab, gives the same view.
    shared = page.url
    other = _open(browser, shared)
    expect(other.locator("[data-testid=stMain]").get_by_text("top q % of pixels = 25", exact=False).first
           ).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert other.url == shared
    _no_exception(other)
    # A hostile link: a warning in the page, the default view, no traceback.
    hostile = _open(browser, f"{app_url}/?model=..%2F..%2Fetc%2Fpasswd&opacity=nan")
    warnings = hostile.locator("[data-testid=stMain] [data-testid=stAlertContentWarning]")
    expect(warnings).to_have_count(2, timeout=RUN_TIMEOUT_MS)
    expect(warnings.first).to_contain_text("was ignored")
    hostile.screenshot(path=str(ARTIFACTS / "hostile_link.png"))
    _no_exception(hostile)


def test_picking_a_model_by_its_axes_changes_the_caption(app_url, browser, tiny_zoo_dir):
    """The Home page's picker in Chromium: the tapped-stages box and the normalisation,
    compatibility and head radios switch the model the caption names; a combination the zoo lacks
    says so."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    cards = json.loads((_zoo_for_browser(tiny_zoo_dir) / "manifest.json").read_text())["models"]
    shipped = {c["registry_name"]: c["id"] for c in cards if c["kwargs"].get("normalisation", "softmax") == "softmax"}
    picked = {"vgg_att3_concat_pc", "vgg", "vgg_att3_concat_dp", "vgg_att3_indep_pc"}
    assert picked <= set(shipped) and "vgg_att3_concat_pc_sigmoid_sum" in {c["id"] for c in cards}, \
        "the zoo lacks a model this test picks"
    page = _open(browser, app_url)
    sidebar = page.locator("[data-testid=stSidebar]")
    caption = sidebar.locator("[data-testid=stCaptionContainer]:has(code)")  # `name · id`: the picker's
    expect(caption).to_contain_text(shipped["vgg_att3_concat_pc"], timeout=RUN_TIMEOUT_MS)

    def choose_stages(label: str) -> None:
        # The box's arrow opens its list (a click on the text field only focuses it for typing).
        arrow = sidebar.locator("[data-testid=stSelectbox]").filter(has_text="Model: tapped stages").locator(
            "button[aria-haspopup=listbox]")
        option = page.locator("[role=listbox] [role=option]").filter(has_text=re.compile(f"^{re.escape(label)}$"))
        # A rerun redraws the box and closes a list it had just opened: open it again, at most
        # three times, until the option shows.
        for attempt in range(3):
            arrow.click()
            try:
                option.wait_for(state="visible", timeout=5_000)
                break
            except PlaywrightTimeoutError:
                if attempt == 2:
                    raise
                _wait_idle(page)
        option.click()
        _wait_idle(page)

    def choose_radio(axis: str, value: str) -> None:
        sidebar.locator("[data-testid=stRadio]").filter(has_text=f"Model: {axis}").get_by_text(
            value, exact=True).click()
        _wait_idle(page)

    choose_stages("none (baseline)")
    expect(caption).to_contain_text(f"VGG · {shipped['vgg']}", timeout=RUN_TIMEOUT_MS)
    expect(sidebar.locator("[data-testid=stRadio]").filter(has_text="Model: compatibility")).to_have_count(0)
    choose_stages("3 stages: layers 7, 10, 13 (att3)")
    expect(caption).to_contain_text(shipped["vgg_att3_concat_pc"], timeout=RUN_TIMEOUT_MS)
    # The normalisation axis: the shipped deviation, named as one.
    choose_radio("normalisation", "sigmoid_sum, deviation from the paper")
    expect(caption).to_contain_text("(VGG-att3)-concat-pc, sigmoid_sum normalisation · "
                                    "vgg_att3_concat_pc_sigmoid_sum", timeout=RUN_TIMEOUT_MS)
    choose_radio("normalisation", "softmax, the paper's")
    expect(caption).to_contain_text(f"(VGG-att3)-concat-pc · {shipped['vgg_att3_concat_pc']}",
                                    timeout=RUN_TIMEOUT_MS)
    compatibility = sidebar.locator("[data-testid=stRadio]").filter(has_text="Model: compatibility")
    choose_radio("compatibility", "dp")
    expect(caption).to_contain_text(f"(VGG-att3)-concat-dp · {shipped['vgg_att3_concat_dp']}",
                                    timeout=RUN_TIMEOUT_MS)
    # indep with dp is not shipped: the notice names it, and the picker shows the nearest shipped
    # model (indep-pc), its compatibility radio back on the one shown.
    choose_radio("head", "indep")
    expect(sidebar.locator("[data-testid=stAlertContentInfo]").filter(has_text="is not shipped")
           ).to_contain_text("(VGG-att3)-indep-dp is not shipped", timeout=RUN_TIMEOUT_MS)
    expect(caption).to_contain_text(f"(VGG-att3)-indep-pc · {shipped['vgg_att3_indep_pc']}",
                                    timeout=RUN_TIMEOUT_MS)
    assert f"model={shipped['vgg_att3_indep_pc']}" in page.url, page.url
    expect(compatibility.get_by_role("radio", name="pc")).to_be_checked(timeout=RUN_TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser_model_axes.png"), full_page=True)
    _no_exception(page)
