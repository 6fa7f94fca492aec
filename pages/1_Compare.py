"""Compare: several zoo models on the same image, stage by stage, with post-hoc saliency of the
baselines (Grad-CAM on VGG, CAM on VGG-GAP) beside them for contrast."""
from __future__ import annotations

import streamlit as st

from ltpa.inference import Analysis, StageMap
from pages.ui import state, views
from pages.ui import url_state as url
from pages.ui.compute import analysis_for, posthoc_for
from pages.ui.nav import page_setup
from pages.ui.widgets import (image_picker, model_or_error, no_models_message, posthoc_model_ids,
                             show_missing_image, zoo_choices)

page_setup("Compare models")
link = url.incoming()
st.title("Compare models stage by stage")
st.markdown(
    "Each row is one model looking at the same image; columns line up maps of the same "
    "resolution, so you can compare *pc* with *dp* or VGG with ResNet at each depth. The last rows "
    "show **post-hoc** saliency of the baselines without attention: Grad-CAM (gradients of the "
    "predicted class on the last feature map of the plain VGG) and CAM (the classifier weights of "
    "VGG-GAP). Those are explanations computed after the fact; the attention maps above them are "
    "part of how the attention models decide."
)

link.adopt([url.image(), url.models(), *url.display()])
with st.sidebar:
    st.header("Image")
    chosen = image_picker()
    st.header("Display")
    opacity, colormap = views.display_controls()
    scaling = views.scaling_control()

choices = zoo_choices()
if not choices:
    no_models_message()
    st.stop()
if chosen is None:
    show_missing_image("Choose an image in the sidebar.")
    st.stop()

attention_ids = [c.id for c in choices if c.attention]
labels = {c.id: c.label for c in choices}  # paper names; a deviating normalisation is named
home_model = state.get(state.MODEL_ID)
default_ids = [i for i in [home_model] if i in attention_ids]
default_ids += [i for i in attention_ids if i not in default_ids][: max(0, 2 - len(default_ids))]
persisted_ids = [i for i in (state.get(state.COMPARE_MODEL_IDS) or default_ids) if i in attention_ids]
state.put(state.COMPARE_MODEL_IDS, persisted_ids)
model_ids = state.persisted(
    st.multiselect, "Attention models to compare", state.COMPARE_MODEL_IDS, persisted_ids,
    options=attention_ids, format_func=lambda i: f"{labels[i]} ({i})",
)

posthoc_ids = posthoc_model_ids()
baseline_vgg, baseline_gap = posthoc_ids["grad_cam"], posthoc_ids["cam"]
left, right = st.columns(2)
show_grad_cam = left.checkbox(
    "Grad-CAM on the VGG baseline", value=baseline_vgg is not None, disabled=baseline_vgg is None,
    help=None if baseline_vgg else "The zoo has no plain VGG baseline.",
)
show_cam = right.checkbox(
    "CAM on VGG-GAP", value=baseline_gap is not None, disabled=baseline_gap is None,
    help=None if baseline_gap else "The zoo has no VGG-GAP model.",
)
url.publish({"image": url.image_value(chosen), "models": model_ids, "cmap": colormap, "opacity": opacity,
             "scaling": scaling})

# (row title, analysis, maps) for every row of the grid.
rows: list[tuple[str, Analysis, list[StageMap]]] = []
for model_id in model_ids:
    if model_or_error(model_id) is not None:
        analysis = analysis_for(model_id, chosen)
        rows.append((labels[model_id], analysis, list(analysis.maps)))
for enabled, model_id, method in ((show_grad_cam, baseline_vgg, "grad_cam"), (show_cam, baseline_gap, "cam")):
    if enabled and model_id and model_or_error(model_id) is not None:
        analysis = analysis_for(model_id, chosen)
        saliency = posthoc_for(model_id, chosen, method)
        rows.append((f"{labels[model_id]}: {saliency.stage}", analysis, [saliency]))

if not rows:
    st.info("Pick at least one model (or a post-hoc method) to compare.")
    st.stop()

# Columns are map resolutions, finest first, so stage k of every model sits in one column.
sizes = sorted({m.native_size for _, _, maps in rows for m in maps}, key=lambda s: -s[0] * s[1])
views.colour_scale(colormap, scaling)  # once, above the grid: every overlay uses the same scale
header = st.columns([1.3] + [1] * len(sizes))
header[0].markdown("**model · prediction**")
for column, (height, width) in zip(header[1:], sizes):
    column.markdown(f"**{height}×{width} maps**")
for index, (title, analysis, maps) in enumerate(rows):
    cells = st.columns([1.3] + [1] * len(sizes))
    name, probability = analysis.top(1)[0]
    cells[0].markdown(f"**{title}**  \n{name} ({probability:.1%})")
    if not maps:
        cells[0].caption("no attention stages")
    for stage_map in maps:
        with cells[1 + sizes.index(stage_map.native_size)]:
            views.stage_cell(chosen, stage_map, opacity, colormap, key=f"compare.{index}", downloads=False,
                            scaling=scaling)

st.subheader("Figures per stage")
table = [{"model": title, "prediction": a.predicted_class, "probability": round(float(a.top(1)[0][1]), 4),
          **row} for title, a, maps in rows for row in views.stats_rows(maps)]
st.dataframe(table, hide_index=True, width="stretch")

st.subheader("Top-5 of each model")
for column, (title, analysis, _) in zip(st.columns(len(rows)), rows):
    with column:
        views.top5_chart(analysis, key=f"compare.top5.{title}", title=title)

stem = chosen.name.rsplit(".", 1)[0] + "_compare"
arrays = {f"{a.model_id}__{m.stage}".replace(" ", "_").replace("-", "_"): m.native
          for _, a, maps in rows for m in maps}
left, middle, right = st.columns(3)
with middle:
    views.stages_figure_download(
        chosen, [(f"{a.model_id} {m.stage}", m.native) for _, a, maps in rows for m in maps], opacity, colormap,
        scaling, stem, key="compare.figure")
with left:
    st.download_button("All raw maps (.npz)", lambda: views.npz_bytes(arrays), file_name=f"{stem}_maps.npz",
                       mime="application/octet-stream", key="compare.npz", on_click="ignore",
                       icon=":material/download:")
with right:
    record = views.view_record(chosen, [a for _, a, _ in rows], {
        "page": "compare", "opacity": opacity, "colormap": colormap, "scaling": scaling,
        "rows": [{"title": t, "model_id": a.model_id, "maps": [m.stage for m in maps]} for t, a, maps in rows],
    })
    views.record_download(record, stem, key="compare.record")
