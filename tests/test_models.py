"""The models of "Learn to Pay Attention": shapes, attention maths, heads, gradients, precision, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ltpa
from ltpa.layers import attention as attention_module
from ltpa.checkpoint import load_checkpoint, save_checkpoint
from ltpa.layers.attention import AttentionBlock
from ltpa.models.vgg import VGG_LAYERS, scaled

ATTENTION_MODELS = ltpa.list_models(attention=True)
BASELINES = ltpa.list_models(attention=False)

# Map sizes at a 32x32 input, straight from the paper's VGG-att and RN-att2 spec (docs/models.md) ...
MAPS_AT_32 = {"vgg_att1": [8], "vgg_att2": [16, 8], "vgg_att3": [32, 16, 8], "resnet_att2": [16, 8]}
# ... and the layers/stages they come from.
STAGES = {
    "vgg_att1": ("layer13",),
    "vgg_att2": ("layer10", "layer13"),
    "vgg_att3": ("layer7", "layer10", "layer13"),
    "resnet_att2": ("stage2", "stage3"),
}


def family(name: str) -> str:
    """``vgg_att3_concat_pc`` -> ``vgg_att3``; baselines -> their own name."""
    return "_".join(name.split("_")[:2]) if "_att" in name else name


def small(name: str, **overrides) -> nn.Module:
    """A fast CPU-sized version of a registered model."""
    base = {"width": 0.125}
    if name.startswith("resnet"):
        base["depth"] = 11
    return ltpa.create_model(name, **{**base, **overrides})


def calibrated(model: nn.Module) -> nn.Module:
    """Set batch-norm statistics from one random batch, then eval mode.

    With the default statistics (mean 0, variance 1) an untrained net's activations fade layer
    after layer in eval mode and every image gets nearly the same logits: too weak to test on.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(images(batch=8, seed=99))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def images(batch: int = 2, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_registry_covers_every_variant_of_the_issue() -> None:
    assert len(ATTENTION_MODELS) == 12 + 4  # VGG att1/2/3 x concat/indep x pc/dp; RN-att2 x 2 x 2
    assert set(BASELINES) == {"vgg", "vgg_gap", "resnet164"}


# ---- every model, at its real size ----------------------------------------------------------


@pytest.mark.parametrize("name", ltpa.list_models())
def test_every_model_builds_at_default_size_and_runs(name: str) -> None:
    torch.manual_seed(0)
    model = ltpa.create_model(name).eval()
    with torch.no_grad():
        out = model(images(batch=1))
    assert isinstance(out, ltpa.ModelOutput)
    assert out.logits.shape == (1, 10)
    assert torch.isfinite(out.logits).all()
    assert [m.shape[-1] for m in out.maps] == MAPS_AT_32.get(family(name), [])
    assert out.stages == STAGES.get(family(name), ())
    assert len(out.scores) == len(out.maps)
    assert out.features.dim() == 4


def test_default_sizes_follow_the_spec() -> None:
    """VGG-att3 about 20M parameters, RN-att2 about 2M (g head included), ResNet-164 1.7M."""
    counts = {}
    for name in ("vgg_att3_concat_pc", "resnet_att2_concat_pc", "resnet164"):
        with torch.device("meta"):  # count parameters without allocating them
            counts[name] = sum(p.numel() for p in ltpa.create_model(name).parameters())
    assert 19e6 < counts["vgg_att3_concat_pc"] < 21e6
    assert 1.6e6 < counts["resnet164"] < 1.8e6
    assert counts["resnet164"] < counts["resnet_att2_concat_pc"] < 3e6


# ---- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ltpa.list_models())
def test_small_model_trains_a_batch(name: str) -> None:
    """One training step's forward and backward: shapes, softmax maps, and gradients everywhere."""
    torch.manual_seed(0)
    model = small(name, num_classes=7).train()
    out = model(images(batch=3))
    assert out.logits.shape == (3, 7)
    for attention_map, scores in zip(out.maps, out.scores):
        assert attention_map.shape[:2] == (3, 1) and scores.shape == attention_map.shape
        assert attention_map.dtype == torch.float32
        assert (attention_map >= 0).all()
        torch.testing.assert_close(attention_map.sum(dim=(1, 2, 3)), torch.ones(3))
        expected = torch.softmax(scores.flatten(1), dim=1).view_as(scores)
        torch.testing.assert_close(attention_map, expected)
    F.cross_entropy(out.logits, torch.tensor([0, 3, 6])).backward()
    if name in ATTENTION_MODELS:
        check_attention_gradients(name, model)
    else:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


REPRESENTATIVES = ["vgg_att1_indep_pc", "vgg_att2_concat_dp", "vgg_att3_concat_pc", "resnet_att2_indep_dp"]


@pytest.mark.parametrize("name", REPRESENTATIVES)
@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (37, 33)])
def test_maps_scale_with_input_size(name: str, height: int, width: int) -> None:
    """Each map is the 32x32 map size scaled by the input size (VGG pools floor odd sizes)."""
    model = small(name).eval()
    with torch.no_grad():
        out = model(images(batch=1, height=height, width=width))
    expected = []
    for size in MAPS_AT_32[family(name)]:
        halvings = (32 // size).bit_length() - 1
        expected.append((height >> halvings, width >> halvings) if name.startswith("vgg") else
                        (-(-height // 2 ** halvings), -(-width // 2 ** halvings)))  # stride-2 conv: ceil
    assert [tuple(m.shape[-2:]) for m in out.maps] == expected
    assert out.logits.shape == (1, 10)
    for attention_map in out.maps:
        torch.testing.assert_close(attention_map.sum(dim=(1, 2, 3)), torch.ones(1))


def test_64_pixel_input_gives_64_32_16_maps() -> None:
    with torch.no_grad():
        out = small("vgg_att3_concat_pc").eval()(images(batch=1, height=64, width=64))
    assert [m.shape[-1] for m in out.maps] == [64, 32, 16]


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize(("height", "width"), [(32, 32), (40, 72)])
def test_baselines_accept_any_size_from_32(name: str, height: int, width: int) -> None:
    with torch.no_grad():
        out = small(name).eval()(images(batch=2, height=height, width=width))
    assert out.logits.shape == (2, 10)
    assert out.maps == () and out.scores == () and out.stages == ()


# ---- the attention maths --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "resnet_att2_indep_dp"])
def test_sigmoid_is_an_option_in_zero_one(name: str) -> None:
    with torch.no_grad():
        out = small(name, normalisation="sigmoid").eval()(images(batch=2))
    for attention_map, scores in zip(out.maps, out.scores):
        assert ((attention_map > 0) & (attention_map < 1)).all()
        torch.testing.assert_close(attention_map, torch.sigmoid(scores))
        # Not a distribution over positions: the paper's softmax property does not hold.
        assert not torch.allclose(attention_map.sum(dim=(1, 2, 3)), torch.ones(2))


def test_sigmoid_is_documented_as_a_deviation_and_softmax_is_the_default() -> None:
    doc = " ".join(attention_module.__doc__.split())
    assert "``sigmoid`` (a deviation" in doc
    assert attention_module.NORMALISATIONS[0] == "softmax"
    block = AttentionBlock(16, 16)
    assert block.normalisation == "softmax" and block.compatibility == "pc"
    assert block.match == "project_l"


def make_block(compatibility: str, match: str = "project_l", local_dim: int = 6, global_dim: int = 6,
               normalisation: str = "softmax") -> AttentionBlock:
    torch.manual_seed(0)
    return AttentionBlock(local_dim, global_dim, compatibility, normalisation, match)


def test_pc_scores_are_u_dot_l_plus_g_and_descriptor_is_weighted_sum() -> None:
    block = make_block("pc")
    local, global_feature = torch.randn(2, 6, 5, 4), torch.randn(2, 6)
    result = block(local, global_feature)
    u = block.u.weight.view(6)
    expected = torch.einsum("c,bchw->bhw", u, local + global_feature[:, :, None, None])
    torch.testing.assert_close(result.scores[:, 0], expected)
    weights = torch.softmax(expected.flatten(1), dim=1).view(2, 5, 4)
    torch.testing.assert_close(result.descriptor, torch.einsum("bhw,bchw->bc", weights, local))


def test_dp_scores_are_l_dot_g_scaled_by_root_dim_unless_unscaled() -> None:
    local, global_feature = torch.randn(2, 6, 5, 4), torch.randn(2, 6)
    dot = torch.einsum("bchw,bc->bhw", local, global_feature)
    scaled = make_block("dp")(local, global_feature)
    torch.testing.assert_close(scaled.scores[:, 0], dot / 6 ** 0.5)
    paper = AttentionBlock(6, 6, "dp", dp_scale="none")(local, global_feature)
    torch.testing.assert_close(paper.scores[:, 0], dot)


def test_dp_scale_keeps_initial_attention_soft_on_resnet() -> None:
    # Unscaled, RN-att2-dp's scores spread by ~100 over a map at initialisation: one-hot softmax.
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    spreads = {}
    for scale in ("sqrt", "none"):
        torch.manual_seed(0)
        model = ltpa.create_model("resnet_att2_concat_dp", depth=20, dp_scale=scale).train()
        scores = model(x).scores[-1].flatten(1)
        spreads[scale] = (scores.max(1).values - scores.min(1).values).mean().item()
    assert spreads["none"] == pytest.approx(spreads["sqrt"] * 16, rel=1e-3)  # dim(g) = 256
    assert spreads["sqrt"] < 10


def test_dp_scale_is_recorded_and_old_dp_checkpoints_load_unscaled(tmp_path) -> None:
    model = ltpa.create_model("vgg_att1_concat_dp", width=0.125)
    assert model.ltpa_config["kwargs"]["dp_scale"] == "sqrt"
    assert "dp_scale" not in ltpa.create_model("vgg_att1_concat_pc", width=0.125).ltpa_config["kwargs"]
    with pytest.raises(ValueError, match="does not accept dp_scale"):
        ltpa.create_model("vgg_att1_concat_pc", dp_scale="none")
    # A file written before dp_scale existed has no such key: it was trained unscaled.
    del model.ltpa_config["kwargs"]["dp_scale"]
    path = save_checkpoint(tmp_path / "old.pt", model)
    loaded, _ = load_checkpoint(path)
    assert all(block.dp_scale == "none" for block in loaded.attention)


def test_resnet_taps_attend_over_the_features_the_baseline_pools() -> None:
    # "activated": stage 3 is attended over exactly what ResNet-164 average-pools (final BN-ReLU),
    # so with uniform attention its descriptor is that average; stage 2 is BN-ReLU'd too.
    torch.manual_seed(0)
    model = ltpa.create_model("resnet_att2_concat_pc", depth=11, width=0.25).eval()
    assert model.tap_features == "activated" and set(model.tap_norms) == {"stage2"}
    x = torch.randn(3, 3, 32, 32)
    captured = {}
    model.attention[1].register_forward_hook(lambda m, args, out: captured.update(local=args[0]))
    out = model(x)
    torch.testing.assert_close(captured["local"], out.features)
    assert out.features.min() >= 0
    with torch.no_grad():
        model.attention[1].u.weight.zero_()  # all scores equal: uniform attention
        uniform = model.attention[1](out.features, torch.randn(3, out.features.shape[1]))
    torch.testing.assert_close(uniform.descriptor, out.features.mean(dim=(2, 3)))
    residual = ltpa.create_model("resnet_att2_concat_pc", depth=11, width=0.25,
                                 tap_features="residual").eval()
    assert len(residual.tap_norms) == 0
    residual.attention[1].register_forward_hook(lambda m, args, out: captured.update(local=args[0]))
    residual_out = residual(x)
    assert not torch.allclose(captured["local"], residual_out.features)
    assert captured["local"].min() < 0  # the raw residual stream, before any ReLU
    with pytest.raises(ValueError, match="tap features"):
        ltpa.create_model("resnet_att2_concat_pc", depth=11, tap_features="relu")
    with pytest.raises(ValueError, match="does not accept tap_features"):
        ltpa.create_model("resnet164", depth=11, tap_features="residual")


def test_old_resnet_att_checkpoints_load_with_residual_taps(tmp_path) -> None:
    model = ltpa.create_model("resnet_att2_concat_dp", depth=11, width=0.25,
                              tap_features="residual")
    del model.ltpa_config["kwargs"]["tap_features"]  # as written before the option existed
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "old.pt", model))
    assert loaded.tap_features == "residual"
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, model.eval()(x).logits)


def test_sigmoid_descriptor_is_the_mean_of_weighted_features() -> None:
    block = make_block("dp", normalisation="sigmoid")
    local, global_feature = torch.randn(2, 6, 5, 4), torch.randn(2, 6)
    result = block(local, global_feature)
    torch.testing.assert_close(result.descriptor, (torch.sigmoid(result.scores) * local).mean(dim=(2, 3)))


def attention_parameter_names(block: AttentionBlock) -> set[str]:
    return {name for name, _ in block.named_parameters()}


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_pc_has_one_learned_u_per_stage_and_dp_has_none(name: str) -> None:
    model = small(name)
    for block in model.attention:
        if name.endswith("_pc"):
            assert isinstance(block.u.weight, nn.Parameter)
            assert block.u.weight.shape == (1, block.descriptor_dim, 1, 1)
        else:
            assert block.u is None
            assert not any(n.startswith("u.") for n in attention_parameter_names(block))
    us = [p for n, p in model.named_parameters() if n.startswith("attention.") and ".u." in n]
    assert len(us) == (len(model.attention) if name.endswith("_pc") else 0)
    if name.endswith("_pc"):  # one u per stage, not shared
        assert len({p.data_ptr() for p in us}) == len(us)


def test_pc_and_dp_differ_by_exactly_the_u_vectors() -> None:
    pc, dp = small("vgg_att3_concat_pc"), small("vgg_att3_concat_dp")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pc) - count(dp) == sum(block.descriptor_dim for block in pc.attention)


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "resnet_att2_concat_pc"])
def test_pc_softmax_scores_ignore_g_as_the_paper_formula_implies(name: str) -> None:
    """<u, l_i + g> = <u, l_i> + <u, g>: the g term is the same at every position, so the softmax
    cancels it. Under pc + softmax the global feature cannot change the output; under dp it does."""
    x = images(batch=4)
    for compat, should_change in (("pc", False), ("dp", True)):
        # Train mode (batch statistics) without dropout: deterministic, and an untrained net's
        # activations do not fade away as they do through default eval-mode batch norm.
        model = small(name.replace("_pc", f"_{compat}"), dropout=0.0).train()
        g_layer = model.global_fc[1] if hasattr(model, "global_fc") else model.global_head[-1]
        with torch.no_grad():
            before = model(x).logits
            g_layer.bias.add_(torch.randn_like(g_layer.bias))
            after = model(x).logits
        assert torch.allclose(before, after, atol=1e-4) != should_change, compat


