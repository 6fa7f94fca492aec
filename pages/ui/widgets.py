"""Widgets every page shares: the image picker, the model picker, cached model loading.

Pages call these inside ``with st.sidebar:`` (or anywhere); the chosen image and model persist
across pages through ``pages.ui.state``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np
import streamlit as st

# The model picker's selection logic (the axes, what the registry can build, the nearest shipped
# model) lives in the library, importable and testable without streamlit; this module keeps the
# widgets and their wording. PAPER_NORMALISATION is also imported from here by pages/2_Models.py.
from ltpa.design_space import (ATTENTION_FIELDS, MODEL_FIELDS, PAPER_NORMALISATION, ModelChoice, axis_options,
                               design_name, design_space, model_choice, nearest_model, requested_axes,
                               shipped_normalisations, shipped_with, short_value)
from ltpa.device import get_device
from ltpa.images import UPLOAD_EXTENSIONS, ImageError, LoadedImage, load_image
from ltpa.maintainer.baselines import read_cards, reproduction_dir
from ltpa.maintainer.selection import SELECTION_KEY, selection_problems
from ltpa.segmentation import DEFAULT_CAM_MODEL, DEFAULT_GRAD_CAM_MODEL
from ltpa.zoo import (MANIFEST_NAME, LoadedModel, ZooError, build_problem, list_zoo, load_zoo_model,
                      zoo_dir)
from pages.ui import compute, state
from pages.ui.text import plain

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


# A display copy is at most DISPLAY_MAX_SIDE square (5.6 MiB): 24 MiB keeps those of about four
# large images (with their 400 px previews), read-only and shared by every session.
@compute.bounded_cache(max_bytes=24 * compute.MiB)
def _shrunk(image_sha256: str, max_side: int, _image: np.ndarray) -> np.ndarray:
    return display_copy(_image, max_side)


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


@st.cache_data(show_spinner=False)  # one entry (no arguments) of a few hundred bytes: no byte bound needed
def gallery() -> list[Example]:
    """The shipped example images, in gallery order (empty if the gallery is missing)."""
    index = GALLERY_DIR / "gallery.json"
    if not index.is_file():
        return []
    examples = [Example(e["file"], e["title"], e["credit"], e.get("label"))
                for e in json.loads(index.read_text())["examples"]]
    return [e for e in examples if e.path.is_file()]


# Decoded images, keyed by the sha256 of the file: 128 MiB keeps the latest image even at the
# 40-megapixel limit (120 MB as RGB), or about three 12-megapixel photos.
@compute.bounded_cache(max_bytes=128 * compute.MiB)
def _decoded(file_sha256: str, _data: bytes) -> LoadedImage:
    return load_image(_data)


def decode_image(data: bytes) -> LoadedImage:
    """``ltpa.images.load_image`` cached on the sha256 of the file's bytes (errors are not cached).

    The decoded image is shared, not copied (a 40-megapixel image is 120 MB): one object for every
    session and rerun, its array read-only so no page can alter it."""
    return _decoded(compute.digest(data), data)


THUMBNAIL_SIDE = 96  # gallery thumbnails (CIFAR-10's 32x32 images are enlarged without smoothing)


# A thumbnail is at most 96x96x3 (27 KiB): 2 MiB holds the whole gallery a few times over.
@compute.bounded_cache(max_bytes=2 * compute.MiB)
def thumbnail(file: str, modified: float) -> np.ndarray:
    """A small read-only copy of a gallery image (cached until the file changes)."""
    array = load_image((GALLERY_DIR / file).read_bytes()).array
    if max(array.shape[:2]) < THUMBNAIL_SIDE:
        scale = THUMBNAIL_SIDE // max(array.shape[:2])
        return cv2.resize(array, (array.shape[1] * scale, array.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    return display_copy(array, THUMBNAIL_SIDE)


def upload_key(key: str = "image") -> str:
    """The uploader's widget key now: ``image.upload``, then ``image.upload.N`` after the N-th
    time an example replaced an upload (a new key is the only way to empty a file uploader)."""
    generation = int(state.get(state.UPLOAD_GENERATION, 0))
    return f"{key}.upload" + (f".{generation}" if generation else "")


def choose_example(file: str) -> None:
    """Make a gallery image the chosen image; an uploaded file still listed is dropped."""
    example = next((e for e in gallery() if e.file == file), None)
    if example is None:
        return
    if state.get(state.IMAGE_SOURCE) == "upload":
        state.put(state.UPLOAD_GENERATION, int(state.get(state.UPLOAD_GENERATION, 0)) + 1)
    state.set_image(example.path.read_bytes(), example.file, "example")
    state.put(state.EXAMPLE_TITLE, example.title)


def _on_upload(widget_key: str) -> None:
    uploaded = st.session_state.get(widget_key)
    state.put(state.EXAMPLE_TITLE, None)
    if uploaded is None:  # the user removed the file: fall back to the default example
        state.clear_image()
        return
    state.set_image(uploaded.getvalue(), uploaded.name, "upload")


def _on_example(widget_key: str) -> None:
    example = next((e for e in gallery() if e.title == st.session_state.get(widget_key)), None)
    if example is not None:
        choose_example(example.file)


def gallery_grid(examples: list[Example], key: str, per_row: int = 3) -> None:
    """The gallery as thumbnails, each with a button that picks it."""
    for start in range(0, len(examples), per_row):
        for column, example in zip(st.columns(per_row), examples[start:start + per_row]):
            with column:
                st.image(thumbnail(example.file, example.path.stat().st_mtime), width="stretch")
                st.button(example.title, key=f"{key}.thumb.{example.file}", on_click=choose_example,
                          args=(example.file,), width="stretch",
                          type="primary" if state.get(state.IMAGE_NAME) == example.file else "secondary")


def image_picker(key: str = "image", preview: bool = True) -> ChosenImage | None:
    """Upload an image or pick one from the gallery (a list and thumbnails); returns the decoded
    image, or None after showing a clear error here and recording it for the main area
    (``image_error``). Until the user chooses, the first gallery image is used so every page has
    something to show."""
    examples = gallery()
    widget_key = upload_key(key)
    st.file_uploader(
        "Upload an image", type=list(UPLOAD_EXTENSIONS), key=widget_key,
        on_change=_on_upload, args=(widget_key,),
        help="PNG, JPEG, WebP, BMP, TIFF or GIF (first frame); up to 40 megapixels.",
    )
    if state.get_image() is None and examples:
        choose_example(examples[0].file)
    example_key = f"{key}.example"
    # The box shows the persisted example on every run (another page may have changed it).
    titles = [e.title for e in examples]
    st.session_state[example_key] = state.get(state.EXAMPLE_TITLE) if state.get(state.EXAMPLE_TITLE) in titles else None
    st.selectbox(
        "…or pick an example", titles, index=None, key=example_key,
        placeholder="Choose an example image", on_change=_on_example, args=(example_key,),
    )
    if examples:
        with st.expander("Example gallery"):
            gallery_grid(examples, key)
    chosen = state.get_image()
    if chosen is None:
        st.info("Upload an image to begin (the example gallery is missing).")
        return None
    data, name, source = chosen
    try:
        loaded = decode_image(data)
    except ImageError as error:
        message = f"Cannot use **{plain(name)}**: {plain(str(error))}."
        state.put(state.IMAGE_ERROR, message)
        st.error(message)
        return None
    state.put(state.IMAGE_ERROR, None)
    chosen_image = ChosenImage(name, data, source, loaded)
    if preview:
        st.image(chosen_image.shown(PREVIEW_MAX_SIDE), caption=f"{name} ({loaded.width}x{loaded.height})",
                 width="stretch", output_format="JPEG")
    for note in loaded.notes:
        st.caption(f"ℹ️ {plain(note)}")
    return chosen_image


def ground_truth_uploader(chosen: ChosenImage | None, key: str = "masks.truth"):
    """The ground-truth mask uploader of the chosen image.

    A mask belongs to the image it was uploaded with: when the image changes, the uploader is
    emptied (a new widget key: ``key``, then ``key.N``) instead of scoring the new image against
    the old mask. Returns ``(uploaded file or None, name of a mask just removed or None)``."""
    dropped = None
    owner = state.get(state.TRUTH_OWNER)  # (image sha256, mask file name)
    if chosen is not None and owner is not None and owner[0] != chosen.sha256:
        dropped = owner[1]
        state.put(state.TRUTH_GENERATION, int(state.get(state.TRUTH_GENERATION, 0)) + 1)
        state.put(state.TRUTH_OWNER, None)
    generation = int(state.get(state.TRUTH_GENERATION, 0))
    uploaded = st.file_uploader(
        "Ground-truth mask (optional)", type=list(UPLOAD_EXTENSIONS),
        key=key if generation == 0 else f"{key}.{generation}",
        help="White (or any non-black) object on black: 0/255, 0/1, RGB or JPEG masks are fine; "
             "a different size is resized (nearest neighbour). It belongs to the image it was "
             "uploaded with: choosing another image removes it.",
    )
    if chosen is not None:
        state.put(state.TRUTH_OWNER, (chosen.sha256, uploaded.name) if uploaded is not None else None)
    return uploaded, dropped


def image_error() -> str | None:
    """Why the chosen file cannot be used (Markdown, names escaped), or None."""
    return state.get(state.IMAGE_ERROR)


def show_missing_image(hint: str) -> None:
    """In the main area: the chosen file's error when there is one, else ``hint``."""
    error = image_error()
    if error:
        st.error(error + " Choose another file or an example in the sidebar.")
    else:
        st.info(hint)


