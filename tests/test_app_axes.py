"""Choosing a model along the paper's axes (backbone, tapped stages, head, compatibility,
normalisation): ``nearest_model`` and the notice on plain ``ModelChoice`` lists, and every page with
the model picker through AppTest on a zoo of tiny models covering each axis, on the shipped zoo,
and through ``model=<id>`` links."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import ltpa
from app_helpers import COMPARE, HOME, MODELS, TIMEOUT_S, as_read, start_app, warnings
from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from ltpa.zoo import DEFAULT_ZOO_DIR, MANIFEST_NAME, make_card, write_manifest
from pages.ui import state
from pages.ui.widgets import (MODEL_FIELDS, ModelChoice, axis_options, design_name, nearest_model,
                              not_shipped_notice, option_label, requested_axes)

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
    folder = tmp_path_factory.mktemp("axes_zoo")
    torch.manual_seed(0)
    meta = {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": 32, "dataset": "untrained test fixture"}
    cards = []
    for model_id, (name, overrides) in AXES_ZOO.items():
        model = ltpa.create_model(name, **overrides).eval()
        path = ltpa.save_checkpoint(folder / f"{model_id}.pt", model, meta)
        cards.append(make_card(model_id, path, meta, model, test_error=None))
    write_manifest(cards, folder)
    return folder


@pytest.fixture()
def axes_zoo(axes_zoo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LTPA_ZOO", str(axes_zoo_dir))
    return axes_zoo_dir


# ----------------------------------------------------------------------------- plain ModelChoice lists

def choice(model_id: str, backbone: str, kind: str, head: str | None = None, compatibility: str | None = None,
           normalisation: str | None = None) -> ModelChoice:
    """A ModelChoice from its axes (``att3``, ``none`` or ``gap`` for the tapped stages)."""
    attention = kind.startswith("att")
    return ModelChoice(
        id=model_id, paper_name=model_id, backbone=backbone, attention=attention,
        levels=int(kind[3:]) if attention else 0, head=head, compatibility=compatibility,
        normalisation=(normalisation or "softmax") if attention else None, gap=kind == "gap", test_error=None)


V3PC = choice("v3pc", "vgg", "att3", "concat", "pc")
V3DP = choice("v3dp", "vgg", "att3", "concat", "dp")
V3IPC = choice("v3ipc", "vgg", "att3", "indep", "pc")
V2PC = choice("v2pc", "vgg", "att2", "concat", "pc")
V3SS = choice("v3ss", "vgg", "att3", "concat", "pc", "sigmoid_sum")
R2PC = choice("r2pc", "resnet", "att2", "concat", "pc")
R2DP = choice("r2dp", "resnet", "att2", "concat", "dp")
R2IPC = choice("r2ipc", "resnet", "att2", "indep", "pc")
PLAIN_VGG, GAP, RN164 = choice("vgg", "vgg", "none"), choice("gap", "vgg", "gap"), choice("rn164", "resnet", "none")
PLANNED = [V3PC, V2PC, V3IPC, V3DP, V3SS, R2PC, R2DP, R2IPC, PLAIN_VGG, GAP, RN164]


def test_changing_the_backbone_keeps_the_other_axes():
    assert nearest_model(PLANNED, V3DP, "backbone", "resnet") == "r2dp"
    assert nearest_model(PLANNED, V3PC, "backbone", "resnet") == "r2pc"
    assert nearest_model(PLANNED, V3IPC, "backbone", "resnet") == "r2ipc"
    # att3 cannot be built on ResNet: the closest it can (att2) is what was asked for.
    assert requested_axes(V3DP, "backbone", "resnet")["attention_kind"] == "att2"
    # (VGG-att2)-concat-dp is not shipped: att2 and dp are one shared axis each, and the
    # earlier axis (the tapped stages) breaks the tie.
    assert nearest_model(PLANNED, R2DP, "backbone", "vgg") == "v2pc"
    assert nearest_model(PLANNED + [choice("v2dp", "vgg", "att2", "concat", "dp")], R2DP, "backbone", "vgg") == "v2dp"
    # Baselines stay baselines, VGG-GAP turning into the ResNet baseline.
    assert nearest_model(PLANNED, GAP, "backbone", "resnet") == "rn164"
    assert nearest_model(PLANNED, RN164, "backbone", "vgg") == "vgg"


def test_a_baseline_turned_attention_model_gets_the_papers_defaults_not_manifest_order():
    choices = [PLAIN_VGG, V3DP, V3SS, V3PC]  # dp and sigmoid_sum come first in this manifest
    assert requested_axes(PLAIN_VGG, "attention_kind", "att3") == {
        "backbone": "vgg", "attention_kind": "att3", "head": "concat", "compatibility": "pc",
        "normalisation": "softmax"}
    assert nearest_model(choices, PLAIN_VGG, "attention_kind", "att3") == "v3pc"
    assert requested_axes(V3DP, "attention_kind", "none") == {
        "backbone": "vgg", "attention_kind": "none", "head": None, "compatibility": None, "normalisation": None}
    assert nearest_model(choices, V3DP, "attention_kind", "none") == "vgg"


def test_a_value_not_shipped_with_the_axes_above_keeps_those_axes():
    # No VGG-att3 with indep and dp: the indep one is shown (the head asked for wins over dp).
    assert nearest_model(PLANNED, V3DP, "head", "indep") == "v3ipc"
    # No ResNet with sigmoid_sum: the picker stays on ResNet rather than jumping to VGG.
    assert nearest_model(PLANNED, R2PC, "normalisation", "sigmoid_sum") == "r2pc"
    # No VGG-att1 at all: the current model shares every other axis asked for.
    assert nearest_model(PLANNED, V2PC, "attention_kind", "att1") == "v2pc"
    assert nearest_model(PLANNED, V3SS, "attention_kind", "att2") == "v2pc"
    # Nothing shipped on the backbone asked for: the closest model on the backbone there is.
    assert nearest_model([V3PC, V3DP, PLAIN_VGG], V3DP, "backbone", "resnet") == "v3dp"
    assert nearest_model([], V3DP, "backbone", "resnet") == "v3dp"


def test_ties_go_to_the_earlier_axes_then_to_the_current_model():
    sigmoid_dp = choice("v3dp_ss", "vgg", "att3", "concat", "dp", "sigmoid_sum")
    indep_pc_ss = choice("v3ipc_ss", "vgg", "att3", "indep", "pc", "sigmoid_sum")
    indep_dp = choice("v3idp", "vgg", "att3", "indep", "dp")
    # Either indep model shares one of (dp, sigmoid_sum): the compatibility, asked first, wins.
    assert nearest_model([sigmoid_dp, indep_pc_ss, indep_dp], sigmoid_dp, "head", "indep") == "v3idp"
    assert nearest_model([indep_dp, indep_pc_ss, sigmoid_dp], sigmoid_dp, "head", "indep") == "v3idp"
    # Two shipped models with the same axes (two seeds): the one on screen stays.
    seed1 = choice("v3pc_seed1", "vgg", "att3", "concat", "pc")
    assert nearest_model([V3PC, seed1, V2PC], seed1, "attention_kind", "att1") == "v3pc_seed1"


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
    assert design_name(requested_axes(V2PC, "compatibility", "dp") | {"head": "indep"}) == "(VGG-att2)-indep-dp"


def test_every_axis_offers_what_the_registry_can_build():
    vgg, resnet = {"backbone": "vgg"}, {"backbone": "resnet"}
    assert axis_options("backbone", {}) == ["vgg", "resnet"]
    assert axis_options("attention_kind", vgg) == ["att1", "att2", "att3", "none", "gap"]
    assert axis_options("attention_kind", resnet) == ["att2", "none"]
    assert axis_options("attention_kind", vgg, attention_only=True) == ["att1", "att2", "att3"]
    for axes in (V2PC.axes(), R2PC.axes()):
        assert axis_options("head", axes) == ["concat", "indep"]
        assert axis_options("compatibility", axes) == ["pc", "dp"]
        assert axis_options("normalisation", axes) == ["softmax", "sigmoid_sum"]
    assert axis_options("normalisation", V3PC.axes(), {"sigmoid"}) == ["softmax", "sigmoid", "sigmoid_sum"]
    for baseline in (PLAIN_VGG, GAP, RN164):
        assert [axis_options(f, baseline.axes()) for f in MODEL_FIELDS[2:]] == [[], [], []]
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


def open_link(query: dict[str, str], page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=TIMEOUT_S)
    if page is not None:
        at.run()
        at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", [None, MASKS])
def test_a_model_link_sets_every_axis_and_a_hostile_one_warns(axes_zoo, page):
    at = open_link({"model": SIGMOID_SUM}, page)
    assert not warnings(at)
    assert_shows(at, SIGMOID_SUM)
    assert at.query_params["model"] == SIGMOID_SUM
    at = open_link({"model": "vgg_att3_concat_pc_sigmoid_sum/../../manifest.json"}, page)
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
    # Every VGG stage choice of the paper, those the zoo lacks marked (today: att1 and att2).
    names = {c["registry_name"] for c in cards}
    vgg_stages = {"att1": "1 stage: layer 13 (att1)", "att2": "2 stages: layers 10, 13 (att2)",
                  "att3": "3 stages: layers 7, 10, 13 (att3)", "none": "none (baseline)",
                  "gap": "none, global average pooling (CAM)"}
    baselines = {"none": "vgg", "gap": "vgg_gap"}
    expected = [text + ("" if (baselines[kind] in names if kind in baselines
                               else any(n.startswith(f"vgg_{kind}_") for n in names)) else " (not shipped)")
                for kind, text in vgg_stages.items()]
    assert at.selectbox(key="model.attention_kind").options == expected
    at.radio(key="model.compatibility").set_value("dp").run()
    assert not at.exception
    assert at.session_state[state.MODEL_ID] == shipped("vgg_att3_concat_dp")
    assert picker_caption(at).startswith(f"(VGG-att3)-concat-dp · `{shipped('vgg_att3_concat_dp')}` · ")
    at.selectbox(key="model.backbone").set_value("resnet").run()
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