# ---- dimension matching ---------------------------------------------------------------------


def test_project_l_maps_local_features_to_dim_g() -> None:
    block = make_block("pc", "project_l", local_dim=256, global_dim=512)
    assert isinstance(block.project_local, nn.Conv2d) and isinstance(block.project_global, nn.Identity)
    assert block.project_local.weight.shape == (512, 256, 1, 1)
    assert block.descriptor_dim == 512 and block.u.weight.shape == (1, 512, 1, 1)
    result = block(torch.randn(2, 256, 4, 4), torch.randn(2, 512))
    assert result.descriptor.shape == (2, 512)


def test_project_g_maps_the_global_feature_to_dim_l() -> None:
    block = make_block("pc", "project_g", local_dim=256, global_dim=512)
    assert isinstance(block.project_global, nn.Linear) and isinstance(block.project_local, nn.Identity)
    assert block.project_global.weight.shape == (256, 512)
    assert block.descriptor_dim == 256 and block.u.weight.shape == (1, 256, 1, 1)
    result = block(torch.randn(2, 256, 4, 4), torch.randn(2, 512))
    assert result.descriptor.shape == (2, 256)


@pytest.mark.parametrize("match", ["project_l", "project_g"])
def test_equal_dimensions_need_no_projection(match: str) -> None:
    block = make_block("dp", match, local_dim=512, global_dim=512)
    assert attention_parameter_names(block) == set()


