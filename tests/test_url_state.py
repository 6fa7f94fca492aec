"""Settings in the URL (pages/ui/url_state.py) through AppTest: a view's link reopens the same view
in a new session, and hostile query strings give a visible warning and the default, never an
exception or a file read outside the gallery."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import HOME, as_read, errors, open_with, pick_model, start_app, warnings
from ltpa.choices import check_choice, check_number
from pages.ui import state

MASKS = "pages/3_Masks.py"
COMPARE = "pages/1_Compare.py"
FAITHFULNESS = "pages/6_Faithfulness.py"


def test_home_view_round_trips_through_its_link(tiny_zoo):
    at = start_app()
    at.selectbox(key="image.example").select("Falcon 9 launch").run()
    pick_model(at, "vgg_att3_concat_dp")
    at.selectbox(key=f"widget.{state.COLORMAP}").select("viridis").run()
    at.slider(key=f"widget.{state.OPACITY}").set_value(0.7).run()
    link = dict(at.query_params)
    assert link == {"image": "photo_rocket.jpg", "model": "vgg_att3_concat_dp", "cmap": "viridis",
                    "opacity": "0.7", "scaling": "max"}
    again = open_with(link)
    assert not warnings(again)
    for key in (state.IMAGE_NAME, state.MODEL_ID, state.COLORMAP, state.OPACITY):
        assert again.session_state[key] == at.session_state[key]
    assert again.selectbox(key="image.example").value == "Falcon 9 launch"
    assert again.selectbox(key=f"widget.{state.COLORMAP}").value == "viridis"
    assert again.radio(key="model.compatibility").value == "dp"
    assert dict(again.query_params) == link


def test_masks_view_round_trips_rule_threshold_and_stage(tiny_zoo):
    link = {"image": "cifar_horse_0000.jpg", "model": "resnet_att2_concat_pc", "stage": "stage3",
            "rule": "top", "t": "40"}
    at = open_with(link, MASKS)
    assert not warnings(at) and not errors(at)
    assert at.radio(key=f"widget.{state.MASK_RULE}").value == "top"
    assert at.slider(key=f"widget.{state.MASK_THRESHOLD}top").value == 40
    assert at.selectbox(key=f"widget.{state.MASK_STAGE}").value == "stage3"
    assert dict(at.query_params) == link
    # A change by the user wins over the link it was opened with, and updates the address bar.
    at.slider(key=f"widget.{state.MASK_THRESHOLD}top").set_value(30).run()
    assert at.slider(key=f"widget.{state.MASK_THRESHOLD}top").value == 30
    assert at.query_params["t"] == "30"


def test_compare_models_travel_in_the_link(tiny_zoo):
    at = open_with({"models": "resnet_att2_concat_pc,vgg_att3_concat_dp"}, COMPARE)
    assert list(at.multiselect[0].value) == ["resnet_att2_concat_pc", "vgg_att3_concat_dp"]
    assert at.query_params["models"] == "resnet_att2_concat_pc,vgg_att3_concat_dp"


def test_faithfulness_view_round_trips_through_its_link(tiny_zoo):
    link = {"image": "cifar_cat_0000.jpg", "model": "vgg_att3_concat_pc", "cmap": "viridis", "opacity": "0.7",
            "scaling": "minmax", "stage": "layer10", "posthoc": "grad_cam_pp", "fill": "mean", "steps": "8"}
    at = open_with(link, FAITHFULNESS)
    assert not warnings(at) and not errors(at)
    assert at.selectbox(key=f"widget.{state.FAITH_STAGE}").value == "layer10"
    assert at.selectbox(key=f"widget.{state.FAITH_POSTHOC}").value == "grad_cam_pp"
    assert at.selectbox(key=f"widget.{state.FAITH_FILL}").value == "mean"
    assert at.slider(key=f"widget.{state.FAITH_STEPS}").value == 8
    assert at.session_state[state.IMAGE_NAME] == "cifar_cat_0000.jpg"
    assert at.session_state[state.COLORMAP] == "viridis" and at.session_state[state.SCALING] == "minmax"
    assert dict(at.query_params) == link
    # A change by the user wins over the link it was opened with, and updates the address bar;
    # that address reopens the changed view in a new session.
    at.slider(key=f"widget.{state.FAITH_STEPS}").set_value(12).run()
    at.selectbox(key=f"widget.{state.FAITH_STAGE}").select("attention").run()
    assert at.query_params["steps"] == "12" and at.query_params["stage"] == "attention"
    again = open_with(dict(at.query_params), FAITHFULNESS)
    assert not warnings(again)
    assert again.slider(key=f"widget.{state.FAITH_STEPS}").value == 12
    assert again.selectbox(key=f"widget.{state.FAITH_STAGE}").value == "attention"
    assert dict(again.query_params) == dict(at.query_params)


def test_faithfulness_defaults_are_in_the_address_bar(tiny_zoo):
    at = open_with({}, FAITHFULNESS)
    assert {k: at.query_params[k] for k in ("stage", "posthoc", "fill", "steps")} == {
        "stage": "layer7", "posthoc": "grad_cam", "fill": "blur", "steps": "16"}


@pytest.mark.parametrize("query, name, message", [
    ({"stage": "layer99"}, "stage", "unknown attention stage 'layer99'"),
    ({"stage": "../../etc/passwd"}, "stage", "unknown attention stage"),
    ({"model": "vgg", "stage": "layer7"}, "stage", "baseline without attention stages"),
    ({"posthoc": "cam"}, "posthoc", "unknown post-hoc map 'cam'"),  # VGG-att3 has no CAM
    ({"fill": "/etc/passwd"}, "fill", "unknown removed-pixel fill"),
    ({"steps": "5"}, "steps", "multiple of 4"),
    ({"steps": "1e9"}, "steps", "whole number from 4 to 32"),
    ({"steps": "nan"}, "steps", "whole number from 4 to 32"),
    ({"steps": "99999999999999"}, "steps", "whole number from 4 to 32"),
    ({"steps": ["8", "16"]}, "steps", "given 2 times"),
    ({"fill": "x" * 5000}, "fill", "longer than 200 characters"),
])
def test_hostile_faithfulness_values_warn_and_keep_the_default(tiny_zoo, query, name, message):
    at = open_with(query, FAITHFULNESS)
    shown = warnings(at)
    assert any(f"setting **{name}** was ignored" in w and message in w for w in shown), shown
    assert not errors(at)
    if name != "stage" or "model" not in query:
        assert at.selectbox(key=f"widget.{state.FAITH_STAGE}").value == "layer7"
    assert at.selectbox(key=f"widget.{state.FAITH_POSTHOC}").value == "grad_cam"
    assert at.selectbox(key=f"widget.{state.FAITH_FILL}").value == "blur"
    assert at.slider(key=f"widget.{state.FAITH_STEPS}").value == 16
    # The address bar is corrected to the view on screen, and the warning does not come back.
    assert at.query_params["steps"] == "16" and at.query_params["fill"] == "blur"
    at.run()
    assert not warnings(at)


HOSTILE = {
    "unknown model id": ({"model": "gpt5"}, "model", "unknown model 'gpt5'"),
    "path as image": ({"image": "../../etc/passwd"}, "image", "unknown example image"),
    "absolute path as image": ({"image": "/work/main/assets/models/manifest.json"}, "image", "unknown example image"),
    "NaN opacity": ({"opacity": "nan"}, "opacity", "must be a number from 0 to 1"),
    "huge opacity": ({"opacity": "1e308"}, "opacity", "must be a number from 0 to 1"),
    "infinite opacity": ({"opacity": "-inf"}, "opacity", "must be a number from 0 to 1"),
    "unknown colormap": ({"cmap": "rainbow"}, "cmap", "unknown colormap 'rainbow'"),
    "repeated key": ({"cmap": ["viridis", "magma"]}, "cmap", "given 2 times"),
    "over-long value": ({"model": "x" * 5000}, "model", "longer than 200 characters"),
    "markdown in value": ({"model": "[click](http://evil.example)"}, "model", "unknown model"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_link_values_warn_and_keep_the_default(tiny_zoo, case):
    query, name, message = HOSTILE[case]
    at = open_with(query)
    shown = warnings(at)
    assert any(f"setting **{name}** was ignored" in w and message in w for w in shown), shown
    assert at.session_state[state.MODEL_ID] == "vgg_att3_concat_pc"  # the defaults
    assert at.session_state[state.IMAGE_NAME] == "photo_chelsea.jpg"
    assert at.session_state[state.COLORMAP] == state.DEFAULT_COLORMAP
    assert at.session_state[state.OPACITY] == state.DEFAULT_OPACITY
    # The address bar is corrected to the view on screen, and the warning does not come back.
    assert at.query_params["model"] == "vgg_att3_concat_pc"
    at.run()
    assert not warnings(at)


def test_markdown_in_a_link_value_is_shown_as_text_not_as_a_link(tiny_zoo):
    at = open_with({"model": "[click](http://evil.example)"})
    (raw,) = [w.value for w in at.warning]
    assert "](" not in raw  # escaped: renders as the typed text
    assert "[click](http://evil.example)" in as_read(raw)


@pytest.mark.parametrize("query, name", [
    ({"t": "nan", "rule": "fraction"}, "t"),
    ({"t": "1e999", "rule": "top"}, "t"),
    ({"t": "4.5", "rule": "top"}, "t"),  # the top-q rule takes whole percentages
    ({"rule": "median"}, "rule"),
    ({"stage": "layer99"}, "stage"),
    ({"model": "vgg"}, "model"),  # a baseline has no attention to threshold
])
def test_hostile_masks_values_warn(tiny_zoo, query, name):
    at = open_with(query, MASKS)
    assert any(f"setting **{name}** was ignored" in w for w in warnings(at)), warnings(at)
    assert at.session_state[state.MASK_RULE] in ("fraction", query.get("rule") if name != "rule" else "fraction")
    assert not errors(at)


def test_an_upload_is_left_out_of_the_link(tiny_zoo):
    at = start_app()
    at.file_uploader[0].set_value(("mine.png", (HOME.parent / "assets/examples/cifar_cat_0000.jpg").read_bytes(),
                                   "image/jpeg")).run()
    assert "image" not in at.query_params
    assert at.query_params["model"] == "vgg_att3_concat_pc"


def test_the_library_validators_name_the_choices():
    with pytest.raises(ValueError, match="unknown colormap 'x'; valid choices: jet, hot"):
        check_choice("colormap", "x", ("jet", "hot"))
    check_choice("colormap", "jet", ("jet", "hot"))
    for bad in (float("nan"), float("inf"), 2.0, True, "0.5"):
        with pytest.raises(ValueError, match="must be a number from 0 to 1"):
            check_number("opacity", bad, 0.0, 1.0)
    check_number("opacity", 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="…"):  # a huge value is quoted short
        check_choice("model", "y" * 1000, ("a",))
