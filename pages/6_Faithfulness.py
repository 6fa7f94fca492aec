"""Faithfulness: does the chosen attention stage show what the decision depends on, better than a
post-hoc map? For the current image: deletion and insertion curves of the stage beside a post-hoc
map's (and a random map's), and the model-randomisation check as a row of maps.

All numbers come from ``ltpa.faithfulness_results.image_scorecard`` (one call, cached per image,
model and setting); the randomisation check runs on a private copy of the shared model.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st
import torch

from ltpa.faithfulness import ATTENTION, METHODS, REPLACEMENTS, applicable_methods, model_stages
from ltpa.faithfulness_results import image_curves_figure, image_scorecard
from ltpa.maps import overlay
from ltpa.preprocess import image_to_input
from pages.ui import compute, views
from pages.ui.nav import page_setup
from pages.ui.widgets import load_model, require_image_and_model

POSTHOC_LABELS = {"grad_cam": "Grad-CAM", "grad_cam_pp": "Grad-CAM++", "cam": "CAM"}
DISPLAY_SIDE = 160

page_setup("Faithfulness")
st.title("Is the attention faithful?")
st.markdown(
    "A map is **faithful** when the pixels it marks are the ones the prediction depends on. "
    "**Deletion** removes pixels most-marked first: the predicted class's probability should fall "
    "fast (small area). **Insertion** reveals them most-marked first on a blurred or grey canvas: "
    "it should rise fast (large area). A **random map** is the floor. The **randomisation check** "
    "re-initialises the model's layers from the top down: a map that still looks the same does "
    "not explain *this* model."
)

chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()
loaded = require_image_and_model(chosen, model_id, "Choose an image and a model in the sidebar.")
model = loaded.model
stages = list(model_stages(model))
valid = applicable_methods(model)
posthoc_choices = [m for m in ("grad_cam", "grad_cam_pp", "cam") if m in valid]

left, middle, right = st.columns(3)
with left:
    if stages:
        stage = st.selectbox("Attention stage", stages + [ATTENTION], key="faith.stage",
                             format_func=lambda s: "all stages combined" if s == ATTENTION else s)
    else:
        stage = None
        st.info(f"`{model_id}` is a baseline without attention: only post-hoc maps are scored. "
                "Pick an attention model in the sidebar to score its stages.")
with middle:
    posthoc = st.selectbox("Post-hoc map", posthoc_choices, format_func=POSTHOC_LABELS.get, key="faith.posthoc")
with right:
    replacement = st.selectbox("Removed pixels become", list(REPLACEMENTS), key="faith.replacement",
                               help="; ".join(f"{k}: {v}" for k, v in REPLACEMENTS.items()))
    steps = int(st.slider("Curve steps", 4, 32, 16, 4, key="faith.steps"))
methods = [m for m in (stage, posthoc, "random") if m]


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


def _shown(map_: np.ndarray) -> np.ndarray:
    big = np.kron(pixels, np.ones((DISPLAY_SIDE // pixels.shape[0], DISPLAY_SIDE // pixels.shape[1], 1), dtype=np.uint8))
    return overlay(big, map_, opacity, colormap, scaling)


compared = [m for m in (stage, posthoc) if m]
for column, method in zip(st.columns(len(compared)), compared):
    entry = card["methods"][method]
    with column:
        st.markdown(f"**{_label(method)}**")
        st.image(_shown(entry["map"]), caption=f"{_label(method)} over the 32×32 input", width=DISPLAY_SIDE)
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