@pytest.mark.parametrize("match", ["project_l", "project_g"])
@pytest.mark.parametrize("width", [1.0, 0.125])
def test_descriptor_dims_follow_the_matching_choice(match: str, width: float) -> None:
    with torch.device("meta"):
        model = ltpa.create_model("vgg_att3_concat_pc", match=match, width=width)
    local_dims = [scaled(VGG_LAYERS[layer - 1][0], width) for layer in (7, 10, 13)]
    global_dim = scaled(512, width)
    expected = [global_dim] * 3 if match == "project_l" else local_dims
    assert [block.descriptor_dim for block in model.attention] == expected
    assert model.classifier.classifiers[0].in_features == sum(expected)
    if width == 1.0:  # the paper's VGG: l^1 has 256 channels, l^2 and l^3 512, g 512
        assert sum(expected) == (1536 if match == "project_l" else 1280)


# ---- heads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in ATTENTION_MODELS if "_concat_" in n])
@pytest.mark.parametrize("match", ["project_l", "project_g"])
def test_concat_head_is_one_linear_over_all_descriptors(name: str, match: str) -> None:
    model = small(name, match=match, num_classes=5)
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    assert linears[0].in_features == sum(block.descriptor_dim for block in model.attention)
    assert linears[0].out_features == 5


