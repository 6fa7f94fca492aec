"""Masks: threshold a stage's attention map into a mask, score it against an uploaded ground
truth, and see CAM, Grad-CAM and a centre prior thresholded the same way.

Maps are computed once per image and model (``st.cache_data``); moving the threshold only
re-thresholds the cached map with a precomputed cut table (``ltpa.masks.cut_table``).
"""
from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from ltpa import masks
from ltpa.images import bytes_sha256
from ltpa.segmentation import COMBINED
from pages.ui import state, views
from pages.ui import url_state as url
from pages.ui.compute import analysis_for
from pages.ui.mask_compute import (RULE_LABELS, attention_unit_map, checkpoint_key, curve_figure, map_overlay,
                                   posthoc_unit_map, prior_unit_map, rule_table, truth_mask, work_image_at)
from pages.ui.nav import page_setup
from pages.ui.text import plain
from pages.ui.widgets import (
    ground_truth_uploader,
    image_picker,
    model_or_error,
    model_picker,
    posthoc_model_ids,
    require_image_and_model,
)

# Masks are computed at the ground truth's size (as ``ltpa segment-eval`` does), else at the
# image's; capped so a huge photo keeps the page live, and at least 8 pixels a side so a 1-pixel
# image or mask (or a 1-pixel-high strip) still gives a 2-D map to threshold.
MAX_SIDE = 1024
MIN_SIDE = 8
PRIOR_SIGMA = 0.25
# Slider range and step of each rule's threshold (the values ``masks.FINE_GRIDS`` tabulates).
THRESHOLD_RANGES = {"fraction": (0.01, 1.0, 0.01), "top": (1, 100, 1), "mass": (1, 100, 1)}
THRESHOLD_LABELS = {"fraction": "Threshold: fraction of the maximum", "top": "Keep the top q % of pixels",
                    "mass": "Keep p % of the attention mass"}

page_setup("Masks")
link = url.incoming()
st.title("Masks: from attention to segmentation")
st.markdown(
    "The paper's boldest claim beyond accuracy: attention maps, binarised, **segment the object** "
    "better than post-hoc saliency. Pick a stage (or all stages combined), a rule and a threshold "
    "to turn its map into a mask. Upload the object's ground-truth mask to score it (Jaccard = "
    "intersection over union) and to see how the score depends on the threshold. Below, CAM, "
    "Grad-CAM and a plain centred blob are thresholded the same way."
)
st.info(
    "**What the shipped models show:** on the 328 Weizmann horses (docs/results.md) the VGG "
    "attention maps score *below* a plain centred blob under every fixed rule (best 0.338 against "
    "0.420-0.428 Jaccard); only the ResNet-att2-pc maps beat the blob, by at most 0.061, and the "
    "blob still points inside the horse more often (96% of images). So on a typical image the "
    "blob may well win: that is a finding, not a bug.", icon=":material/fact_check:")
with st.expander("The rules"):
    st.markdown(
        "Every map is first stretched to the image (bilinear) and divided by its maximum.\n"
        "- **fraction of the maximum** t: keep pixels at or above t × max.\n"
        "- **top q %**: keep the q % highest pixels (pixels tied at the cut are kept).\n"
        "- **p % of the attention mass**: keep the fewest highest pixels that hold p % of the map's "
        "total attention.\n"
        "- **Otsu**: OpenCV's automatic threshold on the 8-bit map.\n"
        "- **combined** stages: the mean (or product) of the max-normalised stage maps.\n"
        "- Scores with an empty denominator are 1.0 when both masks are empty, else 0.0. The "
        "pointing game asks whether the map's maximum lies on the object. The best threshold on "
        "the curve is tuned on this one image: an optimistic figure, not a fair one."
    )


def threshold_parser(rule: str) -> url.Parser:
    """The URL's ``t`` for ``rule``: a number within that rule's slider range."""
    low, high, _ = THRESHOLD_RANGES[rule]
    if rule == "fraction":
        return url.number(f"{RULE_LABELS[rule]} threshold", low, high)
    return url.integer(f"{RULE_LABELS[rule]} threshold", low, high)