# --- models ---------------------------------------------------------------------------------

# A few small ModelChoice records and problem lines per manifest version: a count bound is enough.
@st.cache_data(show_spinner=False, max_entries=8)
def _zoo_choices(folder: str, manifest_mtime: float, kept_mtime: float) -> tuple[list[ModelChoice], list[str]]:
    """The describable zoo models, and one warning per card the registry cannot build (left out)
    or whose recorded seed selection the kept seed cards do not confirm (still a choice). A card
    whose file is missing stays a choice: loading it says so (model_or_error)."""
    choices, problems = [], []
    try:
        entries = list_zoo()
    except ZooError:  # a missing or empty zoo: the pages say so (no_models_message)
        return [], []
    kept = None
    for entry in entries:
        card = entry.card
        problem = build_problem(card)
        if problem:
            problems.append(f"Zoo entry **{plain(entry.id)}** is skipped: {plain(problem, 2000)}.")
            continue
        if card.get(SELECTION_KEY) is not None:
            kept = read_cards(reproduction_dir(Path(folder))) if kept is None else kept
            problems += [f"Zoo entry **{plain(entry.id)}**: how its seed was chosen cannot be confirmed: "
                         f"{plain(line, 2000)}." for line in selection_problems(card, kept)]
        choices.append(model_choice(entry.id, entry.registry_name, card.get("kwargs"), card.get("paper_name"),
                                    card.get("test_error")))
    return choices, problems