@pytest.mark.parametrize("name", [n for n in ATTENTION_MODELS if "_indep_" in n])
@pytest.mark.parametrize("match", ["project_l", "project_g"])
def test_indep_head_has_one_linear_per_stage(name: str, match: str) -> None:
    model = small(name, match=match, num_classes=5)
    linears = [m for m in model.classifier.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == len(model.attention) == len(MAPS_AT_32[family(name)])
    assert [lin.in_features for lin in linears] == [block.descriptor_dim for block in model.attention]
    assert all(lin.out_features == 5 for lin in linears)


def test_indep_logits_are_the_sum_of_per_stage_log_probabilities() -> None:
    model = calibrated(small("vgg_att2_indep_dp"))
    with torch.no_grad():
        logits = model(images(batch=2)).logits
    # Each term is a log-softmax, so each is <= 0 and the product of experts is below 1 everywhere.
    assert (logits <= 0).all()
    assert (torch.logsumexp(logits, dim=1) <= 1e-6).all()


# ---- gradients ------------------------------------------------------------------------------


def check_attention_gradients(name: str, model: nn.Module) -> None:
    """After a backward: u, projections and head all have non-zero gradients (g too under dp)."""
    checked = []
    for prefix, module in (("attention", model.attention), ("classifier", model.classifier)):
        for param_name, param in module.named_parameters():
            # pc + softmax cancels g (see the test above), so g's projection gets no gradient.
            if name.endswith("_pc") and "project_global" in param_name:
                continue
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{prefix}.{param_name}"
            checked.append(param_name)
    assert len([n for n in checked if n.endswith("u.weight")]) == (
        len(model.attention) if name.endswith("_pc") else 0
    )
    projected = [b for b in model.attention if not isinstance(b.project_local, nn.Identity)
                 or (name.endswith("_dp") and not isinstance(b.project_global, nn.Identity))]
    assert len([n for n in checked if "project_" in n]) == len(projected)
    if name.endswith("_dp"):
        g_params = model.global_fc if hasattr(model, "global_fc") else model.global_head
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g_params.parameters())


