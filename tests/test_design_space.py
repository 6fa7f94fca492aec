"""The paper's design space without the app (``ltpa.design_space``): what the registry can build
along the axes, a zoo card described along them, and the nearest shipped model to what a user asks
for, on plain ``ModelChoice`` lists."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ltpa.design_space import (MODEL_FIELDS, ModelChoice, attention_kind_of, axis_options, design_name,
                               design_space, model_choice, nearest_model, requested_axes,
                               shipped_normalisations, shipped_with, with_normalisation)
from ltpa.registry import list_models


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
# The zoo the issue plans: some VGG stages, heads and compatibilities, a sigmoid_sum deviation,
# RN-att2 with both heads and compatibilities, the three baselines.
PLANNED = [V3PC, V2PC, V3IPC, V3DP, V3SS, R2PC, R2DP, R2IPC, PLAIN_VGG, GAP, RN164]


def test_importing_the_design_space_does_not_import_streamlit():
    # A fresh interpreter: this test process may have imported streamlit for other tests.
    code = "import sys, ltpa.design_space; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_design_space_is_every_registered_model_along_the_axes():
    points = design_space()
    assert [p.registry_name for p in points] == list_models()
    by_name = {p.registry_name: p for p in points}
    assert by_name["vgg_att2_indep_dp"].paper_name == "(VGG-att2)-indep-dp"
    assert (by_name["vgg_att3_concat_pc"].attention_kind, by_name["vgg_att3_concat_pc"].taps) == ("att3", (7, 10, 13))
    assert (by_name["resnet_att2_concat_pc"].attention_kind, by_name["resnet_att2_concat_pc"].taps) == ("att2", (2, 3))
    for name, kind in (("vgg", "none"), ("vgg_gap", "gap"), ("resnet164", "none")):
        point = by_name[name]
        assert (point.attention_kind, point.head, point.compatibility, point.taps) == (kind, None, None, ())
    assert attention_kind_of(True, 2, False) == "att2"
    assert attention_kind_of(False, 0, True) == "gap" and attention_kind_of(False, 0, False) == "none"


def test_a_zoo_card_is_described_along_the_axes():
    card = model_choice("mine", "vgg_att3_concat_dp", {"width": 0.5, "normalisation": "sigmoid_sum"},
                        None, 6.5)
    assert card == ModelChoice(id="mine", paper_name="(VGG-att3)-concat-dp", backbone="vgg", attention=True,
                               levels=3, head="concat", compatibility="dp", normalisation="sigmoid_sum",
                               gap=False, test_error=6.5)
    assert card.attention_kind == "att3"
    assert card.label == "(VGG-att3)-concat-dp, sigmoid_sum normalisation"
    assert card.axes() == {"backbone": "vgg", "attention_kind": "att3", "head": "concat",
                           "compatibility": "dp", "normalisation": "sigmoid_sum"}
    # No normalisation in the card: the paper's softmax; a card's own paper name wins.
    softmax = model_choice("att2", "resnet_att2_indep_pc", {}, "RN-att2 (ours)")
    assert (softmax.normalisation, softmax.label, softmax.test_error) == ("softmax", "RN-att2 (ours)", None)
    # Baselines have no head, compatibility or normalisation, whatever the kwargs say.
    gap = model_choice("gap", "vgg_gap", {"normalisation": "sigmoid_sum"}, "", 7)
    assert gap.axes() == {"backbone": "vgg", "attention_kind": "gap", "head": None, "compatibility": None,
                          "normalisation": None}
    assert gap.paper_name == "VGG-GAP" and gap.test_error == 7.0 and gap.gap
    assert model_choice("rn", "resnet164").attention_kind == "none"
    with pytest.raises(ValueError):
        model_choice("x", "no_such_model")


def test_a_deviation_is_named_after_the_paper_name():
    assert with_normalisation("(VGG-att3)-concat-pc", "softmax") == "(VGG-att3)-concat-pc"
    assert with_normalisation("VGG", None) == "VGG"
    assert with_normalisation("(VGG-att3)-concat-pc", "sigmoid") == "(VGG-att3)-concat-pc, sigmoid normalisation"
    assert with_normalisation("att3 with sigmoid_sum", "sigmoid_sum") == "att3 with sigmoid_sum"  # not twice
    assert with_normalisation("(VGG-att3)-concat-pc", "softmax,softmax,sigmoid_sum") == \
        "(VGG-att3)-concat-pc, softmax / softmax / sigmoid_sum normalisation"
    assert with_normalisation("(VGG-att2)-concat-pc", "softmax, softmax") == "(VGG-att2)-concat-pc"
    assert shipped_normalisations(PLANNED) == {"softmax", "sigmoid_sum"}


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


def test_a_value_is_shipped_only_with_the_axes_above_it():
    assert shipped_with(PLANNED, {"backbone": "vgg", "attention_kind": "att3"}, "head", "indep")
    assert not shipped_with(PLANNED, V3IPC.axes(), "compatibility", "dp")  # no (VGG-att3)-indep-dp
    assert shipped_with(PLANNED, V3PC.axes(), "normalisation", "sigmoid_sum")
    assert not shipped_with(PLANNED, R2PC.axes(), "normalisation", "sigmoid_sum")
    assert not shipped_with(PLANNED, {"backbone": "vgg"}, "attention_kind", "att1")


def test_every_point_has_the_papers_name():
    assert design_name(requested_axes(V3DP, "head", "indep")) == "(VGG-att3)-indep-dp"
    assert design_name(requested_axes(R2PC, "normalisation", "sigmoid_sum")) == \
        "(RN-att2)-concat-pc, sigmoid_sum normalisation"
    assert design_name(requested_axes(V2PC, "compatibility", "dp") | {"head": "indep"}) == "(VGG-att2)-indep-dp"
    assert design_name(GAP.axes()) == "VGG-GAP" and design_name(RN164.axes()) == "ResNet-164"
    # Axes the registry cannot build: the values themselves.
    assert design_name({"backbone": "resnet", "attention_kind": "att3", "head": "concat"}) == \
        "ResNet / att3 / concat"
    assert design_name({"backbone": "resnet", "attention_kind": "gap"}) == \
        "ResNet / global average pooling (VGG-GAP)"