link.adopt([url.image(), url.model(attention_only=True),
            url.Setting("rule", url.choice("mask rule", masks.RULES), url.to_state(state.MASK_RULE)),
            url.Setting("combine", url.choice("stage combination", masks.COMBINE_MODES),
                        url.to_state(state.MASK_COMBINE))])
url_rule = state.get(state.MASK_RULE, "fraction")
if url_rule in THRESHOLD_RANGES:
    link.adopt([url.Setting("t", threshold_parser(url_rule),
                            url.to_state(state.MASK_THRESHOLD + url_rule))])

with st.sidebar:
    st.header("Image")
    chosen = image_picker()
    st.header("Model")
    model_id = model_picker(attention_only=True)
    st.header("Ground truth")
    truth_file, dropped_truth = ground_truth_uploader(chosen)

loaded = require_image_and_model(chosen, model_id, "Choose an image and an attention model in the sidebar.")
analysis = analysis_for(model_id, chosen)
if dropped_truth is not None:
    st.info(f"The ground-truth mask **{plain(dropped_truth)}** belonged to the previous image, so "
            "it was removed; upload this image's mask to score it.")


# ----------------------------------------------------------------------------- ground truth
image_size = (chosen.loaded.height, chosen.loaded.width)
truth = None
if truth_file is not None:
    truth_bytes = truth_file.getvalue()
    try:
        truth = truth_mask(truth_bytes)
    except (ValueError, OSError) as error:
        st.error(f"Cannot use the ground-truth mask **{plain(truth_file.name)}**: {plain(str(error))}")
    except Image.DecompressionBombError:
        st.error(f"Cannot use the ground-truth mask **{plain(truth_file.name)}**: it is too large to read "
                 f"(more than {Image.MAX_IMAGE_PIXELS * 2 / 1e6:.0f} megapixels); upload a smaller copy.")
    if truth is not None:
        if masks.aspect_mismatch(image_size, truth.shape):
            st.warning(
                f"The ground truth ({truth.shape[1]}x{truth.shape[0]}) and the image "
                f"({image_size[1]}x{image_size[0]}) differ in aspect ratio: is it the mask of this image? "
                "It is scored anyway, with the image stretched to the mask's shape (`ltpa segment-eval` "
                "would skip this pair)."
            )
        if not truth.any() or truth.all():
            st.warning("The ground truth is " + ("empty" if not truth.any() else "all foreground")
                       + ": Jaccard cannot tell a good mask from a bad one here.")

base_size = truth.shape if truth is not None else image_size
scale = min(1.0, MAX_SIDE / max(base_size))
size = tuple(int(np.clip(round(side * scale), MIN_SIDE, MAX_SIDE)) for side in base_size)
if truth is not None and truth.shape != size:
    truth = masks.fit_mask(truth, size)
truth_key = bytes_sha256(truth_bytes) if truth is not None else ""
work_image = work_image_at(chosen.sha256, size, chosen.array)

# ----------------------------------------------------------------------------- controls
stages = list(analysis.stages) + ([COMBINED] if len(analysis.stages) > 1 else [])
link.adopt([url.Setting("stage", url.choice("stage", stages), url.to_state(state.MASK_STAGE))])
if state.get(state.MASK_STAGE) not in stages:  # a model with other stages: start on the last entry
    state.put(state.MASK_STAGE, stages[-1])
left, middle, right = st.columns(3)
with left:
    stage = state.persisted(st.selectbox, "Stage", state.MASK_STAGE, stages[-1], options=stages,
                            format_func=lambda s: "all stages combined" if s == COMBINED else s)
    combine = "mean"
    if stage == COMBINED:
        combine = state.persisted(
            st.radio, "Combine stages by", state.MASK_COMBINE, "mean", options=masks.COMBINE_MODES,
            horizontal=True, help="mean: a pixel counts when stages agree on average; product: every "
                                  "stage must attend to it.")