@pytest.mark.parametrize(
    "name", ["vgg_att3_concat_pc", "vgg_att3_indep_dp", "resnet_att2_concat_pc", "resnet_att2_indep_dp"]
)
def test_gradients_reach_attention_parameters_with_project_g(name: str) -> None:
    torch.manual_seed(0)
    model = small(name, match="project_g").train()
    F.cross_entropy(model(images(batch=4)).logits, torch.tensor([1, 2, 3, 4])).backward()
    assert any(not isinstance(b.project_global, nn.Identity) for b in model.attention)
    check_attention_gradients(name, model)


# ---- precision and determinism --------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "vgg_att2_indep_dp", "resnet_att2_concat_pc"])
def test_attention_stays_fp32_under_bf16_autocast(name: str) -> None:
    model = calibrated(small(name))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(batch=2))
    assert out.features.dtype == torch.bfloat16  # autocast really was on for the convolutions
    for attention_map, scores in zip(out.maps, out.scores):
        assert attention_map.dtype == torch.float32 and scores.dtype == torch.float32
        torch.testing.assert_close(attention_map.sum(dim=(1, 2, 3)), torch.ones(2))
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "resnet_att2_indep_dp", "vgg", "vgg_gap"])
def test_eval_mode_is_deterministic(name: str) -> None:
    model = calibrated(small(name))
    x = images(batch=3)
    with torch.no_grad():
        first, second = model(x), model(x.clone())
    assert not torch.allclose(first.logits[0], first.logits[1])  # the images really differ
    assert torch.equal(first.logits, second.logits)
    for a, b in zip(first.maps, second.maps):
        assert torch.equal(a, b)