def _zoo_choices_and_problems() -> tuple[list[ModelChoice], list[str]]:
    manifest = zoo_dir() / MANIFEST_NAME
    kept = reproduction_dir(zoo_dir()) / "cards"
    # The mtimes are part of the key: a zoo (or a kept seed card) that lands while the app runs
    # shows up.
    return _zoo_choices(str(zoo_dir()), manifest.stat().st_mtime if manifest.is_file() else 0.0,
                        kept.stat().st_mtime if kept.is_dir() else 0.0)


def zoo_choices() -> list[ModelChoice]:
    """Every shipped model (of the zoo ``LTPA_ZOO`` points to now) the registry can build, in
    manifest order (:func:`zoo_problems_warning` names the others)."""
    return _zoo_choices_and_problems()[0]


def zoo_problems_warning() -> None:
    """One warning per zoo card the registry cannot build (such cards are not choices); called
    once per page run, by ``page_setup``."""
    for problem in _zoo_choices_and_problems()[1]:
        st.warning(problem)


def choice_of(model_id: str) -> ModelChoice | None:
    """The description of one shipped model, or None if the zoo lacks it."""
    return next((c for c in zoo_choices() if c.id == model_id), None)


def posthoc_model_ids() -> dict[str, str | None]:
    """The zoo models post-hoc saliency is shown on, by method: ``grad_cam`` on the plain VGG
    baseline and ``cam`` on VGG-GAP (the ids ``ltpa segment-eval`` uses when the zoo has them,
    else the first such model); None when the zoo has none. The one place pages look them up."""
    choices = zoo_choices()
    ids = {c.id for c in choices}
    plain_vgg = next((c.id for c in choices if c.backbone == "vgg" and not c.attention and not c.gap), None)
    gap = next((c.id for c in choices if c.gap), None)
    return {"grad_cam": DEFAULT_GRAD_CAM_MODEL if DEFAULT_GRAD_CAM_MODEL in ids else plain_vgg,
            "cam": DEFAULT_CAM_MODEL if DEFAULT_CAM_MODEL in ids else gap}


