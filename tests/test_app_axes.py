"""Choosing a model along the paper's axes (backbone, tapped stages, head, compatibility,
normalisation) in the app: the picker's notice and option labels on plain ``ModelChoice`` lists,
and every page with the model picker through AppTest on a zoo of tiny models covering each axis,
on the shipped zoo, and through ``model=<id>`` links. The selection logic itself
(``ltpa.design_space``: ``nearest_model``, ``requested_axes``, ``axis_options``) is tested without
the app in ``test_design_space.py``."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ltpa
from app_helpers import COMPARE, MODELS, as_read, open_with, start_app, warnings
from ltpa.design_space import axis_options, design_name, requested_axes
from ltpa.zoo import DEFAULT_ZOO_DIR, MANIFEST_NAME
from pages.ui import state
from pages.ui.widgets import not_shipped_notice, option_label
# The plain ModelChoice lists of the selection logic's own tests: one planned zoo for both.
from test_design_space import PLANNED, R2PC, V3DP, V3IPC, V3PC
from tiny_zoo import write_untrained_zoo

MASKS, ADVERSARIAL, FAITHFULNESS = "pages/3_Masks.py", "pages/4_Adversarial.py", "pages/6_Faithfulness.py"
SIGMOID_SUM = "vgg_att3_concat_pc_sigmoid_sum"
VGG, RESNET = {"width": 0.0625}, {"width": 0.25, "depth": 11}
# id -> (registry name, overrides): the zoo the issue plans (some VGG stages, heads and
# compatibilities, a sigmoid_sum deviation, RN-att2 with both heads, the three baselines), tiny.
AXES_ZOO = {
    "vgg_att3_concat_pc": ("vgg_att3_concat_pc", VGG),
    "vgg_att2_concat_pc": ("vgg_att2_concat_pc", VGG),
    "vgg_att3_indep_pc": ("vgg_att3_indep_pc", VGG),
    "vgg_att3_concat_dp": ("vgg_att3_concat_dp", VGG),
    SIGMOID_SUM: ("vgg_att3_concat_pc", {**VGG, "normalisation": "sigmoid_sum"}),
    "resnet_att2_concat_pc": ("resnet_att2_concat_pc", RESNET),
    "resnet_att2_indep_pc": ("resnet_att2_indep_pc", RESNET),
    "vgg": ("vgg", VGG),
    "vgg_gap": ("vgg_gap", VGG),
    "resnet164": ("resnet164", RESNET),
}
# What the picker's caption names each model by (paper names from the registry; the tiny cards
# carry no paper_name of their own).
LABELS = {
    "vgg_att3_concat_pc": "(VGG-att3)-concat-pc", "vgg_att2_concat_pc": "(VGG-att2)-concat-pc",
    "vgg_att3_indep_pc": "(VGG-att3)-indep-pc", "vgg_att3_concat_dp": "(VGG-att3)-concat-dp",
    SIGMOID_SUM: "(VGG-att3)-concat-pc, sigmoid_sum normalisation",
    "resnet_att2_concat_pc": "(RN-att2)-concat-pc", "resnet_att2_indep_pc": "(RN-att2)-indep-pc",
    "vgg": "VGG", "vgg_gap": "VGG-GAP", "resnet164": "ResNet-164",
}


@pytest.fixture(scope="module")
def axes_zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo folder of untrained tiny models, one or more for every value of every axis."""
    return write_untrained_zoo(tmp_path_factory.mktemp("axes_zoo"), AXES_ZOO)