def test_train_mode_uses_dropout() -> None:
    """The counterpart of determinism: train mode really is stochastic (dropout on)."""
    model = small("vgg_att3_concat_pc").train()
    x = images(batch=3)
    with torch.no_grad():
        assert not torch.equal(model(x).logits, model(x).logits)


# ---- bad input ------------------------------------------------------------------------------


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg19'") as info:
        ltpa.create_model("vgg19")
    for name in ("vgg_att3_concat_pc", "resnet_att2_indep_dp", "vgg_gap", "resnet164"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("resnet", 3), r"resnet supports attention levels \[2\] only; got att3"),
        (("resnet", 1), r"levels \[2\]"),
        (("vgg", 4), r"vgg supports attention levels \[1, 2, 3\] only"),
        (("alexnet", 2), "unknown backbone 'alexnet'; valid choices: vgg, resnet"),
        (("vgg", 2, "sum"), "unknown head 'sum'; valid choices: concat, indep"),
        (("vgg", 2, "concat", "cosine"), "unknown compatibility 'cosine'; valid choices: pc, dp"),
    ],
)
def test_impossible_combinations_name_the_allowed_choices(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ltpa.model_name(*args)


@pytest.mark.parametrize(
    ("name", "overrides", "fragment"),
    [
        ("vgg", {"head": "x"}, "'vgg' does not accept head; it accepts: width, dropout"),
        ("vgg_att3_concat_pc", {"levels": 3}, "does not accept levels; it accepts: normalisation, match"),
        ("vgg_att3_concat_pc", {"depth": 164}, "does not accept depth"),
        ("resnet164", {"compatibility": "dp"}, "it accepts: width, depth"),
        ("vgg_att3_concat_pc", {"normalisation": "tanh"}, "valid choices: softmax, sigmoid"),
        ("vgg_att3_concat_pc", {"match": "both"}, "valid choices: project_l, project_g"),
        ("vgg_att3_concat_pc", {"width": 0}, "width must be positive"),
        ("resnet_att2_concat_pc", {"depth": 100}, "9n\\+2"),
        ("vgg", {"num_classes": 1}, "num_classes must be an integer of at least 2"),
    ],
)
def test_bad_overrides_are_refused_with_the_accepted_choices(name: str, overrides: dict,
                                                             fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ltpa.create_model(name, **overrides)


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "resnet_att2_concat_dp", "vgg_gap", "resnet164"])
@pytest.mark.parametrize(
    ("shape", "fragment"),
    [
        ((3, 32, 32), r"expected a batch of images shaped \(B, 3, H, W\); got shape \(3, 32, 32\)"),
        ((2, 1, 32, 32), "expected 3 colour channels .*got 1"),
        ((2, 4, 32, 32), "expected 3 colour channels .*got 4"),
        ((2, 3, 16, 16), "at least 32x32; got 16x16"),
        ((2, 3, 32, 31), "at least 32x32; got 32x31"),
    ],
)
def test_wrong_input_shapes_are_named(name: str, shape: tuple, fragment: str) -> None:
    model = small(name).eval()
    with pytest.raises(ValueError, match=fragment):
        model(torch.zeros(shape))


def test_integer_images_are_refused_with_a_hint() -> None:
    model = small("vgg_att3_concat_pc").eval()
    with pytest.raises(ValueError, match="floating-point .*got dtype torch.uint8.*image_to_input"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
