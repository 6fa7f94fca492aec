"""Home page: upload an image, pick a model, and see where every stage of the network looks.

Start with ``streamlit run app.py``. Pages in ``pages/`` add comparisons, model cards, masks and
adversarial attacks; shared widgets live in ``pages/ui``.
"""
from __future__ import annotations

import streamlit as st

from pages.ui import views
from pages.ui.compute import analysis_for
from pages.ui.widgets import choice_of, require_image_and_model

st.set_page_config(page_title="Learn to Pay Attention", page_icon="🔎", layout="wide")

st.title("Learn to Pay Attention: where does the network look?")
st.markdown(
    "These classifiers (Jetley et al., *Learn to Pay Attention*, ICLR 2018) were trained on the "
    "32×32 CIFAR-10 images. At several **stages** inside the network they score every position "
    "of the feature map for how well it agrees with the network's overall impression of the "
    "image, turn the scores into an **attention map** that sums to 1, and classify from the "
    "attention-weighted features alone. The maps below are therefore part of the decision, not "
    "an explanation added afterwards."
)
with st.expander("How to read this page"):
    st.markdown(
        "- Your image is shrunk to 32×32 for the model; each stage's map is stretched back over "
        "the image at the image's own resolution.\n"
        "- Early stages (32×32 maps) see fine detail, late stages (8×8) see whole objects.\n"
        "- **Compatibility** *pc* learns a vector u and scores ⟨u, l + g⟩; *dp* scores the plain "
        "dot product ⟨l, g⟩. **Head** *concat* classifies all stages together.\n"
        "- Per-stage figures: entropy / log(N) is 1 for attention spread evenly and falls as it "
        "concentrates; *peak × N* is 1 for uniform; *mass in top 10%* is 0.1 for uniform.\n"
        "- The models only know the ten CIFAR-10 classes: any image gets one of those ten labels."
    )

chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()

loaded = require_image_and_model(chosen, model_id, "Choose an image and a model in the sidebar to see the attention maps.")

analysis = analysis_for(model_id, chosen)
choice = choice_of(model_id)
paper_name = choice.paper_name if choice else model_id

left, right = st.columns([1, 1])
with left:
    st.image(chosen.shown(), caption=f"{chosen.name} ({chosen.loaded.width}x{chosen.loaded.height})",
             width="stretch", output_format="JPEG")
with right:
    st.subheader(f"Prediction: {analysis.predicted_class}")
    st.caption(f"{paper_name} · `{model_id}` · on {analysis.device}")
    views.top5_chart(analysis, key="home.top5")

if not analysis.maps:
    st.info(
        f"{paper_name} is a baseline without attention, so it has no stage maps. The Compare page "
        "shows post-hoc Grad-CAM of the VGG baseline and CAM of VGG-GAP next to the attention models."
    )
else:
    st.subheader(f"Attention at every stage ({len(analysis.maps)})")
    views.stage_overlays(chosen, analysis.maps, opacity, colormap, key="home", scaling=scaling)
    st.subheader("Raw maps")
    st.caption("The maps as the model computes them; hover a cell for its weight and its share of "
               "the attention mass.")
    views.raw_heatmaps(analysis.maps, key="home", colormap=colormap)
    st.subheader("Per-stage figures")
    views.stage_stats(analysis.maps, key="home")

record = views.view_record(chosen, [analysis], {
    "page": "home", "opacity": opacity, "colormap": colormap, "scaling": scaling})
views.record_download(record, chosen.name.rsplit(".", 1)[0] + f"_{model_id}", key="home.record")