@pytest.fixture()
def axes_zoo(axes_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LTPA_ZOO", str(axes_zoo_dir))
    return axes_zoo_dir


# ----------------------------------------------------------------------------- plain ModelChoice lists

def test_the_notice_names_what_was_asked_for_and_how_the_shown_model_differs():
    wanted = requested_axes(V3DP, "head", "indep")
    assert design_name(wanted) == "(VGG-att3)-indep-dp"
    notice = as_read(not_shipped_notice(PLANNED, wanted, V3IPC, "head"))
    assert notice.startswith("**(VGG-att3)-indep-dp is not shipped.**")
    assert "**v3ipc** (`v3ipc`), with compatibility pc instead of dp." in notice
    assert not_shipped_notice(PLANNED, requested_axes(V3PC, "backbone", "resnet"), R2PC, "backbone") is None
    # A value shipped only elsewhere: where it is shipped is said too.
    wanted = requested_axes(R2PC, "normalisation", "sigmoid_sum")
    assert design_name(wanted) == "(RN-att2)-concat-pc, sigmoid_sum normalisation"
    notice = as_read(not_shipped_notice(PLANNED, wanted, R2PC, "normalisation"))
    assert "normalisation softmax instead of sigmoid_sum" in notice
    assert notice.endswith("Shipped with normalisation sigmoid_sum: v3ss, sigmoid_sum normalisation.")


def test_the_options_are_labelled_in_the_papers_terms():
    vgg, resnet = {"backbone": "vgg"}, {"backbone": "resnet"}
    assert [option_label("attention_kind", k, vgg) for k in axis_options("attention_kind", vgg)] == [
        "1 stage: layer 13 (att1)", "2 stages: layers 10, 13 (att2)", "3 stages: layers 7, 10, 13 (att3)",
        "none (baseline)", "none, global average pooling (CAM)"]
    assert option_label("attention_kind", "att2", resnet) == "stages 2, 3 (att2)"
    assert option_label("normalisation", "softmax", {}) == "softmax, the paper's"
    assert option_label("normalisation", "sigmoid_sum", {}, shipped=False) == \
        "sigmoid_sum, deviation from the paper (not shipped)"


# ----------------------------------------------------------------------------- the pages

def picker_caption(at: AppTest) -> str:
    """The model picker's caption in the sidebar: ``name · `id```."""
    shown = [as_read(c.value) for c in at.sidebar.caption if re.search(r" · `[^`]+`", c.value)]
    assert len(shown) == 1, shown
    return shown[0]


def notices(at: AppTest) -> list[str]:
    return [as_read(i.value) for i in at.sidebar.info if "is not shipped" in i.value]


def set_axis(at: AppTest, field: str, value: str) -> AppTest:
    """Change one axis of the sidebar's model picker, as a user does, and rerun."""
    widget = at.radio(key=f"model.{field}") if field in ("head", "compatibility", "normalisation") \
        else at.selectbox(key=f"model.{field}")
    widget.set_value(value).run()
    assert not at.exception, at.exception
    return at


def assert_shows(at: AppTest, model_id: str) -> None:
    """The picker persists and names ``model_id``, and each of its boxes shows that model's value."""
    assert at.session_state[state.MODEL_ID] == model_id
    assert picker_caption(at) == f"{LABELS[model_id]} · `{model_id}`"
    registry_name, overrides = AXES_ZOO[model_id]
    spec = ltpa.get_spec(registry_name)
    assert at.selectbox(key="model.backbone").value == spec.backbone
    taps = spec.fixed.get("taps", ())
    assert at.selectbox(key="model.attention_kind").value == (
        f"att{len(taps)}" if taps else "gap" if spec.fixed.get("gap") else "none")
    assert at.query_params["model"] == model_id  # the page itself works on the model picked
    if spec.attention:
        assert at.radio(key="model.head").value == spec.fixed["head"]
        assert at.radio(key="model.compatibility").value == spec.fixed["compatibility"]
        assert at.radio(key="model.normalisation").value == overrides.get("normalisation", "softmax")
    else:
        assert not [r for r in at.radio if r.key in ("model.head", "model.compatibility", "model.normalisation")]


def open_page(page: str | None) -> AppTest:
    at = start_app()
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


PICKER_PAGES = {"home": None, "models": MODELS, "masks": MASKS, "adversarial": ADVERSARIAL,
                "faithfulness": FAITHFULNESS}


@pytest.mark.parametrize("page", list(PICKER_PAGES))
def test_each_axis_switches_the_model_on_every_page_with_the_picker(axes_zoo, page):
    at = open_page(PICKER_PAGES[page])
    assert_shows(at, "vgg_att3_concat_pc")
    assert not notices(at)
    # Each axis in turn; every step lands on a shipped model and names it.
    steps = [("compatibility", "dp", "vgg_att3_concat_dp"), ("compatibility", "pc", "vgg_att3_concat_pc"),
             ("head", "indep", "vgg_att3_indep_pc"), ("head", "concat", "vgg_att3_concat_pc"),
             ("normalisation", "sigmoid_sum", SIGMOID_SUM), ("normalisation", "softmax", "vgg_att3_concat_pc"),
             ("attention_kind", "att2", "vgg_att2_concat_pc"), ("backbone", "resnet", "resnet_att2_concat_pc"),
             ("head", "indep", "resnet_att2_indep_pc")]
    if page != "masks":  # the Masks page offers attention models only
        steps += [("attention_kind", "none", "resnet164"), ("backbone", "vgg", "vgg"),
                  ("attention_kind", "gap", "vgg_gap")]
    for field, value, expected in steps:
        set_axis(at, field, value)
        assert_shows(at, expected)
        assert not notices(at), (field, value, notices(at))


def test_masks_offers_attention_stages_only_and_says_what_is_not_shipped(axes_zoo):
    at = open_page(MASKS)
    assert at.selectbox(key="model.attention_kind").options == [
        "1 stage: layer 13 (att1) (not shipped)", "2 stages: layers 10, 13 (att2)",
        "3 stages: layers 7, 10, 13 (att3)"]
    set_axis(at, "attention_kind", "att1")
    assert_shows(at, "vgg_att3_concat_pc")
    (notice,) = notices(at)
    assert notice.startswith("**(VGG-att1)-concat-pc is not shipped.**")
    set_axis(at, "backbone", "resnet")
    assert at.selectbox(key="model.attention_kind").options == ["stages 2, 3 (att2)"]
    assert_shows(at, "resnet_att2_concat_pc")


def test_a_combination_not_shipped_says_so_once_and_shows_the_nearest(axes_zoo):
    at = open_page(None)
    set_axis(at, "compatibility", "dp")
    # indep is shipped with VGG-att3 (with pc), so it is not marked; dp with it is not shipped.
    assert at.radio(key="model.head").options == ["concat", "indep"]
    set_axis(at, "head", "indep")
    assert_shows(at, "vgg_att3_indep_pc")
    (notice,) = notices(at)
    assert notice.startswith("**(VGG-att3)-indep-dp is not shipped.**")
    assert "**(VGG-att3)-indep-pc** (`vgg_att3_indep_pc`), with compatibility pc instead of dp." in notice
    # The notice was about that change: an unrelated rerun (here, the display) drops it.
    at.slider(key=f"widget.{state.OPACITY}").set_value(0.8).run()
    assert not notices(at)
    assert_shows(at, "vgg_att3_indep_pc")
    # A value shipped only elsewhere: the picker keeps the axes above it and says where it is.
    set_axis(at, "normalisation", "sigmoid_sum")
    assert_shows(at, "vgg_att3_indep_pc")
    (notice,) = notices(at)
    assert notice.startswith("**(VGG-att3)-indep-pc, sigmoid_sum normalisation is not shipped.**")
    assert "normalisation softmax instead of sigmoid_sum" in notice
    assert notice.endswith("Shipped with normalisation sigmoid_sum: (VGG-att3)-concat-pc, sigmoid_sum normalisation.")
    at.run()
    assert not notices(at)
    # Stages no shipped model has: the nearest model has the other axes asked for.
    set_axis(at, "head", "concat")
    set_axis(at, "attention_kind", "att1")
    assert_shows(at, "vgg_att3_concat_pc")
    (notice,) = notices(at)
    assert notice.startswith("**(VGG-att1)-concat-pc is not shipped.**")
    assert "with tapped stages att3 instead of att1." in notice
    # Another page's picker does not show this page's old notice, nor its own.
    at.switch_page(MODELS).run()
    assert not at.exception and not notices(at)


def test_the_compare_page_lists_every_attention_model_by_its_paper_name(axes_zoo):
    at = open_page(COMPARE)
    attention = [i for i, (name, _) in AXES_ZOO.items() if ltpa.get_spec(name).attention]
    assert at.multiselect[0].options == [f"{LABELS[i]} ({i})" for i in attention]
    # The sigmoid_sum model beside its softmax twin: two rows, two names, no clash of keys.
    at.multiselect[0].set_value(["vgg_att3_concat_pc", SIGMOID_SUM]).run()
    assert not at.exception, at.exception
    shown = set(at.dataframe[0].value["model"])
    assert {LABELS["vgg_att3_concat_pc"], LABELS[SIGMOID_SUM]} <= shown


def test_the_models_page_does_not_set_a_deviation_against_the_papers_figure(axes_zoo):
    at = open_page(MODELS)
    table = at.dataframe[0].value.set_index("id")
    assert table.loc["vgg_att3_concat_pc", "test error % (paper)"] == 6.34
    assert table.loc[SIGMOID_SUM, "paper name"] == LABELS[SIGMOID_SUM]
    assert math.isnan(table.loc[SIGMOID_SUM, "test error % (paper)"])


@pytest.mark.parametrize("page", [None, MASKS])
def test_a_model_link_sets_every_axis_and_a_hostile_one_warns(axes_zoo, page):
    at = open_with({"model": SIGMOID_SUM}, page)
    assert not warnings(at)
    assert_shows(at, SIGMOID_SUM)
    assert at.query_params["model"] == SIGMOID_SUM
    at = open_with({"model": "vgg_att3_concat_pc_sigmoid_sum/../../manifest.json"}, page)
    assert any("setting **model** was ignored" in w for w in warnings(at)), warnings(at)
    assert_shows(at, "vgg_att3_concat_pc")


def test_the_shipped_zoo_is_picked_by_its_axes(monkeypatch):
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    cards = json.loads((DEFAULT_ZOO_DIR / MANIFEST_NAME).read_text())["models"]

    def shipped(registry_name: str) -> str:
        return next(c["id"] for c in cards if c["registry_name"] == registry_name
                    and c["kwargs"].get("normalisation", "softmax") == "softmax")

    at = open_page(None)
    assert at.session_state[state.MODEL_ID] == cards[0]["id"]
    # Every VGG stage choice of the paper, any the zoo lacks marked (today: none).
    names = {c["registry_name"] for c in cards}
    vgg_stages = {"att1": "1 stage: layer 13 (att1)", "att2": "2 stages: layers 10, 13 (att2)",
                  "att3": "3 stages: layers 7, 10, 13 (att3)", "none": "none (baseline)",
                  "gap": "none, global average pooling (CAM)"}
    baselines = {"none": "vgg", "gap": "vgg_gap"}
    expected = [text + ("" if (baselines[kind] in names if kind in baselines
                               else any(n.startswith(f"vgg_{kind}_") for n in names)) else " (not shipped)")
                for kind, text in vgg_stages.items()]
    assert at.selectbox(key="model.attention_kind").options == expected
    for kind in ("att2", "att3"):
        set_axis(at, "attention_kind", kind)
        assert at.session_state[state.MODEL_ID] == shipped(f"vgg_{kind}_concat_pc")
    # The normalisation axis reaches the shipped deviation, labelled as one.
    set_axis(at, "normalisation", "sigmoid_sum")
    sigmoid = next(c for c in cards if c["kwargs"].get("normalisation") == "sigmoid_sum")
    assert at.session_state[state.MODEL_ID] == sigmoid["id"]
    assert picker_caption(at).startswith(f"(VGG-att3)-concat-pc, sigmoid_sum normalisation · `{sigmoid['id']}` · ")
    set_axis(at, "normalisation", "softmax")
    # The head and compatibility axes of VGG-att3 are shipped one at a time; both at once is not,
    # and the nearest shipped model is shown, saying so.
    set_axis(at, "compatibility", "dp")
    assert at.session_state[state.MODEL_ID] == shipped("vgg_att3_concat_dp") and not notices(at)
    set_axis(at, "head", "indep")
    assert not at.exception
    (notice,) = notices(at)
    assert notice.startswith("**(VGG-att3)-indep-dp is not shipped.**")
    set_axis(at, "compatibility", "pc")
    assert at.session_state[state.MODEL_ID] == shipped("vgg_att3_indep_pc") and not notices(at)
    set_axis(at, "head", "concat")
    assert at.session_state[state.MODEL_ID] == shipped("vgg_att3_concat_pc")
    at.selectbox(key="model.backbone").set_value("resnet").run()
    assert at.session_state[state.MODEL_ID] == shipped("resnet_att2_concat_pc")
    # The whole ResNet family ships: the head switches to RN-att2-indep-pc with no notice, and
    # indep with dp (never trained) says so and keeps the nearest one.
    set_axis(at, "head", "indep")
    assert at.session_state[state.MODEL_ID] == shipped("resnet_att2_indep_pc") and not notices(at)
    set_axis(at, "compatibility", "dp")
    assert at.session_state[state.MODEL_ID] == shipped("resnet_att2_indep_pc")
    (notice,) = notices(at)
    assert notice.startswith("**(RN-att2)-indep-dp is not shipped.**")
    set_axis(at, "compatibility", "pc")
    set_axis(at, "head", "concat")
    set_axis(at, "compatibility", "dp")
    assert at.session_state[state.MODEL_ID] == shipped("resnet_att2_concat_dp")
    assert at.selectbox(key="model.attention_kind").value == "att2"
    assert at.subheader[0].value.startswith("Prediction:")
    at.selectbox(key="model.attention_kind").set_value("none").run()
    assert at.session_state[state.MODEL_ID] == shipped("resnet164")
    assert any("baseline without attention" in i.value for i in at.info)
    at.selectbox(key="model.backbone").set_value("vgg").run()
    at.selectbox(key="model.attention_kind").set_value("gap").run()
    assert at.session_state[state.MODEL_ID] == shipped("vgg_gap")
    assert not at.exception
