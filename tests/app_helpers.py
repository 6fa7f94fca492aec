"""Helpers for the AppTest tests: start the app, upload files, read back what the pages show."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from streamlit.testing.v1 import AppTest

from ltpa.images import load_image
from ltpa.inference import Analysis, analyse
from ltpa.zoo import load_zoo_model

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "app.py"
COMPARE = "pages/1_Compare.py"
MODELS = "pages/2_Models.py"
GALLERY = REPO / "assets" / "examples"
TIMEOUT_S = 120


def start_app() -> AppTest:
    """The home page after its first run (LTPA_ZOO must already point at the zoo to use)."""
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, at.exception
    return at


def open_with(query: dict[str, str | list[str]], page: str | None = None) -> AppTest:
    """A new session opened on a link: ``page`` (or Home) with ``query`` as its query string."""
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT_S)
    if page is not None:
        at.run()
        at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def start_with_empty_zoo(zoo: Path, monkeypatch: Any, page: str | None = None) -> AppTest:
    """The app (home, or ``page`` after switching to it) on an empty zoo folder; checks that it
    runs without an exception and says the zoo is empty."""
    monkeypatch.setenv("LTPA_ZOO", str(zoo))
    at = start_app()
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    assert any("No models in the zoo" in w.value for w in at.warning)
    return at


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    """Upload a file through the page's (only) file uploader and rerun."""
    at.file_uploader[0].set_value((name, data, mime)).run()
    return at


def pick_model(at: AppTest, model_id: str) -> AppTest:
    """Make ``model_id`` the chosen model (what the sidebar's model boxes persist) and rerun."""
    from pages.ui import state

    at.session_state[state.MODEL_ID] = model_id
    at.run()
    return at


def warnings(at: AppTest) -> list[str]:
    return [as_read(w.value) for w in at.warning]


def as_read(markdown: str) -> str:
    """Markdown source as a reader sees it: backslash escapes (``plain`` names) removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def errors(at: AppTest) -> list[str]:
    """The text of every error box (escapes removed: see ``raw_errors`` for the source)."""
    return [as_read(e.value) for e in at.error]


def raw_errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def captions(at: AppTest) -> list[str]:
    return [as_read(c.value) for c in at.caption]


def image_captions(at: AppTest) -> list[str]:
    """Captions of every st.image on the page (sidebar included)."""
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def decode_plotly(value: Any) -> np.ndarray:
    """A Plotly JSON array: a plain list, or a typed array {dtype, bdata, shape}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            shape = [int(s) for s in str(value["shape"]).split(",")]
            array = array.reshape(shape)
        return array
    return np.asarray(value)


def plotly_figures(at: AppTest) -> list[dict[str, Any]]:
    """Every Plotly figure on the page as its JSON spec."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def figure_title(figure: dict[str, Any]) -> str:
    title = figure.get("layout", {}).get("title", {})
    return title.get("text", "") if isinstance(title, dict) else str(title)


def figures_titled(at: AppTest, prefix: str) -> list[dict[str, Any]]:
    return [f for f in plotly_figures(at) if figure_title(f).startswith(prefix)]


def shown_top5(figure: dict[str, Any]) -> list[tuple[str, float]]:
    """(class, probability) pairs of a top-5 bar chart, most probable first."""
    bar = figure["data"][0]
    names, values = list(bar["y"]), decode_plotly(bar["x"]).tolist()
    return list(zip(names, values))[::-1]


def shown_heatmap(at: AppTest, stage: str) -> np.ndarray:
    """The z values of the raw-map heatmap of one stage."""
    (figure,) = [f for f in plotly_figures(at) if figure_title(f).startswith(f"{stage} (")]
    return decode_plotly(figure["data"][0]["z"])


def direct_analysis(model_id: str, data: bytes) -> Analysis:
    """What ltpa itself says about an image file, without the app."""
    return analyse(load_zoo_model(model_id), load_image(data).array)


def assert_page_matches(at: AppTest, expected: Analysis) -> None:
    """The home page shows exactly ``expected``: top-5, and every stage's raw map."""
    (top5,) = figures_titled(at, "Top-5")
    shown = shown_top5(top5)
    assert [name for name, _ in shown] == [name for name, _ in expected.top(5)]
    np.testing.assert_allclose([p for _, p in shown], [p for _, p in expected.top(5)], rtol=1e-5)
    assert at.subheader[0].value == f"Prediction: {expected.predicted_class}"
    for stage_map in expected.maps:
        np.testing.assert_allclose(shown_heatmap(at, stage_map.stage), stage_map.native, rtol=1e-5, atol=1e-9)
