"""Widgets every page shares: the image picker, the model picker, cached model loading.

Pages call these inside ``with st.sidebar:`` (or anywhere); the chosen image and model persist
across pages through ``pages.ui.state``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from ltpa.device import get_device
from ltpa.images import UPLOAD_EXTENSIONS, ImageError, LoadedImage, load_image
from ltpa.registry import get_spec
from ltpa.zoo import MANIFEST_NAME, LoadedModel, list_zoo, load_zoo_model, zoo_dir
from pages.ui import state

REPO = Path(__file__).resolve().parents[2]
GALLERY_DIR = REPO / "assets" / "examples"
NO_MODELS_MESSAGE = (
    "No models in the zoo yet: the manifest at {folder} lists none. Train one with `ltpa train` "
    "and register it, or set LTPA_ZOO to a folder holding a manifest.json."
)


# Images larger than this (longest side, pixels) are drawn on screen at this size; overlays are
# computed for that copy, and downloads stay at the image's full resolution. Streamlit itself
# shrinks images wider than 1460 px on every rerun, so staying below that saves its resize too.
DISPLAY_MAX_SIDE = 1400
PREVIEW_MAX_SIDE = 400


def display_copy(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """The image itself, or a copy shrunk (area interpolation) so its longest side is ``max_side``."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@st.cache_resource(show_spinner=False, max_entries=16)
def _shrunk(image_sha256: str, max_side: int, _image: np.ndarray) -> np.ndarray:
    shrunk = display_copy(_image, max_side)
    shrunk.flags.writeable = False
    return shrunk


# --- images ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """One image of the example gallery."""

    file: str
    title: str
    credit: str
    label: str | None

    @property
    def path(self) -> Path:
        return GALLERY_DIR / self.file


