"""ltpa.faithfulness on a constructed model whose decision depends only on a known region: every
metric must rank a map of that region above a random map, the randomisation check must drop the
correlation of model-dependent maps, and bad input must name the valid choices."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltpa import faithfulness as fa
from ltpa.maps import upsample
from ltpa.models.outputs import ModelOutput
from ltpa.stats import spearman

SIDE, CELLS = 32, 8  # 32x32 images, features on an 8x8 grid (4x4 pixels per cell)
REGION = (slice(0, 3), slice(0, 3))  # the top-left 3x3 cells = pixels 0..11 x 0..11


class SpatialWeights(nn.Module):
    """A learned weight per feature cell (re-initialised to noise by the randomisation check)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(CELLS, CELLS))
        self.weight.data[REGION] = 1.0

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, 0.0, 1.0)


class RegionModel(nn.Module):
    """Class 0 when the region is bright, class 1 when it is dark: nothing else matters.

    Features: per 4x4 cell the mean brightness through a 1x1 conv; logits: a linear layer on the
    region-weighted mean feature. Its one attention stage ("region") is a softmax of the spatial
    weights, so it attends to the region exactly.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 1)
        nn.init.constant_(self.features.weight, 1 / 3)
        nn.init.zeros_(self.features.bias)
        self.spatial = SpatialWeights()
        self.classifier = nn.Linear(4, 2)
        with torch.no_grad():
            # Class 0 above a mean region brightness of 0.8 (probability 0.95 at 0.95).
            self.classifier.weight.copy_(torch.tensor([[2.5] * 4, [-2.5] * 4]))
            self.classifier.bias.copy_(torch.tensor([-8.0, 8.0]))
        self.stage_names = ("region",)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        features = F.relu(self.features(F.avg_pool2d(x, SIDE // CELLS)))
        weights = self.spatial.weight
        pooled = (features * weights).sum(dim=(2, 3)) / weights.sum().clamp_min(1e-6)
        scores = (10 * weights).expand(x.shape[0], 1, CELLS, CELLS)
        attention = torch.softmax(scores.flatten(1), dim=1).view_as(scores)
        return ModelOutput(self.classifier(pooled), (attention,), (scores,), self.stage_names, features)


def region_images(n: int = 12, seed: int = 0) -> torch.Tensor:
    """Noise images whose region is bright: the model says class 0 with high confidence."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIDE, SIDE, generator=generator) * 0.6
    x[:, :, :12, :12] = 0.95
    return x


def region_map(n: int) -> torch.Tensor:
    mask = torch.zeros(n, SIDE, SIDE)
    mask[:, :12, :12] = 1.0
    return mask


@pytest.fixture()
def model():
    return RegionModel().eval()


def test_the_constructed_model_depends_only_on_the_region(model):
    x = region_images()
    assert (model(x).logits.argmax(1) == 0).all()
    outside = x.clone()
    outside[:, :, 12:, :] = torch.rand_like(outside[:, :, 12:, :])
    outside[:, :, :, 12:] = torch.rand_like(outside[:, :, :, 12:])
    torch.testing.assert_close(model(outside).logits, model(x).logits)


@pytest.mark.parametrize("replacement", list(fa.REPLACEMENTS))
def test_every_metric_ranks_the_region_above_a_random_map(model, replacement):
    x = region_images()
    maps = {"region": region_map(len(x)), "random": torch.rand(len(x), SIDE, SIDE, generator=torch.Generator().manual_seed(1))}
    scores = fa.score_maps(model, x, maps, steps=8, replacement=replacement, forward_batch=64)
    deletion = {k: fa.trapezoid_area(v).mean().item() for k, v in scores.deletion.items()}
    insertion = {k: fa.trapezoid_area(scores.insertion(k)).mean().item() for k in maps}
    drop = {k: scores.average_drop(k).mean().item() for k in maps}
    assert deletion["region"] < deletion["random"] - 0.1, deletion
    # Imputation from randomly revealed pixels restores the region fast, so the margin is smaller.
    assert insertion["region"] > insertion["random"] + 0.02, insertion
    assert drop["region"] < drop["random"], drop
    # Both curves start at the clean probability and end on the fully replaced image.
    for curves in (scores.deletion, scores.lerf):
        torch.testing.assert_close(curves["region"][:, 0], scores.clean_probability)
        torch.testing.assert_close(curves["region"][:, -1], curves["random"][:, -1])


