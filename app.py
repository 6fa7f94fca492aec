"""Home page: upload an image, pick a model, and see where every stage of the network looks.

Start with ``streamlit run app.py``. Pages in ``pages/`` add comparisons, model cards, masks,
adversarial attacks and a guided lesson; shared widgets live in ``pages/ui``. Every setting on
screen is also in the address bar (``pages/ui/url_state.py``), so a link reopens this view.
"""
from __future__ import annotations

import streamlit as st

from pages.ui import url_state as url
from pages.ui import views
from pages.ui.compute import analysis_for
from pages.ui.nav import page_setup
from pages.ui.widgets import choice_of, require_image_and_model

page_setup()
link = url.incoming()
st.title("Where does the network look?")
st.markdown(
    "**Pick an example or upload a photo in the sidebar, then a model.** Each picture below is one "
    "**stage** of the network with its attention map over your image (red: where it looks most). "
    "These maps are part of how the model decides, not an explanation added afterwards. New here? "
    "The **Lesson** page walks through the ideas step by step."
)
link.adopt(url.single_model_view())

chosen, model_id, opacity, colormap, scaling = views.sidebar_inputs()
url.publish(url.single_model_values(chosen, model_id, colormap, opacity, scaling))

loaded = require_image_and_model(chosen, model_id, "Choose an image and a model in the sidebar to see the attention maps.")

analysis = analysis_for(model_id, chosen)
choice = choice_of(model_id)
paper_name = choice.label if choice else model_id
_, probability = analysis.top(1)[0]
st.subheader(f"Prediction: {analysis.predicted_class}")
st.caption(f"{probability:.1%} · {paper_name} · `{model_id}` · on {analysis.device} · the models only "
           "know the ten CIFAR-10 classes, so any image gets one of those ten labels")

if not analysis.maps:
    st.info(
        f"{paper_name} is a baseline without attention, so it has no stage maps. The Compare page "
        "shows post-hoc Grad-CAM of the VGG baseline and CAM of VGG-GAP next to the attention models."
    )
else:
    views.stage_overlays(chosen, analysis.maps, opacity, colormap, key="home", scaling=scaling)

left, right = st.columns([1, 1])
with left:
    st.image(chosen.shown(), caption=f"{chosen.name} ({chosen.loaded.width}x{chosen.loaded.height})",
             width="stretch", output_format="JPEG")
with right:
    views.top5_chart(analysis, key="home.top5")

with st.expander("How to read this page"):
    st.markdown(
        "These classifiers (Jetley et al., *Learn to Pay Attention*, ICLR 2018) were trained on the "
        "32×32 CIFAR-10 images. At several stages inside the network they score every position of "
        "the feature map for how well it agrees with the network's overall impression of the image, "
        "turn the scores into an attention map that sums to 1, and classify from the "
        "attention-weighted features alone.\n"
        "- Your image is shrunk to 32×32 for the model; each stage's map is stretched back over "
        "the image at the image's own resolution.\n"
        "- Early stages (32×32 maps) see fine detail, late stages (8×8) see whole objects.\n"
        "- **Compatibility** *pc* learns a vector u and scores ⟨u, l + g⟩; *dp* scores the plain "
        "dot product ⟨l, g⟩. **Head** *concat* classifies all stages together.\n"
        "- **Normalisation** *softmax* (the paper's) makes the positions of a map compete; "
        "*sigmoid_sum*, a deviation from the paper, scores each position on its own and divides by "
        "the sum. A combination the zoo does not ship is named in the sidebar, beside the nearest "
        "shipped model shown instead.\n"
        "- Per-stage figures: entropy / log(N) is 1 for attention spread evenly and falls as it "
        "concentrates; *peak × N* is 1 for uniform; *mass in top 10%* is 0.1 for uniform."
    )

if analysis.maps:
    st.subheader("Raw maps")
    st.caption("The maps as the model computes them; hover a cell for its weight and its share of "
               "the attention mass.")
    views.raw_heatmaps(analysis.maps, key="home", colormap=colormap)
    st.subheader("Per-stage figures")
    views.stage_stats(analysis.maps, key="home")

stem = chosen.name.rsplit(".", 1)[0] + f"_{model_id}"
record = views.view_record(chosen, [analysis], {
    "page": "home", "opacity": opacity, "colormap": colormap, "scaling": scaling})
left, right = st.columns(2)
with left:
    views.stages_figure_download(chosen, [(m.stage, m.native) for m in analysis.maps], opacity, colormap,
                                 scaling, stem, key="home.figure", title=f"{paper_name}: {analysis.predicted_class}")
with right:
    views.record_download(record, stem, key="home.record")