@dataclass(frozen=True)
class ChosenImage:
    """The image a page works on: the file as given, and its decoded RGB pixels."""

    name: str
    data: bytes
    source: str  # "upload" or "example"
    loaded: LoadedImage

    @property
    def array(self) -> np.ndarray:
        return self.loaded.array

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    def shown(self, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
        """The image as drawn on screen: itself, or a cached read-only copy shrunk to ``max_side``."""
        if max(self.array.shape[:2]) <= max_side:
            return self.array
        return _shrunk(self.sha256, max_side, self.array)


@st.cache_data(show_spinner=False)
def gallery() -> list[Example]:
    """The shipped example images, in gallery order (empty if the gallery is missing)."""
    index = GALLERY_DIR / "gallery.json"
    if not index.is_file():
        return []
    examples = [Example(e["file"], e["title"], e["credit"], e.get("label"))
                for e in json.loads(index.read_text())["examples"]]
    return [e for e in examples if e.path.is_file()]


@st.cache_resource(show_spinner=False, max_entries=4, ttl=3600)
def decode_image(data: bytes) -> LoadedImage:
    """``ltpa.images.load_image`` cached on the file's bytes (errors are not cached).

    cache_resource, not cache_data: a 40-megapixel image is 120 MB, and cache_data would unpickle
    a fresh copy on every rerun. The shared array is made read-only so no page can alter it."""
    loaded = load_image(data)
    loaded.array.flags.writeable = False
    return loaded


def _on_upload(upload_key: str, example_key: str) -> None:
    uploaded = st.session_state.get(upload_key)
    if uploaded is None:  # the user removed the file: fall back to the default example
        state.clear_image()
        return
    state.set_image(uploaded.getvalue(), uploaded.name, "upload")
    st.session_state[example_key] = None


def _on_example(example_key: str) -> None:
    title = st.session_state.get(example_key)
    example = next((e for e in gallery() if e.title == title), None)
    if example is not None:
        state.set_image(example.path.read_bytes(), example.file, "example")


def image_picker(key: str = "image", preview: bool = True) -> ChosenImage | None:
    """Upload an image or pick one from the gallery; returns the decoded image, or None after
    showing a clear error (the page goes on running). Until the user chooses, the first gallery
    image is used so every page has something to show."""
    upload_key, example_key = f"{key}.upload", f"{key}.example"
    examples = gallery()
    st.file_uploader(
        "Upload an image", type=list(UPLOAD_EXTENSIONS), key=upload_key,
        on_change=_on_upload, args=(upload_key, example_key),
        help="PNG, JPEG, WebP, BMP, TIFF or GIF (first frame); up to 40 megapixels.",
    )
    st.selectbox(
        "…or pick an example", [e.title for e in examples], index=None, key=example_key,
        placeholder="Choose an example image", on_change=_on_example, args=(example_key,),
    )
    if state.get_image() is None and examples:
        state.set_image(examples[0].path.read_bytes(), examples[0].file, "example")
    chosen = state.get_image()
    if chosen is None:
        st.info("Upload an image to begin (the example gallery is missing).")
        return None
    data, name, source = chosen
    try:
        loaded = decode_image(data)
    except ImageError as error:
        st.error(f"Cannot use **{name}**: {error}.")
        return None
    chosen_image = ChosenImage(name, data, source, loaded)
    if preview:
        st.image(chosen_image.shown(PREVIEW_MAX_SIDE), caption=f"{name} ({loaded.width}x{loaded.height})",
                 width="stretch", output_format="JPEG")
    for note in loaded.notes:
        st.caption(f"ℹ️ {note}")
    return chosen_image


# --- models ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelChoice:
    """A zoo model described by the choices that tell models apart."""

    id: str
    paper_name: str
    backbone: str  # "vgg" or "resnet"
    attention: bool
    levels: int  # number of attention stages (0 for baselines)
    head: str | None  # "concat" / "indep", None for baselines
    compatibility: str | None  # "pc" / "dp", None for baselines
    gap: bool  # global-average-pooling baseline (has CAM)
    test_error: float | None

    @property
    def label(self) -> str:
        """Short enough for the sidebar: the choices that differ, plus the measured error."""
        if self.attention:
            text = f"att{self.levels} · {self.head} · {self.compatibility}"
        elif self.gap:
            text = "GAP baseline (CAM)"
        else:
            text = "baseline, no attention"
        return text + (f" · {self.test_error:.2f}% err" if self.test_error is not None else "")


BACKBONE_LABELS = {"vgg": "VGG", "resnet": "ResNet"}


@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_choices(folder: str, manifest_mtime: float) -> list[ModelChoice]:
    choices = []
    for entry in list_zoo():
        card = entry.card
        spec = get_spec(entry.registry_name)
        error = card.get("test_error")
        choices.append(ModelChoice(
            id=entry.id,
            paper_name=str(card.get("paper_name") or spec.paper_name),
            backbone=spec.backbone,
            attention=spec.attention,
            levels=len(spec.fixed.get("taps", ())),
            head=spec.fixed.get("head") if spec.attention else None,
            compatibility=spec.fixed.get("compatibility") if spec.attention else None,
            gap=bool(spec.fixed.get("gap", False)),
            test_error=float(error) if error is not None else None,
        ))
    return choices


def zoo_choices() -> list[ModelChoice]:
    """Every shipped model (of the zoo ``LTPA_ZOO`` points to now), in manifest order."""
    manifest = zoo_dir() / MANIFEST_NAME
    # The manifest's mtime is part of the key: a zoo that lands while the app runs shows up.
    return _zoo_choices(str(zoo_dir()), manifest.stat().st_mtime if manifest.is_file() else 0.0)


def choice_of(model_id: str) -> ModelChoice | None:
    """The description of one shipped model, or None if the zoo lacks it."""
    return next((c for c in zoo_choices() if c.id == model_id), None)


def no_models_message() -> None:
    """Tell the user the zoo is empty."""
    st.warning(NO_MODELS_MESSAGE.format(folder=zoo_dir()))


def model_picker(
    key: str = "model", persist_key: str = state.MODEL_ID, label: str = "Model",
    attention_only: bool = False,
) -> str | None:
    """Choose a zoo model by backbone, then by attention stages / head / compatibility.

    Returns the model id (persisted under ``persist_key``), or None after saying the zoo is empty.
    """
    choices = [c for c in zoo_choices() if c.attention or not attention_only]
    if not choices:
        no_models_message()
        return None
    ids = [c.id for c in choices]
    current = state.get(persist_key)
    if current not in ids:
        current = ids[0]
    state.put(persist_key, current)
    by_id = {c.id: c for c in choices}
    backbones = list(dict.fromkeys(c.backbone for c in choices))
    backbone_key, variant_key = f"{key}.backbone", f"{key}.variant"
    # Both boxes show the persisted model on every run (another page may have changed it); a
    # user's change goes back to the persisted model through the callbacks.
    st.session_state[backbone_key] = by_id[current].backbone
    backbone = st.selectbox(
        f"{label}: backbone", backbones, key=backbone_key,
        format_func=lambda b: BACKBONE_LABELS.get(b, b),
        on_change=_on_backbone, args=(backbone_key, persist_key, tuple((c.id, c.backbone, c.compatibility) for c in choices)),
    )
    options = [c.id for c in choices if c.backbone == backbone]
    st.session_state[variant_key] = current
    model_id = st.selectbox(
        f"{label}: attention · head · compatibility", options, key=variant_key,
        format_func=lambda i: by_id[i].label, on_change=_on_variant, args=(variant_key, persist_key),
        help="pc: learned compatibility <u, l + g>; dp: dot product <l, g>. concat: one classifier "
             "on all attended features; indep: one per stage.",
    )
    return model_id


def _on_backbone(backbone_key: str, persist_key: str,
                 models: tuple[tuple[str, str, str | None], ...]) -> None:
    # A new backbone: keep the compatibility function (pc stays pc) if the backbone has one, so a
    # class can flip between VGG and ResNet with everything else equal.
    backbone = st.session_state[backbone_key]
    compatibility = next((c for i, _, c in models if i == state.get(persist_key)), None)
    options = [(i, c) for i, b, c in models if b == backbone]
    if options and state.get(persist_key) not in [i for i, _ in options]:
        same = [i for i, c in options if c == compatibility]
        state.put(persist_key, (same or [options[0][0]])[0])


def _on_variant(variant_key: str, persist_key: str) -> None:
    state.put(persist_key, st.session_state[variant_key])


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def _load(folder: str, model_id: str, sha256: str, device: str) -> LoadedModel:
    # folder and sha256 are part of the cache key so a replaced zoo or checkpoint is reloaded.
    return load_zoo_model(model_id, device=device)


def load_model(model_id: str) -> LoadedModel:
    """The zoo model in eval mode on the best device, loaded once per process and shared by all
    sessions: never call ``.train()``, register hooks or ``.backward()`` on it."""
    entry = next((e for e in list_zoo() if e.id == model_id), None)
    if entry is None:
        raise ValueError(f"no shipped model {model_id!r} in {zoo_dir()}")
    return _load(str(zoo_dir()), model_id, str(entry.card.get("sha256", "")), str(get_device()))


def model_or_error(model_id: str) -> LoadedModel | None:
    """``load_model`` that shows a clear error in the page (and returns None) instead of raising."""
    try:
        return load_model(model_id)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as error:
        st.error(f"Cannot load model **{model_id}**: {error}")
        return None


def require_image_and_model(chosen: ChosenImage | None, model_id: str | None,
                            hint: str) -> LoadedModel:
    """The loaded model for a page that needs both an image and a model; otherwise show ``hint``
    (or the loading error) and stop the page run."""
    if chosen is None or model_id is None:
        st.info(hint)
        st.stop()
    loaded = model_or_error(model_id)
    if loaded is None:
        st.stop()
    return loaded
