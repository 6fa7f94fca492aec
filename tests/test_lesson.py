"""The Lesson page through AppTest: its steps, and every preset link opening its page in the state
it promises (no warning, no error, the settings in place)."""
from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import HOME, TIMEOUT_S, errors, start_app, warnings
from pages.ui import lesson, state

LESSON = "pages/5_Lesson.py"
# Where each URL setting lands in the session state, to check a preset was applied.
STATE_OF = {"image": state.IMAGE_NAME, "model": state.MODEL_ID, "models": state.COMPARE_MODEL_IDS,
            "scaling": state.SCALING, "stage": state.MASK_STAGE, "rule": state.MASK_RULE}


def lesson_page() -> AppTest:
    at = start_app()
    at.switch_page(LESSON).run()
    assert not at.exception, at.exception
    return at


def preset_links(at: AppTest) -> list[tuple[str, str, dict[str, str]]]:
    """(label, page url path, query) of the preset links in the main area."""
    links = [e.proto for e in at.main.get("page_link")]
    return [(p.label, p.page, {k: v[-1] for k, v in parse_qs(p.query_string).items()}) for p in links]


def test_next_and_previous_walk_every_step_and_the_url_follows(tiny_zoo):
    at = lesson_page()
    for number, step in enumerate(lesson.STEPS, start=1):
        assert at.header[0].value == f"Step {number} of {len(lesson.STEPS)}: {step.title}"
        assert at.query_params["step"] == str(number)
        assert [label for label, _, _ in preset_links(at)] == [p.label for p in step.presets]
        assert at.expander[0].label == "Teacher notes"
        if number < len(lesson.STEPS):
            at.button(key="lesson.next").click().run()
    at.button(key="lesson.previous").click().run()
    assert at.header[0].value.startswith(f"Step {len(lesson.STEPS) - 1} of")


def test_a_shared_lesson_link_opens_its_step(tiny_zoo):
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT_S)
    at.run()
    at.switch_page(LESSON)
    at.query_params["step"] = "3"
    at.run()
    assert at.header[0].value.startswith("Step 3 of")
    at.query_params["step"] = "99"
    at.run()
    assert any("setting **step** was ignored" in w for w in warnings(at))


def _pages() -> list[tuple[int, int]]:
    return [(s, p) for s, step in enumerate(lesson.STEPS) for p in range(len(step.presets))]


@pytest.mark.parametrize("step_index, preset_index", _pages())
def test_every_preset_opens_its_page_in_that_state(tiny_zoo, step_index, preset_index):
    preset = lesson.STEPS[step_index].presets[preset_index]
    at = lesson_page()
    for _ in range(step_index):
        at.button(key="lesson.next").click().run()
    label, _, query = preset_links(at)[preset_index]
    assert label == preset.label
    # Follow the link as a browser would: a fresh session on that page with that query string.
    opened = AppTest.from_file(str(HOME), default_timeout=TIMEOUT_S)
    opened.run()
    if preset.page != lesson.HOME:
        opened.switch_page(preset.page)
    opened.query_params.update(query)
    opened.run()
    assert not opened.exception, opened.exception
    assert not warnings(opened) and not errors(opened), (warnings(opened), errors(opened))
    for name, value in query.items():
        if name in STATE_OF:
            shown = opened.session_state[STATE_OF[name]]
            assert (",".join(shown) if isinstance(shown, list) else str(shown)) == value, name
    assert all(opened.query_params.get(name) == value for name, value in query.items()), opened.query_params