def no_models_message() -> None:
    """Tell the user the zoo is empty."""
    st.warning(NO_MODELS_MESSAGE.format(folder=zoo_dir()))


# --- the model picker: its widgets and wording (the logic is ltpa.design_space) ------------

FIELD_LABELS = {"backbone": "backbone", "attention_kind": "tapped stages", "head": "head",
                "compatibility": "compatibility", "normalisation": "normalisation"}
FIELD_HELP = {
    "backbone": "The network the attention estimators are added to: the paper's VGG (13 convolutional "
                "layers) or the pre-activation ResNet-164.",
    "attention_kind": "Which layers are tapped: each tapped stage scores its local features against the "
                      "network's global feature and gives one attention map (attN: N stages). A baseline "
                      "has no attention; VGG-GAP ends in global average pooling, so CAM can be drawn on it.",
    "head": "concat: one classifier on all attended features together; indep: one classifier per stage, "
            "predictions averaged.",
    "compatibility": "How a position's local feature l is scored against the global feature g: pc learns a "
                     "vector u and scores <u, l + g>; dp scores the dot product <l, g>.",
    "normalisation": "How a stage's scores become its attention map. softmax over all positions is the "
                     "paper's: the map sums to 1 and positions compete. sigmoid_sum is a deviation from "
                     "the paper: each position's sigmoid divided by their sum (the map still sums to 1, "
                     "but positions do not compete exponentially).",
}
NOT_SHIPPED = " (not shipped)"


def _stages_label(backbone: str | None, kind: str) -> str:
    """``3 stages: layers 7, 10, 13 (att3)`` for VGG, ``stages 2, 3 (att2)`` for ResNet."""
    if kind == "none":
        return "none (baseline)"
    if kind == "gap":
        return "none, global average pooling (CAM)"
    point = next((p for p in design_space() if p.backbone == backbone and p.attention_kind == kind), None)
    if point is None:
        return kind
    taps = ", ".join(map(str, point.taps))
    if backbone == "resnet":  # the taps are ResNet stages already
        return f"stage{'s' if len(point.taps) > 1 else ''} {taps} ({kind})"
    count = len(point.taps)
    return f"{count} stage{'s' if count > 1 else ''}: layer{'s' if count > 1 else ''} {taps} ({kind})"


def option_label(field: str, value: str, axes: Mapping[str, str | None], shipped: bool = True) -> str:
    """How the picker shows ``value`` of ``field`` (``axes``: the values chosen before it), marked
    ``(not shipped)`` when no shipped model has it with those values."""
    if field == "attention_kind":
        text = _stages_label(axes.get("backbone"), value)
    elif field == "normalisation":
        text = f"{value}, the paper's" if value == PAPER_NORMALISATION else f"{value}, deviation from the paper"
    else:
        text = short_value(field, value)
    return text if shipped else text + NOT_SHIPPED


def not_shipped_notice(choices: list[ModelChoice], wanted: Mapping[str, str | None], shown: ModelChoice,
                       field: str) -> str | None:
    """What to tell the user when the model asked for (``wanted``, after changing ``field``) is not
    shipped and ``shown`` is shown instead (Markdown, names escaped); None when it is shipped."""
    if shown.axes() == dict(wanted):
        return None
    # An axis a baseline lacks is implied by the tapped stages: only name axes both sides have.
    differences = [f"{FIELD_LABELS[f]} {short_value(f, getattr(shown, f))} instead of {short_value(f, wanted[f])}"
                   for f in MODEL_FIELDS if getattr(shown, f) != wanted[f]
                   and getattr(shown, f) is not None and wanted[f] is not None]
    message = (f"**{plain(design_name(wanted))} is not shipped.** Showing the nearest shipped model instead: "
               f"**{plain(shown.label)}** (`{shown.id}`)"
               + (f", with {plain('; '.join(differences))}." if differences else "."))
    value = wanted[field]
    if getattr(shown, field) != value:
        others = [c.label for c in choices if getattr(c, field) == value]
        if others:
            message += (f" Shipped with {FIELD_LABELS[field]} {plain(short_value(field, value))}: "
                        f"{plain(', '.join(others[:4]))}" + (" and others." if len(others) > 4 else "."))
    return message


