"""Faithfulness: does the chosen attention stage show what the decision depends on, better than a
post-hoc map? For the current image: deletion and insertion curves of the stage beside a post-hoc
map's (and a random map's), and the model-randomisation check as a row of maps.

All numbers come from ``ltpa.faithfulness_results.image_scorecard`` (one call, cached per image,
model and setting); the randomisation check runs on a private copy of the shared model. The
settings are in the URL (``pages/ui/url_state.py``): the shared image, model and display ones, and
``stage``, ``posthoc``, ``fill`` (what removed pixels become) and ``steps`` (curve steps).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st
import torch

from ltpa import figures
from ltpa.faithfulness import ATTENTION, METHODS, REPLACEMENTS, applicable_methods, model_stages
from ltpa.faithfulness_results import image_curves_figure, image_scorecard
from ltpa.maps import map_stats, overlay
from ltpa.preprocess import image_to_input
from pages.ui import compute, state, views
from pages.ui import url_state as url
from pages.ui.nav import page_setup
from pages.ui.widgets import load_model, require_image_and_model

POSTHOC_LABELS = {"grad_cam": "Grad-CAM", "grad_cam_pp": "Grad-CAM++", "cam": "CAM"}
# Side of the two compared maps (large enough for the near-uniform label drawn on them) and of
# the randomisation check's smaller maps.
MAP_SIDE = 256
DISPLAY_SIDE = 160
# The curve-steps slider: 4 to 32 in steps of 4.
STEPS_RANGE = (4, 32, 4)
DEFAULT_STEPS = 16


def steps_parser(text: str) -> int:
    """The URL's ``steps``: a whole number on the slider's grid (4, 8, ... 32)."""
    low, high, step = STEPS_RANGE
    value = url.integer("curve steps", low, high)(text)
    if value % step:
        raise ValueError(f"curve steps must be a multiple of {step} from {low} to {high}; got {value}")
    return value


def stage_parser(options: list[str]) -> url.Parser:
    """The URL's ``stage``: one of the model's stages or ``attention`` (none for a baseline)."""
    if options:
        return url.choice("attention stage", options)

    def parse(text: str) -> str:
        raise ValueError("the chosen model is a baseline without attention stages")
    return parse


page_setup("Faithfulness")
link = url.incoming()
st.title("Is the attention faithful?")
st.markdown(
    "A map is **faithful** when the pixels it marks are the ones the prediction depends on. "
    "**Deletion** removes pixels most-marked first: the predicted class's probability should fall "
    "fast (small area). **Insertion** reveals them most-marked first on a blurred or grey canvas: "
    "it should rise fast (large area). A **random map** is the floor. The **randomisation check** "
    "re-initialises the model's layers from the top down: a map that still looks the same does "
    "not explain *this* model."
)

link.adopt(url.single_model_view())
chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()
loaded = require_image_and_model(chosen, model_id, "Choose an image and a model in the sidebar.")
model = loaded.model
stages = list(model_stages(model))
valid = applicable_methods(model)
posthoc_choices = [m for m in ("grad_cam", "grad_cam_pp", "cam") if m in valid]
stage_choices = stages + [ATTENTION] if stages else []

link.adopt([
    url.Setting("stage", stage_parser(stage_choices), url.to_state(state.FAITH_STAGE)),
    url.Setting("posthoc", url.choice("post-hoc map", posthoc_choices), url.to_state(state.FAITH_POSTHOC)),
    url.Setting("fill", url.choice("removed-pixel fill", list(REPLACEMENTS)), url.to_state(state.FAITH_FILL)),
    url.Setting("steps", steps_parser, url.to_state(state.FAITH_STEPS)),
])
# A value kept from another model (other stages, no CAM) falls back to the first choice.
if stage_choices and state.get(state.FAITH_STAGE) not in stage_choices:
    state.put(state.FAITH_STAGE, stage_choices[0])
if state.get(state.FAITH_POSTHOC) not in posthoc_choices:
    state.put(state.FAITH_POSTHOC, posthoc_choices[0])

left, middle, right = st.columns(3)
with left:
    if stages:
        stage = state.persisted(st.selectbox, "Attention stage", state.FAITH_STAGE, stage_choices[0],
                                options=stage_choices,
                                format_func=lambda s: "all stages combined" if s == ATTENTION else s)
    else:
        stage = None
        st.info(f"`{model_id}` is a baseline without attention: only post-hoc maps are scored. "
                "Pick an attention model in the sidebar to score its stages.")
with middle:
    posthoc = state.persisted(st.selectbox, "Post-hoc map", state.FAITH_POSTHOC, posthoc_choices[0],
                              options=posthoc_choices, format_func=POSTHOC_LABELS.get)
with right:
    replacement = state.persisted(st.selectbox, "Removed pixels become", state.FAITH_FILL, "blur",
                                  options=list(REPLACEMENTS),
                                  help="; ".join(f"{k}: {v}" for k, v in REPLACEMENTS.items()))
    low, high, step = STEPS_RANGE
    steps = int(state.persisted(st.slider, "Curve steps", state.FAITH_STEPS, DEFAULT_STEPS, min_value=low,
                                max_value=high, step=step))
methods = [m for m in (stage, posthoc, "random") if m]
url.publish({**url.single_model_values(chosen, model_id, colormap, opacity, scaling),
             "stage": stage, "posthoc": posthoc, "fill": replacement, "steps": steps})


@compute.bounded_cache(max_bytes=16 * compute.MiB, name="faithfulness.card")
def _card(model: compute.Key, image_sha: str, methods: tuple[str, ...], steps: int, replacement: str,
          _model_id: str, _x: np.ndarray) -> dict[str, Any]:
    shared = load_model(_model_id).model
    device = next(shared.parameters()).device
    return image_scorecard(shared, torch.from_numpy(np.array(_x))[None].to(device), list(methods),
                           steps, replacement)


x = image_to_input(chosen.array, loaded.input_size)[0].numpy()
try:
    with st.spinner("Scoring the maps…"):
        card = _card(compute.model_key(model_id), chosen.sha256, tuple(methods), steps, replacement, model_id, x)
except (ValueError, RuntimeError) as error:
    st.error(f"Cannot score this image: {error}")
    st.stop()

names = loaded.class_names
st.subheader(f"Predicted class: {names[card['class_index']]} ({card['probability']:.1%})")
pixels = np.round(np.transpose(x, (1, 2, 0)) * 255).astype(np.uint8)


def _label(method: str) -> str:
    if method == ATTENTION:
        return "all stages combined"
    return POSTHOC_LABELS.get(method, method)


def _shown(map_: np.ndarray, side: int = DISPLAY_SIDE, labelled: bool = False) -> np.ndarray:
    """The map over the enlarged 32x32 input; with ``labelled``, a near-uniform map says so on the
    picture (as on the Home page)."""
    big = np.kron(pixels, np.ones((side // pixels.shape[0], side // pixels.shape[1], 1), dtype=np.uint8))
    picture = overlay(big, map_, opacity, colormap, scaling)
    label = figures.near_uniform_label(map_stats(map_)) if labelled else None
    return figures.with_banner(picture, label) if label is not None else picture


compared = [m for m in (stage, posthoc) if m]
views.colour_scale(colormap, scaling)
for column, method in zip(st.columns(len(compared)), compared):
    entry = card["methods"][method]
    with column:
        st.markdown(f"**{_label(method)}**")
        st.image(_shown(entry["map"], MAP_SIDE, labelled=True), caption=f"{_label(method)} over the 32×32 input",
                 width=MAP_SIDE)
        for curve in ("deletion", "insertion"):
            title = f"{_label(method)}: {curve}"
            st.plotly_chart(image_curves_figure(card, [method, "random"], curve, title),
                            width="stretch", key=f"faith.{method}.{curve}")
        st.caption(
            f"Deletion area {entry['deletion_auc']:.3f} (random {card['methods']['random']['deletion_auc']:.3f}; "
            f"lower is better) · insertion area {entry['insertion_auc']:.3f} (random "
            f"{card['methods']['random']['insertion_auc']:.3f}; higher is better) · confidence drop "
            f"{entry['average_drop']:.1f}% when the image is faded to grey outside the map."
        )

st.subheader("Randomisation check")
st.markdown(
    "Each row re-initialises more of the model, from the classifier down to the first layer "
    "(on a private copy). ρ is the rank correlation with the trained model's map: a faithful map "
    "should change (ρ falls); one that stays the same reflects the image, not the model."
)
for method in compared:
    entry = card["methods"][method]
    cells = st.columns(1 + len(card["randomisation_steps"]))
    cells[0].image(_shown(entry["map"]), caption=f"{_label(method)}: trained", width="stretch")
    for cell, deepest, count, randomised, rho in zip(cells[1:], card["randomisation_steps"], card["layers_reset"],
                                                     entry["randomised_maps"], entry["rho"]):
        rho_text = "flat map" if np.isnan(rho) else f"ρ {rho:.2f}"
        cell.image(_shown(randomised), caption=f"top {count}/{card['total_layers']} layers reset: {rho_text}",
                   width="stretch")
st.caption(f"Methods: {'; '.join(f'{k}: {v}' for k, v in METHODS.items() if k in methods or k == 'stages')}. "
           "Scores for the whole CIFAR-10 test set: `ltpa faithfulness` (docs/faithfulness.md).")

# One picture for a slide: the image with every attention stage and the post-hoc map over it.
analysis = compute.analysis_for(model_id, chosen)
panels = [(m.stage, m.native) for m in analysis.maps] + [(_label(posthoc), card["methods"][posthoc]["map"])]
views.stages_figure_download(chosen, panels, opacity, colormap, scaling,
                             chosen.name.rsplit(".", 1)[0] + f"_{model_id}_faithfulness", key="faith.figure",
                             title=f"{model_id}: {names[card['class_index']]}")
