"""The Compare page through AppTest: the image and model chosen on the home page carry over, each
row agrees with ltpa, and post-hoc saliency never mutates the shared cached model."""
from __future__ import annotations

import numpy as np

from app_helpers import (COMPARE, GALLERY, HOME, direct_analysis, errors, figures_titled,
                         image_captions, shown_top5, start_app, start_with_empty_zoo, upload)
from ltpa.images import load_image
from ltpa.inference import posthoc
from ltpa.zoo import load_zoo_model
from pages.ui import state

COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()


def _compare_page(at):
    at.switch_page(COMPARE).run()
    assert not at.exception, at.exception
    return at


def test_image_and_model_carry_over_and_rows_match_ltpa(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    at.radio(key="model.compatibility").set_value("dp").run()
    _compare_page(at)
    assert not errors(at)
    assert "coffee.jpg (512x341)" in image_captions(at)  # the sidebar preview of the same image
    assert at.multiselect[0].value[0] == "vgg_att3_concat_dp"  # the home page's model comes first
    table = at.dataframe[0].value
    for model_id in at.multiselect[0].value:
        expected = direct_analysis(model_id, COFFEE)
        (figure,) = figures_titled(at, _title(at, model_id))
        assert shown_top5(figure)[0][0] == expected.predicted_class
        rows = table[table["model"] == _title(at, model_id)]
        assert list(rows["stage"]) == list(expected.stages)
        np.testing.assert_allclose(rows["entropy / log(N)"], [m.stats.normalised_entropy for m in expected.maps],
                                   atol=1e-4)


def _title(at, model_id: str) -> str:
    from pages.ui.widgets import choice_of

    return choice_of(model_id).paper_name


def test_posthoc_rows_match_ltpa_and_leave_the_cached_model_untouched(tiny_zoo):
    at = _compare_page(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"))
    table = at.dataframe[0].value
    image = load_image(COFFEE).array
    for model_id, method, label in (("vgg", "grad_cam", "VGG: Grad-CAM"), ("vgg_gap", "cam", "VGG-GAP: CAM")):
        expected = posthoc(load_zoo_model(model_id), image, method)
        row = table[table["model"] == label]
        assert len(row) == 1, list(table["model"])
        assert row["map size"].iloc[0] == f"{expected.native_size[0]}x{expected.native_size[1]}"
        np.testing.assert_allclose(row["mass in top 10%"].iloc[0], expected.stats.top10_mass, atol=1e-4)
    from pages.ui.widgets import load_model

    for model_id in ("vgg", "vgg_gap"):
        shared = load_model(model_id).model  # the very object the page used (cache_resource)
        assert not shared.training
        assert all(p.grad is None for p in shared.parameters())


def test_adding_a_resnet_lines_maps_up_by_resolution(tiny_zoo):
    at = _compare_page(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"))
    at.multiselect[0].select("resnet_att2_concat_pc").run()
    assert not at.exception
    assert at.session_state[state.COMPARE_MODEL_IDS][-1] == "resnet_att2_concat_pc"
    headers = [m.value for m in at.markdown if m.value.endswith(" maps**")]
    assert headers == ["**32×32 maps**", "**16×16 maps**", "**8×8 maps**"]
    table = at.dataframe[0].value
    assert list(table[table["model"] == "(RN-att2)-concat-pc"]["stage"]) == ["stage2", "stage3"]


def test_unticking_posthoc_and_state_survives_the_round_trip(tiny_zoo):
    at = _compare_page(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"))
    at.checkbox[0].uncheck().run()
    at.checkbox[1].uncheck().run()
    assert not any(label.endswith("CAM") for label in at.dataframe[0].value["model"])
    at.multiselect[0].unselect("vgg_att3_concat_dp").run()
    chosen = list(at.multiselect[0].value)
    at.switch_page(str(HOME.name)).run()
    assert at.session_state[state.IMAGE_NAME] == "coffee.jpg"
    assert at.radio(key="model.compatibility").value == "pc"
    assert at.session_state[state.MODEL_ID] == "vgg_att3_concat_pc"
    _compare_page(at)
    assert list(at.multiselect[0].value) == chosen


def test_compare_offers_the_all_stages_figure_and_a_colour_bar(tiny_zoo):
    at = _compare_page(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"))
    assert "All stages figure (PNG)" in [b.proto.label for b in at.get("download_button")]
    assert any("Colour = attention" in c.value for c in at.caption)


def test_compare_with_an_empty_zoo_is_explained(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, COMPARE)


def _in_order(node):
    """Every element under ``node`` in the order the page draws them."""
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _in_order(child)


def test_compare_labels_near_uniform_maps_under_one_colour_bar_above_the_grid(tiny_zoo, monkeypatch):
    import ltpa.figures as figures

    drawn = []
    real = figures.with_banner
    monkeypatch.setattr(figures, "with_banner", lambda image, text: drawn.append(text) or real(image, text))
    at = _compare_page(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"))
    assert not errors(at)
    # The untrained tiny models spread attention evenly: every attention map in the grid says so
    # on the picture, with the same label as on the Home page.
    grid_maps = [m for model_id in at.multiselect[0].value for m in direct_analysis(model_id, COFFEE).maps]
    expected = [figures.near_uniform_label(m.stats) for m in grid_maps]
    assert all(expected) and all(label in drawn for label in expected)
    # One colour bar (with the near-uniform rule in its caption), drawn before the grid's overlays.
    elements = list(_in_order(at.main))
    bars = [i for i, e in enumerate(elements) if e.type == "caption" and "Colour = attention" in e.value]
    overlays = [i for i, e in enumerate(elements) if e.type == "image"
                and any(" map)" in img.caption for img in e.proto.imgs)]
    assert len(bars) == 1 and "near-uniform" in elements[bars[0]].value
    assert overlays and bars[0] < min(overlays)