def _notice_key(persist_key: str) -> str:
    # Beside the persisted model id: the note about the last change of that model picker.
    return f"{persist_key}.not_shipped_notice"


def _on_field(widget_key: str, persist_key: str, field: str, choice_ids: tuple[str, ...]) -> None:
    choices = [c for c in zoo_choices() if c.id in choice_ids]
    if not choices:
        return
    current = next((c for c in choices if c.id == state.get(persist_key)), choices[0])
    value = st.session_state[widget_key]
    shown_id = nearest_model(choices, current, field, value)
    shown = next(c for c in choices if c.id == shown_id)
    state.put(persist_key, shown_id)
    wanted = requested_axes(current, field, value, shipped_normalisations(choices))
    # Read (and dropped) by the next run of the picker: it shows once, after this change.
    state.put(_notice_key(persist_key), not_shipped_notice(choices, wanted, shown, field))


def model_picker(
    key: str = "model", persist_key: str = state.MODEL_ID, label: str = "Model",
    attention_only: bool = False,
) -> str | None:
    """Choose a zoo model along the paper's axes: backbone, tapped stages, head, compatibility and
    normalisation (one labelled control each; the last three only for attention models).

    Every axis offers every value the registry can build with the values above it, those no
    shipped model has marked "(not shipped)"; choosing one shows the nearest shipped model
    (:func:`nearest_model`) and, on the next run only, a notice naming what was asked for.

    Returns the model id (persisted under ``persist_key``), or None after saying the zoo is empty.
    The widgets have the keys ``{key}.backbone``, ``{key}.attention_kind``, ``{key}.head``,
    ``{key}.compatibility`` and ``{key}.normalisation``; tests may also set
    ``st.session_state[persist_key]`` and rerun.
    """
    choices = [c for c in zoo_choices() if c.attention or not attention_only]
    if not choices:
        no_models_message()
        return None
    by_id = {c.id: c for c in choices}
    current = by_id.get(state.get(persist_key)) or choices[0]
    state.put(persist_key, current.id)
    ids = tuple(by_id)
    axes = current.axes()
    normalisations = shipped_normalisations(choices)
    for field in MODEL_FIELDS:
        if field in ATTENTION_FIELDS and not current.attention:
            continue
        options = axis_options(field, axes, normalisations, attention_only)
        shipped = {v: shipped_with(choices, axes, field, v) for v in options}
        widget_key = f"{key}.{field}"
        # Every box shows the persisted model on every run (another page may have changed it); a
        # user's change goes back to the persisted model through the callback.
        st.session_state[widget_key] = getattr(current, field)
        widget = st.selectbox if field in ("backbone", "attention_kind") else st.radio
        # Two short values fit side by side; the normalisation labels are sentences.
        extra = {"horizontal": field in ("head", "compatibility")} if widget is st.radio else {}
        widget(f"{label}: {FIELD_LABELS[field]}", options, key=widget_key,
               format_func=functools.partial(_format_option, field, axes, shipped),
               on_change=_on_field, args=(widget_key, persist_key, field, ids), help=FIELD_HELP[field], **extra)
    notice = st.session_state.pop(_notice_key(persist_key), None)
    if notice:
        st.info(notice, icon=":material/info:")
    error = f" · {current.test_error:.2f}% test error" if current.test_error is not None else ""
    st.caption(f"{plain(current.label)} · `{current.id}`{error}")
    return current.id


def _format_option(field: str, axes: Mapping[str, str | None], shipped: Mapping[str, bool], value: str) -> str:
    return option_label(field, value, axes, shipped.get(value, True))


# Models are counted, not measured: the keys come from the zoo's manifest (load_model refuses any
# other id), so users cannot grow this; 16 entries hold the shipped zoo (7 checkpoints, 28 MB on
# disk) twice over, and a byte budget below the zoo's size would reload models on every page.
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
        if chosen is None:
            show_missing_image(hint)
        else:
            st.info(hint)
        st.stop()
    loaded = model_or_error(model_id)
    if loaded is None:
        st.stop()
    return loaded