with middle:
    rule = state.persisted(st.radio, "Mask rule", state.MASK_RULE, "fraction", options=masks.RULES,
                           format_func=RULE_LABELS.get,
                           help="; ".join(f"{r}: {h}" for r, h in masks.RULE_HELP.items()))
    threshold: float | None = None
    if rule in THRESHOLD_RANGES:
        low, high, step = THRESHOLD_RANGES[rule]
        default = masks.DEFAULT_THRESHOLDS[rule]
        # One persisted threshold per rule: switching rules and back finds the value left there.
        value = state.persisted(st.slider, THRESHOLD_LABELS[rule], state.MASK_THRESHOLD + rule,
                                float(default) if rule == "fraction" else int(default),
                                min_value=low, max_value=high, step=step)
        threshold = round(float(value), 2) if rule == "fraction" else float(value)
    else:
        st.caption("Otsu picks its own threshold from the map's histogram.")
with right:
    opening = int(st.slider("Clean-up: opening (pixels, 0 = off)", 0, 25, 0, 1, key="masks.opening",
                            help="Removes specks and thin bridges smaller than the kernel."))
    largest = st.checkbox("Keep only the largest connected region", key="masks.largest")
    show_comparisons = st.toggle("Compare with CAM, Grad-CAM and the centre prior", value=True,
                                 key="masks.compare")
url.publish({"image": url.image_value(chosen), "model": model_id, "stage": stage, "rule": rule,
             "t": threshold, "combine": combine if stage == COMBINED else None})


# ----------------------------------------------------------------------------- masks
def make(map_key: str, unit: np.ndarray) -> tuple[np.ndarray, masks.Sweep | None]:
    """The mask at the chosen rule and threshold, and the curve (None without ground truth)."""
    cuts, otsu, curve = rule_table(map_key, rule, truth_key, opening, largest, unit, truth)
    mask = otsu if rule == "otsu" else unit >= cuts[threshold]
    return masks.clean_mask(mask, opening, largest), curve


checkpoint = checkpoint_key(loaded)
attention_unit = attention_unit_map(checkpoint, chosen.sha256, stage, combine, size,
                                 {m.stage: m.native for m in analysis.maps})
# label -> (map key, unit map); the attention map first.
stage_label = "all stages" if stage == COMBINED else stage
sources = {f"attention: {stage_label}": (f"{checkpoint}:{chosen.sha256}:{stage}:{combine}:{size}", attention_unit)}
if show_comparisons:
    posthoc_ids = posthoc_model_ids()
    for method, label in (("cam", "CAM"), ("grad_cam", "Grad-CAM")):
        posthoc_id = posthoc_ids[method]
        posthoc_loaded = model_or_error(posthoc_id) if posthoc_id is not None else None
        if posthoc_loaded is None:
            continue
        posthoc_checkpoint = checkpoint_key(posthoc_loaded)
        key = f"{posthoc_checkpoint}:{chosen.sha256}:{method}:{size}"
        sources[f"{label} ({posthoc_id})"] = (key, posthoc_unit_map(posthoc_checkpoint, chosen.sha256,
                                                                   method, size, posthoc_id, chosen.array))
    sources["centre prior"] = (f"prior:{size}:{PRIOR_SIGMA}", prior_unit_map(size, PRIOR_SIGMA))

results = {label: make(key, unit) for label, (key, unit) in sources.items()}
attention_label = next(iter(sources))
mask, curve = results[attention_label]
# label -> (scores, pointing-game hit) against the ground truth, computed once per rerun.
scored = {label: (masks.score_mask(m, truth), masks.pointing_hit(sources[label][1], truth))
          for label, (m, _) in results.items()} if truth is not None else {}

