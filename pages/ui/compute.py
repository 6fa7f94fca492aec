"""Results cached by image bytes and settings (``st.cache_data``): reruns that only change a
display setting reuse the forward pass. Every page gets its numbers through these functions."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ltpa.inference import Analysis, StageMap, analyse, posthoc
from ltpa.maps import overlay
from ltpa.zoo import zoo_dir
from pages.ui.widgets import DISPLAY_MAX_SIDE, ChosenImage, display_copy, load_model  # noqa: F401



def _checkpoint_key(model_id: str) -> tuple[str, str]:
    loaded = load_model(model_id)
    return str(zoo_dir()), str(loaded.entry.card.get("sha256", ""))


@st.cache_data(show_spinner=False, max_entries=64)
def _analysis(model_id: str, zoo_key: tuple[str, str], image_sha256: str, _image: np.ndarray) -> Analysis:
    return analyse(load_model(model_id), _image)


def analysis_for(model_id: str, chosen: ChosenImage) -> Analysis:
    """``ltpa.inference.analyse`` of the chosen image by a zoo model, cached per image and model."""
    return _analysis(model_id, _checkpoint_key(model_id), chosen.sha256, chosen.array)


@st.cache_data(show_spinner=False, max_entries=64)
def _posthoc(model_id: str, zoo_key: tuple[str, str], image_sha256: str, method: str,
             class_index: int | None, _image: np.ndarray) -> StageMap:
    return posthoc(load_model(model_id), _image, method, class_index)


def posthoc_for(model_id: str, chosen: ChosenImage, method: str = "grad_cam",
                class_index: int | None = None) -> StageMap:
    """``ltpa.inference.posthoc`` (``grad_cam`` or ``cam``) on the chosen image, cached."""
    return _posthoc(model_id, _checkpoint_key(model_id), chosen.sha256, method, class_index, chosen.array)


@st.cache_data(show_spinner=False, max_entries=256)
def _overlay(image_key: str, native_map: np.ndarray, opacity: float, colormap: str, scaling: str,
             _image: np.ndarray) -> np.ndarray:
    return overlay(_image, native_map, opacity=opacity, colormap=colormap, mode=scaling)


def overlay_for(chosen: ChosenImage, stage_map: StageMap, opacity: float, colormap: str,
                full_resolution: bool = False, scaling: str = "max") -> np.ndarray:
    """A stage's map blended over the chosen image (``ltpa.maps.overlay``), cached per setting.

    On screen very large images are drawn at ``DISPLAY_MAX_SIDE``; ``full_resolution`` gives the
    overlay at the image's own size (for downloads). ``scaling`` is an ``ltpa.maps`` normalisation
    mode: ``max`` (a / peak) or ``minmax``."""
    image = chosen.array if full_resolution else chosen.shown()
    key = f"{chosen.sha256}:{image.shape[0]}x{image.shape[1]}"
    return _overlay(key, stage_map.native, float(opacity), colormap, scaling, image)