def test_the_methods_of_the_constructed_model_find_the_region(model):
    x = region_images(6)
    names = fa.resolve_methods(model)
    assert names == ["region", "attention", "grad_cam", "grad_cam_pp", "random", "centre"]
    found = fa.method_maps(model, x, names)
    inside = region_map(len(x)).bool()
    share = {name: (found.maps[name] * inside).sum(dim=(1, 2)) / found.maps[name].sum(dim=(1, 2))
             for name in names}
    for name in ("region", "attention"):
        assert (share[name] > 0.9).all(), (name, share[name])  # bilinear upsampling blurs the edge
    # Grad-CAM averages the gradient over positions, so its map is the brightness weighted by
    # channel: it still favours the (bright) region, more than twice its 9/64 of the image.
    for name in ("grad_cam", "grad_cam_pp"):
        assert (share[name] > 2 * 9 / 64).all() and (share[name] > share["random"]).all(), (name, share[name])
    # The scorecard itself ranks them above both floors by deletion area.
    scores = fa.score_maps(model, x, found.maps, found.classes, ["deletion"], steps=8)
    area = {k: fa.trapezoid_area(v).mean().item() for k, v in scores.deletion.items()}
    assert max(area[k] for k in ("region", "grad_cam", "grad_cam_pp")) < min(area["random"], area["centre"])
    assert scores.lerf == {} and scores.explanation_probability == {}


def test_randomisation_drops_the_correlation_of_model_dependent_maps(model):
    x = region_images(6)
    before = copy.deepcopy(model.state_dict())
    check = fa.randomisation_check(model, x, ["region", "grad_cam", "random", "centre"], cascade_steps=3)
    assert check.total_layers == 3 and check.layers_reset[-1] == 3
    assert check.steps[0] == "classifier" and check.steps[-1] == "features"
    assert (check.rho["region"][-1] < 0.5).all(), check.rho["region"]
    # After the classifier is re-initialised the class gradient may be negative everywhere: ReLU
    # leaves a flat map, whose correlation is reported as NaN, never as a number.
    grad_cam = check.rho["grad_cam"]
    assert (torch.isnan(grad_cam) | (grad_cam < 0.9)).all(), grad_cam
    for name in ("random", "centre"):  # maps that ignore the model never decorrelate
        torch.testing.assert_close(check.rho[name], torch.ones_like(check.rho[name]))
    # The trained model itself is untouched: same weights, no gradients.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(p.grad is None for p in model.parameters())


def test_insertion_is_the_least_relevant_first_removal_read_backwards(model):
    x = region_images(3)
    maps = {"m": torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))}
    steps = 4
    scores = fa.score_maps(model, x, maps, steps=steps, replacement="mean")
    # Build the insertion images directly: reveal the top k/steps of pixels on the mean colour.
    ranks = fa.relevance_ranks(maps["m"].flatten(1), fa.image_noise(range(3), SIDE * SIDE, 0, 1, x.device))
    fill = fa.model_fill(model)
    for k, count in enumerate(fa.removed_counts(SIDE * SIDE, steps)):
        revealed = (ranks < count).view(3, 1, SIDE, SIDE)
        images = torch.where(revealed, x, fill.expand_as(x))
        probability = torch.softmax(model(images).logits, 1)[:, 0]
        torch.testing.assert_close(scores.insertion("m")[:, k], probability, atol=1e-5, rtol=1e-4)


def test_linear_imputation_fills_a_hole_in_a_ramp_exactly():
    ramp = torch.linspace(0.1, 0.9, SIDE)
    x = (ramp[None, :] * 0.5 + ramp[:, None] * 0.5).expand(1, 3, SIDE, SIDE).clone()
    removed = torch.zeros(1, 1, SIDE, SIDE, dtype=torch.bool)
    removed[..., 8:20, 10:24] = True
    filled = fa.linear_imputation(x, removed, torch.full((1, 3, 1, 1), 0.5), iterations=200)[:, 0]
    torch.testing.assert_close(filled, x, atol=1e-4, rtol=0)
    everything = torch.ones(1, 1, SIDE, SIDE, dtype=torch.bool)
    grey = fa.linear_imputation(x, everything, torch.full((1, 3, 1, 1), 0.25))
    torch.testing.assert_close(grey, torch.full_like(grey, 0.25))


