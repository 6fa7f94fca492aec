"""The Faithfulness page through AppTest: what it shows agrees with
ltpa.faithfulness_results.image_scorecard called directly, baselines get post-hoc maps only, and
the shared cached model is left untouched."""
from __future__ import annotations

import numpy as np
from app_helpers import (GALLERY, captions, decode_plotly, errors, figures_titled, pick_model, start_app,
                         start_with_empty_zoo, upload)
from ltpa.faithfulness_results import image_scorecard
from ltpa.images import load_image
from ltpa.preprocess import image_to_input
from ltpa.zoo import load_zoo_model
from pages.ui import state

PAGE = "pages/6_Faithfulness.py"
STAGE, POSTHOC = f"widget.{state.FAITH_STAGE}", f"widget.{state.FAITH_POSTHOC}"
FILL, STEPS = f"widget.{state.FAITH_FILL}", f"widget.{state.FAITH_STEPS}"
MODEL = "vgg_att3_concat_pc"
COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()


def open_page(variant: str = MODEL):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    pick_model(at, variant)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def direct(methods, steps=16, replacement="blur", model_id=MODEL):
    loaded = load_zoo_model(model_id)
    x = image_to_input(load_image(COFFEE).array, loaded.input_size)
    return image_scorecard(loaded.model, x, methods, steps, replacement)


def test_page_matches_the_library(tiny_zoo):
    at = open_page()
    assert not errors(at)
    stage = at.selectbox(key=STAGE).value
    assert stage == "layer7"
    expected = direct(["layer7", "grad_cam", "random"])
    (deletion,) = figures_titled(at, "layer7: deletion")
    shown = {trace["name"]: decode_plotly(trace["y"]) for trace in deletion["data"]}
    key = f"layer7 (area {expected['methods']['layer7']['deletion_auc']:.3f})"
    np.testing.assert_allclose(shown[key], expected["methods"]["layer7"]["deletion"], rtol=1e-5, atol=1e-7)
    (insertion,) = figures_titled(at, "Grad-CAM: insertion")
    assert len(decode_plotly(insertion["data"][0]["y"])) == 17
    rho = expected["methods"]["grad_cam"]["rho"]
    shown_captions = [img.caption for element in at.get("image") for img in element.proto.imgs]
    for count, value in zip(expected["layers_reset"], rho):
        text = "flat map" if np.isnan(value) else f"ρ {value:.2f}"
        assert f"top {count}/{expected['total_layers']} layers reset: {text}" in shown_captions
    assert any(f"Deletion area {expected['methods']['layer7']['deletion_auc']:.3f}" in c for c in captions(at))
    from pages.ui.widgets import load_model

    shared = load_model(MODEL).model
    assert not shared.training and all(p.grad is None for p in shared.parameters())


def test_settings_change_the_scores(tiny_zoo):
    at = open_page()
    at.selectbox(key=STAGE).select("attention").run()
    at.selectbox(key=POSTHOC).select("grad_cam_pp").run()
    at.selectbox(key=FILL).select("mean").run()
    at.slider(key=STEPS).set_value(8).run()
    assert not at.exception, at.exception
    expected = direct(["attention", "grad_cam_pp", "random"], steps=8, replacement="mean")
    (figure,) = figures_titled(at, "all stages combined: deletion")
    values = decode_plotly(figure["data"][0]["y"])
    np.testing.assert_allclose(values, expected["methods"]["attention"]["deletion"], rtol=1e-5, atol=1e-7)
    assert figures_titled(at, "Grad-CAM++: insertion")


def test_baseline_gets_post_hoc_maps_only(tiny_zoo):
    at = open_page("vgg_gap")
    assert any("baseline without attention" in i.value for i in at.info)
    assert at.selectbox(key=POSTHOC).options == ["Grad-CAM", "Grad-CAM++", "CAM"]
    assert figures_titled(at, "Grad-CAM: deletion") and not figures_titled(at, "layer")


def test_empty_zoo_gives_a_clear_message(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, PAGE)


def test_near_uniform_maps_are_labelled_under_a_colour_bar_with_an_all_stages_figure(tiny_zoo, monkeypatch):
    import ltpa.figures as figures
    from app_helpers import captions
    from ltpa.maps import map_stats

    drawn = []
    real = figures.with_banner
    monkeypatch.setattr(figures, "with_banner", lambda image, text: drawn.append(text) or real(image, text))
    at = pick_model(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"), MODEL)
    drawn.clear()  # the Home page labels its own maps
    at.switch_page(PAGE).run()
    assert not at.exception and not errors(at)
    expected = direct(["layer7", "grad_cam", "random"])
    # The two compared maps carry the Home page's near-uniform label when they are near-uniform
    # (the untrained tiny model's layer-7 map is).
    labels = [figures.near_uniform_label(map_stats(expected["methods"][m]["map"])) for m in ("layer7", "grad_cam")]
    assert labels[0] is not None
    assert drawn == [label for label in labels if label is not None]
    shown = [img for element in at.get("image") for img in element.proto.imgs]
    assert any(img.caption == "layer7 over the 32×32 input" for img in shown)
    # The colour bar (the same helper as on Home and Compare) with its near-uniform rule, and the
    # all-stages figure for slides.
    assert any("Colour = attention" in c and "near-uniform" in c for c in captions(at))
    assert "All stages figure (PNG)" in [b.proto.label for b in at.get("download_button")]
