"""Session-state keys shared by every page, and the one way to read and write them.

Streamlit deletes a widget's state when a page that does not draw it runs, so values that must
survive a page switch live under these plain keys; widgets use their own keys and copy their
value here (see ``persisted``).
"""
from __future__ import annotations

from typing import Any, Callable

import streamlit as st

# The chosen image: the file's bytes and name, and where it came from ("upload" or "example").
IMAGE_BYTES = "ltpa.image.bytes"
IMAGE_NAME = "ltpa.image.name"
IMAGE_SOURCE = "ltpa.image.source"
# The gallery title of the chosen example (None after an upload): what the example box shows.
EXAMPLE_TITLE = "ltpa.image.example_title"
# Bumped when an example replaces an upload: the uploader gets a fresh key, so it drops the old file.
UPLOAD_GENERATION = "ltpa.image.upload_generation"
# Why the last chosen file cannot be used (None when it can): pages show it in the main area.
IMAGE_ERROR = "ltpa.image.error"
# The model shown on the home page (and the default elsewhere); a zoo id.
MODEL_ID = "ltpa.model_id"
# The models compared side by side on the Compare page; a list of zoo ids.
COMPARE_MODEL_IDS = "ltpa.compare_model_ids"
# Display settings shared by all pages that draw overlays.
OPACITY = "ltpa.display.opacity"
COLORMAP = "ltpa.display.colormap"
SCALING = "ltpa.display.scaling"  # "max" (a / peak) or "minmax" (stretch min..max), ltpa.maps modes

# The Masks page: stage, rule, stage combination, and one threshold per rule (kept when the rule
# changes, so switching back finds the threshold the user left).
MASK_STAGE = "ltpa.masks.stage"
MASK_RULE = "ltpa.masks.rule"
MASK_COMBINE = "ltpa.masks.combine"
MASK_THRESHOLD = "ltpa.masks.threshold."  # + rule name
# The uploaded ground-truth mask belongs to one image: (image sha256, mask file name), and the
# uploader's key generation (bumped to empty it when the image changes).
TRUTH_OWNER = "ltpa.masks.truth_owner"
TRUTH_GENERATION = "ltpa.masks.truth_generation"
# The Faithfulness page: the attention stage scored, the post-hoc map beside it, what removed
# pixels become (an ``ltpa.faithfulness.REPLACEMENTS`` name) and the number of curve steps.
FAITH_STAGE = "ltpa.faith.stage"
FAITH_POSTHOC = "ltpa.faith.posthoc"
FAITH_FILL = "ltpa.faith.fill"
FAITH_STEPS = "ltpa.faith.steps"
# The Lesson page's current step (1-based).
LESSON_STEP = "ltpa.lesson.step"

DEFAULT_OPACITY = 0.5
DEFAULT_COLORMAP = "jet"
DEFAULT_SCALING = "max"


def get(key: str, default: Any = None) -> Any:
    """The persisted value of ``key`` (one of the constants above)."""
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    """Persist ``value`` under ``key`` for every page of this session."""
    st.session_state[key] = value


def set_image(data: bytes, name: str, source: str) -> None:
    """Make an image file the chosen image of this session."""
    st.session_state[IMAGE_BYTES] = bytes(data)
    st.session_state[IMAGE_NAME] = name
    st.session_state[IMAGE_SOURCE] = source


def get_image() -> tuple[bytes, str, str] | None:
    """The chosen image as (bytes, name, source), or None when none has been chosen."""
    if IMAGE_BYTES not in st.session_state:
        return None
    return st.session_state[IMAGE_BYTES], st.session_state[IMAGE_NAME], st.session_state[IMAGE_SOURCE]


def clear_image() -> None:
    """Forget the chosen image."""
    for key in (IMAGE_BYTES, IMAGE_NAME, IMAGE_SOURCE):
        st.session_state.pop(key, None)


def _copy_widget_value(widget_key: str, key: str) -> None:
    st.session_state[key] = st.session_state[widget_key]


def persisted(widget: Callable[..., Any], label: str, key: str, default: Any, **kwargs: Any) -> Any:
    """Draw ``widget`` whose value survives page switches: it shows the value persisted under
    ``key`` (or ``default``) and a change by the user is written back there.

    The widget's own state is reset from ``key`` on every run because pages sharing a widget key
    would otherwise see a stale value left by another page.
    """
    widget_key = f"widget.{key}"
    st.session_state[key] = st.session_state.get(key, default)
    st.session_state[widget_key] = st.session_state[key]
    return widget(label, key=widget_key, on_change=_copy_widget_value, args=(widget_key, key), **kwargs)