def test_batched_statistics_match_the_single_map_versions():
    generator = torch.Generator().manual_seed(3)
    a = torch.randint(0, 5, (4, 50), generator=generator).float()  # many ties
    b = torch.rand(4, 50, generator=generator)
    rho = fa.spearman_batched(a, b)
    for row in range(4):
        assert rho[row].item() == pytest.approx(spearman(a[row].numpy(), b[row].numpy()), abs=1e-6)
    assert torch.isnan(fa.spearman_batched(torch.ones(1, 9), torch.rand(1, 9))).all()
    small = torch.rand(2, 1, 8, 8, generator=generator)
    up = fa.to_input_resolution(small, (32, 32))
    np.testing.assert_allclose(up[1].numpy(), upsample(small[1, 0].numpy(), (32, 32)), rtol=1e-5, atol=1e-8)


def test_ties_are_removed_in_random_order_not_top_row_first():
    ranks = fa.relevance_ranks(torch.zeros(1, SIDE * SIDE), fa.image_noise([0], SIDE * SIDE, 0, 1, torch.device("cpu")))
    first = (ranks[0] < SIDE).view(SIDE, SIDE)  # the first 32 pixels a flat map gives up
    assert first[0].sum() < 8 and sorted(ranks[0].tolist()) == list(range(SIDE * SIDE))


def test_bad_input_names_the_valid_choices(model, tiny_zoo):
    from ltpa.zoo import load_zoo_model

    x = region_images(2)
    with pytest.raises(ValueError, match=r"expected one 2-D map per image, shaped \(2, h, w\)"):
        fa.score_maps(model, x, {"m": torch.rand(3, 8, 8)})
    with pytest.raises(ValueError, match="expected one 2-D map"):
        fa.score_maps(model, x, {"m": torch.rand(2, 3, 8, 8)})
    with pytest.raises(ValueError, match="unknown metric 'auc'; valid choices: deletion, insertion"):
        fa.check_metrics(["auc"])
    with pytest.raises(ValueError, match="unknown replacement 'zeros'; valid choices: blur, mean, noisy_linear"):
        fa.score_maps(model, x, {"m": torch.rand(2, 8, 8)}, replacement="zeros")
    with pytest.raises(ValueError, match="unknown method 'lime'; valid choices: stages, attention, .*region"):
        fa.resolve_methods(model, ["lime"])
    baseline = load_zoo_model("vgg").model
    with pytest.raises(ValueError, match="no attention stages.*valid methods for it: grad_cam, grad_cam_pp, random, centre"):
        fa.resolve_methods(baseline, ["stages"])
    with pytest.raises(ValueError, match="CAM needs a global-average-pooling model"):
        fa.resolve_methods(baseline, ["cam"])
    assert fa.resolve_methods(load_zoo_model("vgg_gap").model) == ["cam", "grad_cam", "grad_cam_pp", "random", "centre"]
    with pytest.raises(RuntimeError, match="training mode"):
        fa.method_maps(RegionModel().train(), x, ["region"])
    with pytest.raises(ValueError, match="at least 2 steps"):
        fa.score_maps(model, x, {"m": torch.rand(2, 8, 8)}, steps=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_results(model):
    x = region_images(4)
    maps = {"region": region_map(4), "random": torch.rand(4, SIDE, SIDE)}
    on_cpu = fa.score_maps(model, x, maps, steps=8, replacement="noisy_linear")
    gpu_model = copy.deepcopy(model).cuda()
    on_gpu = fa.score_maps(gpu_model, x.cuda(), {k: v.cuda() for k, v in maps.items()}, steps=8,
                           replacement="mean")
    on_cpu_mean = fa.score_maps(model, x, maps, steps=8, replacement="mean")
    for name in maps:
        torch.testing.assert_close(on_gpu.deletion[name].cpu(), on_cpu_mean.deletion[name], atol=1e-4, rtol=1e-4)
    assert on_cpu.deletion["region"].shape == (4, 9)
