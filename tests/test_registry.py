"""The registry: stable names in the paper's notation, filters, specs, and what create_model records."""
from __future__ import annotations

import re

import pytest
import torch

import ltpa
from ltpa.layers.attention import COMPATIBILITIES
from ltpa.models.heads import HEADS
from ltpa.models.resnet import ResNetAtt
from ltpa.models.vgg import VGGAtt
from ltpa.registry import ModelSpec, get_spec, register_model

NAME_PATTERN = re.compile(r"^(vgg_att[123]|resnet_att2)_(concat|indep)_(pc|dp)$")


def test_names_are_unique_and_well_formed() -> None:
    names = ltpa.list_models()
    assert len(names) == len(set(names))
    for name in ltpa.list_models(attention=True):
        assert NAME_PATTERN.match(name), name


def test_filters_partition_the_registry() -> None:
    names = set(ltpa.list_models())
    with_attention = set(ltpa.list_models(attention=True))
    without = set(ltpa.list_models(attention=False))
    assert with_attention | without == names and not with_attention & without
    vgg, resnet = set(ltpa.list_models(backbone="vgg")), set(ltpa.list_models(backbone="resnet"))
    assert vgg | resnet == names and not vgg & resnet
    assert set(ltpa.list_models(attention=False, backbone="resnet")) == {"resnet164"}
    assert ltpa.list_models(backbone="alexnet") == []


@pytest.mark.parametrize("backbone", ["vgg", "resnet"])
def test_model_name_round_trips_every_attention_variant(backbone: str) -> None:
    levels = (1, 2, 3) if backbone == "vgg" else (2,)
    expected = {
        ltpa.model_name(backbone, level, head, compat)
        for level in levels for head in HEADS for compat in COMPATIBILITIES
    }
    assert expected == set(ltpa.list_models(attention=True, backbone=backbone))
    assert ltpa.model_name(backbone) in ltpa.list_models(attention=False, backbone=backbone)


@pytest.mark.parametrize("name", ltpa.list_models(attention=True))
def test_spec_matches_its_name(name: str) -> None:
    spec = get_spec(name)
    family, head, compat = NAME_PATTERN.match(name).groups()
    level = int(family[-1])
    assert spec.backbone == name.split("_")[0]
    assert spec.fixed["head"] == head and spec.fixed["compatibility"] == compat
    assert len(spec.fixed["taps"]) == level
    prefix = "VGG" if spec.backbone == "vgg" else "RN"
    assert spec.paper_name == f"({prefix}-att{level})-{head}-{compat}"
    assert spec.builder is (VGGAtt if spec.backbone == "vgg" else ResNetAtt)
    assert spec.description


def test_vgg_taps_are_the_authors_layers() -> None:
    assert get_spec("vgg_att1_concat_pc").fixed["taps"] == (13,)
    assert get_spec("vgg_att2_concat_pc").fixed["taps"] == (10, 13)
    assert get_spec("vgg_att3_concat_pc").fixed["taps"] == (7, 10, 13)
    assert get_spec("resnet_att2_concat_pc").fixed["taps"] == (2, 3)


def test_baselines_have_no_attention_options() -> None:
    for name in ("vgg", "vgg_gap", "resnet164"):
        spec = get_spec(name)
        assert not spec.attention
        assert not {"head", "compatibility", "normalisation", "match", "dp_scale",
                    "tap_features"} & set(spec.overridable)
    assert "depth" in get_spec("resnet164").overridable
    assert "depth" not in get_spec("vgg").overridable


def test_create_model_records_how_to_rebuild_it() -> None:
    model = ltpa.create_model("resnet_att2_indep_dp", num_classes=5, width=0.125, depth=11)
    assert model.ltpa_config == {
        "name": "resnet_att2_indep_dp",
        "kwargs": {"num_classes": 5, "width": 0.125, "depth": 11, "dp_scale": "sqrt",
                   "tap_features": "activated"},
    }
    again = ltpa.create_model(model.ltpa_config["name"], **model.ltpa_config["kwargs"])
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_overrides_reach_the_model() -> None:
    model = ltpa.create_model("vgg_att3_concat_dp", width=0.25, normalisation="sigmoid",
                              match="project_g", dropout=0.1)
    assert all(block.normalisation == "sigmoid" and block.match == "project_g"
               for block in model.attention)
    assert model.global_fc[0].p == 0.1
    assert model.layers[0][0].out_channels == 16  # 64 x 0.25


def test_width_scales_parameters_roughly_quadratically() -> None:
    def count(width: float) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in ltpa.create_model("vgg_att3_concat_pc", width=width).parameters())

    ratio = count(0.5) / count(1.0)
    assert 0.24 < ratio < 0.27


def test_duplicate_registration_is_refused() -> None:
    existing = get_spec("vgg")
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelSpec("vgg", "VGG", "vgg", VGGAtt, {"taps": ()}))
    assert get_spec("vgg") is existing


def test_unknown_name_lists_every_registered_model() -> None:
    with pytest.raises(ValueError) as info:
        get_spec("VGG_att3_concat_pc")  # names are case-sensitive
    assert all(name in str(info.value) for name in ltpa.list_models())


def test_num_classes_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ltpa.create_model("vgg", num_classes=10.0)