# ----------------------------------------------------------------------------- the attention mask
rule_text = RULE_LABELS[rule] + ("" if threshold is None else f" = {threshold:g}")
size_text = f"{size[1]}x{size[0]}" + (" (the ground truth's size)" if truth is not None and size == base_size else "")
st.subheader(f"{analysis.predicted_class} · {model_id} · {stage_label} · {rule_text}")
image_column, map_column = st.columns(2)
with image_column:
    st.image(masks.mask_overlay(work_image, mask, truth), width="stretch",
             caption=f"mask ({mask.mean():.1%} of the image) at {size_text}"
                     + ("; yellow outline: ground truth" if truth is not None else ""))
    stem = chosen.name.rsplit(".", 1)[0]
    threshold_text = "auto" if threshold is None else f"{threshold:g}"
    st.download_button(
        "Mask PNG", lambda: masks.mask_to_png(mask), file_name=f"{stem}_{model_id}_{stage}_{rule}{threshold_text}_mask.png",
        mime="image/png", key="masks.download", on_click="ignore", icon=":material/download:",
    )
with map_column:
    st.image(map_overlay(sources[attention_label][0], work_image, attention_unit), width="stretch",
             caption=f"{stage_label} map, divided by its maximum")

if truth is not None:
    scores, hit = scored[attention_label]
    cells = st.columns(5)
    cells[0].metric("Jaccard (IoU)", f"{scores.jaccard:.3f}")
    cells[1].metric("Precision", f"{scores.precision:.3f}")
    cells[2].metric("Recall", f"{scores.recall:.3f}")
    cells[3].metric("F1", f"{scores.f1:.3f}")
    cells[4].metric("Pointing game", "hit" if hit else "miss", help="Is the map's maximum on the object?")
else:
    st.info("Upload the ground-truth mask of this image in the sidebar to score the mask.")

# ----------------------------------------------------------------------------- comparisons
if show_comparisons:
    st.subheader("The same rule on post-hoc saliency and a trivial guess")
    others = [(label, result) for label, result in results.items() if label != attention_label]
    columns = st.columns(len(others))
    for column, (label, (other_mask, _)) in zip(columns, others):
        with column:
            caption = label
            if truth is not None:
                caption += f": Jaccard {scored[label][0].jaccard:.3f}"
            st.image(masks.mask_overlay(work_image, other_mask, truth), width="stretch", caption=caption)
    if len(others) == 1:
        st.caption("The zoo has no VGG-GAP / plain VGG model, so CAM / Grad-CAM are left out.")

if truth is not None:
    table = []
    for label, (_, other_curve) in results.items():
        scores, hit = scored[label]
        best_t, best_j = masks.best_threshold(other_curve)
        table.append({"map": label, "Jaccard": round(scores.jaccard, 4), "precision": round(scores.precision, 4),
                      "recall": round(scores.recall, 4), "F1": round(scores.f1, 4),
                      "pointing game": "hit" if hit else "miss",
                      "best threshold (tuned on this image)": "auto" if best_t is None else best_t,
                      "Jaccard at best": round(best_j, 4)})
    st.dataframe(table, hide_index=True, width="stretch")
    if rule == "otsu":
        st.caption("Otsu's rule has no threshold, so there is no curve: switch to another rule to see one.")
    else:
        curves_key = "|".join(key for key, _ in sources.values()) + f"|{truth_key}|{opening}|{largest}"
        figure = curve_figure(curves_key, rule, {label: c for label, (_, c) in results.items()})
        st.plotly_chart(views.with_threshold_line(figure, threshold), width="stretch", key="masks.curve")
        st.caption(f"Stars mark each map's best threshold on this image (tuned on one image: optimistic); "
                   f"the dashed line is the threshold in use, {threshold:g}. `ltpa segment-eval` reports "
                   "fixed thresholds over a whole data set.")

views.stages_figure_download(
    chosen, [(m.stage, m.native) for m in analysis.maps], state.get(state.OPACITY, state.DEFAULT_OPACITY),
    state.get(state.COLORMAP, state.DEFAULT_COLORMAP), state.get(state.SCALING, state.DEFAULT_SCALING),
    f"{chosen.name.rsplit('.', 1)[0]}_{model_id}", key="masks.figure",
    title=f"{model_id}: {analysis.predicted_class}")

