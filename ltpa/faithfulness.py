"""Is a map faithful to the model? Deletion / insertion curves, confidence change and the
model-randomisation check, for any per-image map on any ltpa model, batched on any device.

Maps compared (``METHODS``; every map is brought to the input's resolution, bilinearly)
    * each attention stage (``stages`` expands to one method per stage, named by the stage, e.g.
      ``layer13``) and ``attention``, their combination: the mean of the stage maps, each upsampled
      with its mass kept so every stage weighs the same;
    * ``cam`` (GAP models only), ``grad_cam`` and ``grad_cam_pp`` (Grad-CAM++) on the model itself:
      an attention model and its baseline are scored the same way;
    * ``random`` (i.i.d. uniform per pixel, seeded per image) and ``centre`` (the centre prior of
      ``ltpa.saliency``): the floors every map should beat.

Metrics (``METRICS``); the target class is the model's prediction on the clean image
    * ``deletion``: pixels are removed most-relevant-first (MoRF) in ``steps`` equal steps and
      replaced (``REPLACEMENTS``); the curve is the target probability against the removed
      fraction, the score its area (lower = the map found what the decision needs).
    * ``insertion``: pixels are revealed most-relevant-first on the replacement canvas; area, higher
      is better. Revealing the top fraction f is the same image as removing the least relevant
      1 - f, so this curve is the least-relevant-first (LeRF) removal curve read backwards and
      has the same area; likewise LeRF insertion is the deletion curve backwards. One pass over
      the two removal orders therefore gives all four curves.
    * ``confidence``: average drop and increase in confidence (Chattopadhyay et al. 2018): the
      image is blended towards the dataset mean colour where the map (scaled to peak 1) is low;
      drop = mean of max(0, p - p') / p, increase = share of images with p' > p.
    * ``randomisation``: the cascading model-randomisation check (Adebayo et al. 2018): on a
      private copy of the model the parameterised layers are re-initialised from the top down and
      every map recomputed; Spearman's rank correlation with the trained model's map per step
      (a faithful map decorrelates; ``random`` and ``centre`` ignore the model and stay at 1).

Why own, hook-free code rather than pytorch-grad-cam or torch-cam: both register forward/backward
hooks on the model they are given, and the app serves one cached model to every session (see
``pages/ui/widgets.py``), which must never carry hooks. ltpa models return their last spatial
features in ``ModelOutput``, so ``torch.autograd.grad`` gives Grad-CAM(++) without hooks, and one
forward-backward serves every gradient method. ``tests/test_faithfulness_crosscheck.py`` compares
the maps with pytorch-grad-cam where it is installed. Nothing here mutates the model it is given.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.choices import check_choice
from ltpa.saliency import (
    cam_from_features,
    centre_prior,
    grad_cam_from_gradients,
    grad_cam_plus_plus_from_gradients,
    has_cam,
)

STAGES, ATTENTION = "stages", "attention"
METHODS: dict[str, str] = {
    STAGES: "each attention stage's own map (one method per stage, named by the stage)",
    ATTENTION: "all attention stages combined: the mean of their maps at the input's resolution",
    "cam": "class activation map (global-average-pooling models only)",
    "grad_cam": "Grad-CAM on the last spatial features",
    "grad_cam_pp": "Grad-CAM++ on the last spatial features",
    "random": "i.i.d. uniform noise per pixel (a floor)",
    "centre": "a Gaussian blob in the middle of the image (a floor)",
}
GRADIENT_METHODS = ("grad_cam", "grad_cam_pp")
METRICS: dict[str, str] = {
    "deletion": "area under the target probability as the most relevant pixels are removed first "
                "(lower is better)",
    "insertion": "area under the target probability as the most relevant pixels are revealed first "
                 "on the replacement (higher is better; = least-relevant-first removal)",
    "confidence": "average drop (lower is better) and increase (higher is better) in confidence on "
                  "the image blended to the mean colour where the map is low",
    "randomisation": "Spearman rank correlation of each map with itself after cascading "
                     "re-initialisation of the model from the top layer down (lower is better)",
}
REPLACEMENTS: dict[str, str] = {
    "blur": "a Gaussian blur of the image (sigma a tenth of its side)",
    "mean": "the dataset's mean colour (the model's normalisation mean)",
    "noisy_linear": "noisy linear imputation as in ROAD: each removed pixel the weighted mean of its "
                    "8 neighbours (solved for all removed pixels at once), plus Gaussian noise",
}
DEFAULT_STEPS = 16
DEFAULT_REPLACEMENT = "blur"
BLUR_SIGMA_FRACTION = 0.1
IMPUTATION_NOISE = 0.02  # std of the added noise, pixel units [0, 1]
# ROAD's neighbour weights: 1/6 for the four direct neighbours, 1/12 for the diagonals.
NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
DEFAULT_CASCADE_STEPS = 5


# ----------------------------------------------------------------------------- choices
def _choice_list(kind: str, valid: Sequence[str]) -> str:
    return f"valid {kind}: {', '.join(valid)}"


def check_metrics(metrics: Sequence[str] | None) -> list[str]:
    """The metrics to compute (all when None), in ``METRICS`` order; a ValueError names the valid
    ones."""
    if metrics is None:
        return list(METRICS)
    for metric in metrics:
        check_choice("metric", metric, list(METRICS))
    if not metrics:
        raise ValueError(f"no metric chosen; {_choice_list('metrics', METRICS)}")
    return [m for m in METRICS if m in metrics]


def check_replacement(replacement: str) -> str:
    """``replacement`` itself, or a ValueError naming the valid ones."""
    check_choice("replacement", replacement, list(REPLACEMENTS))
    return replacement


def model_stages(model: nn.Module, input_size: int = 32) -> tuple[str, ...]:
    """The attention stages of a model (empty for a baseline), from one dummy forward."""
    inner = getattr(model, "model", model)
    names = getattr(inner, "stage_names", None)
    if names is not None:
        return tuple(names)
    device = next(model.parameters()).device
    with torch.no_grad():
        return tuple(model(torch.zeros(1, 3, input_size, input_size, device=device)).stages)


def applicable_methods(model: nn.Module) -> list[str]:
    """Every method name that applies to ``model``, stages expanded (e.g. ``layer7``)."""
    stages = list(model_stages(model))
    methods = stages + ([ATTENTION] if stages else [])
    methods += ["cam"] if has_cam(model) else []
    return methods + ["grad_cam", "grad_cam_pp", "random", "centre"]


def resolve_methods(model: nn.Module, requested: Sequence[str] | None = None) -> list[str]:
    """The method names to compute on ``model``: every applicable one when ``requested`` is None,
    else ``requested`` with ``stages`` expanded. A ValueError names the valid choices when a name
    is unknown or does not apply to this model (a baseline has no stages, CAM needs GAP)."""
    valid = applicable_methods(model)
    if requested is None:
        return valid
    stages = list(model_stages(model))
    resolved: list[str] = []
    for name in requested:
        if name == STAGES or name == ATTENTION:
            if not stages:
                raise ValueError(f"this model has no attention stages, so {name!r} does not apply; "
                                 f"{_choice_list('methods for it', valid)}")
            resolved += stages if name == STAGES else [ATTENTION]
        elif name == "cam" and not has_cam(model):
            raise ValueError("CAM needs a global-average-pooling model (such as 'vgg_gap'); "
                             f"{_choice_list('methods for this model', valid)}")
        elif name in valid:
            resolved.append(name)
        else:
            check_choice("method", name, list(METHODS) + stages)
            raise ValueError(f"{name!r} does not apply to this model; "
                             f"{_choice_list('methods for it', valid)}")
    if not resolved:
        raise ValueError(f"no method chosen; {_choice_list('methods', valid)}")
    return list(dict.fromkeys(resolved))


def _check_model(model: nn.Module) -> None:
    if model.training:
        raise RuntimeError("the model is in training mode: faithfulness needs eval mode (BatchNorm "
                           "statistics and dropout must not change); call model.eval() first")


def _check_images(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"expected float pixel-space images B x 3 x H x W in [0, 1]; got "
                         f"{x.dtype} {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no images to score")


# ----------------------------------------------------------------------------- maps
def to_input_resolution(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Maps B x 1 x h x w (or B x h x w) upsampled bilinearly (align_corners=False) to ``size``,
    each keeping its total mass, as in ``ltpa.maps.upsample``: B x H x W float32."""
    if maps.dim() == 3:
        maps = maps[:, None]
    maps = maps.detach().float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps[:, 0]
    up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    total, up_total = maps.sum(dim=(1, 2, 3)), up.sum(dim=(1, 2, 3))
    scale = torch.where((total > 0) & (up_total > 0), total / up_total.clamp_min(1e-30), torch.ones_like(total))
    return (up * scale[:, None, None, None])[:, 0]


def check_maps(maps: Tensor, x: Tensor) -> Tensor:
    """One map per image of ``x`` as B x H x W at the input's resolution; a ValueError says what
    is wrong with maps of another shape (B x h x w or B x 1 x h x w expected) or with NaNs."""
    shape = tuple(maps.shape)
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or maps.shape[0] != x.shape[0] or min(maps.shape[1:]) < 1:
        raise ValueError(f"expected one 2-D map per image, shaped ({x.shape[0]}, h, w) or "
                         f"({x.shape[0]}, 1, h, w); got {shape}")
    if maps.shape[1] > x.shape[2] or maps.shape[2] > x.shape[3]:
        raise ValueError(f"maps {shape} are larger than the images ({x.shape[2]}x{x.shape[3]})")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    return to_input_resolution(maps.to(x.device), (x.shape[2], x.shape[3]))


def image_noise(indices: Sequence[int], count: int, seed: int, stream: int, device: torch.device) -> Tensor:
    """Uniform [0, 1) numbers, ``count`` per image, fixed by (seed, image index, stream) alone so a
    map or tie order does not depend on how images are batched: len(indices) x count."""
    rows = []
    for index in indices:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + int(index)) * 4 + stream)
        rows.append(torch.rand(count, generator=generator))
    return torch.stack(rows).to(device)


class MethodMaps(NamedTuple):
    """The maps of several methods on one batch, with what the model made of the clean images."""

    maps: dict[str, Tensor]  # method -> B x H x W float32 at the input resolution, >= 0
    logits: Tensor  # B x classes (clean images)
    classes: Tensor  # B target classes (the prediction unless given)


def method_maps(
    model: nn.Module, x: Tensor, methods: Sequence[str], classes: Tensor | None = None,
    image_indices: Sequence[int] | None = None, seed: int = 0,
) -> MethodMaps:
    """Every requested map (names as from ``resolve_methods``) of a pixel-space batch ``x`` with
    one forward (and one backward when a gradient method is asked for). ``classes`` fixes the
    target class per image (default: the prediction); ``image_indices`` seed the random map."""
    _check_model(model)
    _check_images(x)
    size = (x.shape[2], x.shape[3])
    indices = list(range(x.shape[0])) if image_indices is None else list(image_indices)
    needs_grad = any(m in GRADIENT_METHODS for m in methods)
    with torch.enable_grad() if needs_grad else torch.no_grad():
        # An input that requires grad keeps the graph even for a model whose parameters are frozen.
        out = model(x.detach().requires_grad_(needs_grad))
        target = out.logits.argmax(dim=1) if classes is None else classes.to(x.device, torch.long)
        grads = None
        if needs_grad:
            (grads,) = torch.autograd.grad(out.logits.gather(1, target[:, None]).sum(), out.features)
    features = out.features.detach()
    stage_maps = {s: to_input_resolution(m, size) for s, m in zip(out.stages, out.maps)}
    maps: dict[str, Tensor] = {}
    for method in methods:
        if method in stage_maps:
            maps[method] = stage_maps[method]
        elif method == ATTENTION:
            if not stage_maps:
                raise ValueError("this model has no attention stages to combine")
            maps[method] = torch.stack(list(stage_maps.values())).mean(dim=0)
        elif method == "cam":
            maps[method] = to_input_resolution(cam_from_features(model, features, target), size)
        elif method == "grad_cam":
            maps[method] = to_input_resolution(grad_cam_from_gradients(features, grads), size)
        elif method == "grad_cam_pp":
            maps[method] = to_input_resolution(grad_cam_plus_plus_from_gradients(features, grads), size)
        elif method == "random":
            maps[method] = image_noise(indices, size[0] * size[1], seed, 0, x.device).view(-1, *size)
        elif method == "centre":
            prior = torch.from_numpy(centre_prior(*size)).to(x.device)
            maps[method] = prior.expand(x.shape[0], *size).clone()
        else:
            raise ValueError(f"unknown method {method!r} for this model; "
                             f"{_choice_list('methods', applicable_methods(model))}")
    return MethodMaps(maps, out.logits.detach().float(), target)


# ----------------------------------------------------------------------------- perturbation
def relevance_ranks(maps: Tensor, tie_noise: Tensor) -> Tensor:
    """Each pixel's place in most-relevant-first order (0 = most relevant): B x N int64 from maps
    B x N. Ties (flat regions, zeros after ReLU) are broken by ``tie_noise``, not by position, so
    a flat map is removed in random order rather than top row first."""
    shuffle = tie_noise.argsort(dim=1)
    order = shuffle.gather(1, maps.gather(1, shuffle).argsort(dim=1, descending=True, stable=True))
    ranks = torch.empty_like(order)
    positions = torch.arange(maps.shape[1], device=maps.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def removed_counts(n_pixels: int, steps: int) -> list[int]:
    """Pixels removed at each of the ``steps + 1`` points of a curve (0 ... all)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"a curve needs at least 2 steps; got {steps!r}")
    return [round(k * n_pixels / steps) for k in range(steps + 1)]


def removal_masks(ranks: Tensor, counts: Sequence[int], most_relevant_first: bool) -> Tensor:
    """Boolean B x S x N: pixel removed at each count (most or least relevant first)."""
    n = ranks.shape[1]
    counts_t = torch.tensor(list(counts), device=ranks.device)
    if most_relevant_first:
        return ranks[:, None, :] < counts_t[None, :, None]
    return ranks[:, None, :] >= (n - counts_t)[None, :, None]


def blurred(x: Tensor, sigma_fraction: float = BLUR_SIGMA_FRACTION) -> Tensor:
    """A Gaussian blur of each image (sigma a fraction of the shorter side, reflect padding)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    side = min(x.shape[2], x.shape[3])
    sigma = max(0.5, sigma_fraction * side)
    kernel = min(2 * math.ceil(2 * sigma) + 1, 2 * ((side - 1) // 2) + 1)
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def _neighbour_sum(v: Tensor) -> Tensor:
    kernel = torch.tensor(NEIGHBOUR_WEIGHTS, dtype=v.dtype, device=v.device)[None, None]
    return F.conv2d(v, kernel, padding=1)


def linear_imputation(x: Tensor, removed: Tensor, fill: Tensor, iterations: int | None = None) -> Tensor:
    """ROAD's linear imputation: every removed pixel becomes the weighted mean of its (up to 8)
    neighbours, all removed pixels solved together; a component with no kept pixel takes ``fill``.

    ``x`` is B x C x H x W, ``removed`` boolean B x S x H x W (S masks per image), ``fill`` the
    colour 1 x C x 1 x 1. Solved by a fixed number of conjugate-gradient steps on the graph
    Laplacian (symmetric, so CG applies; fixed steps keep the GPU free of data-dependent
    branches). Returns B x S x C x H x W.
    """
    b, c, h, w = x.shape
    s = removed.shape[1]
    mask = removed.to(x.dtype)[:, :, None].expand(b, s, c, h, w).reshape(b * s * c, 1, h, w)
    centred = (x - fill)[:, None].expand(b, s, c, h, w).reshape(b * s * c, 1, h, w)
    known = centred * (1 - mask)
    degree = _neighbour_sum(torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device))

    def apply(v: Tensor) -> Tensor:  # the Laplacian restricted to the removed pixels
        return mask * (degree * v - _neighbour_sum(v))

    solution = torch.zeros_like(known)
    residual = mask * _neighbour_sum(known)
    direction = residual.clone()
    rs = residual.pow(2).sum(dim=(1, 2, 3), keepdim=True)
    for _ in range(iterations or int(1.5 * max(h, w)) + 8):
        applied = apply(direction)
        curvature = (direction * applied).sum(dim=(1, 2, 3), keepdim=True)
        alpha = torch.where(curvature > 1e-20, rs / curvature.clamp_min(1e-20), torch.zeros_like(rs))
        solution = solution + alpha * direction
        residual = residual - alpha * applied
        rs_next = residual.pow(2).sum(dim=(1, 2, 3), keepdim=True)
        beta = torch.where(rs > 1e-20, rs_next / rs.clamp_min(1e-20), torch.zeros_like(rs))
        direction = residual + beta * direction
        rs = rs_next
    return (known + mask * solution).view(b, s, c, h, w) + fill[:, None]


def replaced_images(
    x: Tensor, removed: Tensor, replacement: str, fill: Tensor, generator: torch.Generator | None = None,
) -> Tensor:
    """Images with the ``removed`` pixels (boolean B x S x N) replaced: B x S x C x H x W."""
    check_replacement(replacement)
    b, c, h, w = x.shape
    removed = removed.view(b, -1, h, w)
    if replacement == "noisy_linear":
        imputed = linear_imputation(x, removed, fill)
        noise = torch.randn(imputed.shape, generator=generator, device=x.device, dtype=x.dtype)
        imputed = imputed + IMPUTATION_NOISE * noise * removed[:, :, None].to(x.dtype)
        return imputed.clamp_(0, 1)
    canvas = blurred(x) if replacement == "blur" else fill.expand_as(x)
    return torch.where(removed[:, :, None], canvas[:, None], x[:, None])


def class_probability(model: nn.Module, images: Tensor, classes: Tensor, forward_batch: int = 1024,
                      amp: bool = False) -> Tensor:
    """Softmax probability of ``classes`` (one per image) on ``images``, in forward batches of
    ``forward_batch``; ``amp`` runs the forwards in bf16 on CUDA."""
    use_amp = amp and images.device.type == "cuda"
    result = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        for start in range(0, images.shape[0], forward_batch):
            chunk = images[start:start + forward_batch]
            if use_amp:  # bf16 convolutions are fastest in channels-last layout
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            logits = model(chunk).logits.float()
            chosen = classes[start:start + forward_batch, None]
            result.append(torch.softmax(logits, dim=1).gather(1, chosen)[:, 0])
    return torch.cat(result)


def model_fill(model: nn.Module, channels: int = 3) -> Tensor:
    """The dataset mean colour of a ``PixelModel`` (mid-grey otherwise): 1 x C x 1 x 1."""
    mean = getattr(model, "mean", None)
    if isinstance(mean, Tensor) and mean.numel() == channels:
        return mean.detach().float().view(1, channels, 1, 1)
    return torch.full((1, channels, 1, 1), 0.5, device=next(model.parameters()).device)


def trapezoid_area(curves: Tensor) -> Tensor:
    """Area under curves sampled at equal steps over [0, 1] (last dimension)."""
    return (curves[..., 1:] + curves[..., :-1]).sum(dim=-1) / (2 * (curves.shape[-1] - 1))


@dataclass
class BatchScores:
    """Per-image results of one batch (tensors on the batch's device), method -> values."""

    clean_probability: Tensor  # B
    deletion: dict[str, Tensor] = field(default_factory=dict)  # B x (steps+1), MoRF removal
    lerf: dict[str, Tensor] = field(default_factory=dict)  # B x (steps+1), LeRF removal
    explanation_probability: dict[str, Tensor] = field(default_factory=dict)  # B

    def insertion(self, method: str) -> Tensor:
        """Probability against the revealed fraction (most relevant first): LeRF read backwards."""
        return self.lerf[method].flip(-1)

    def average_drop(self, method: str) -> Tensor:
        """Per image max(0, p - p') / p."""
        return F.relu(self.clean_probability - self.explanation_probability[method]) / self.clean_probability.clamp_min(1e-12)

    def increase(self, method: str) -> Tensor:
        """Per image 1 where the blended image is more confident than the clean one."""
        return (self.explanation_probability[method] > self.clean_probability).float()


def score_maps(
    model: nn.Module, x: Tensor, maps: Mapping[str, Tensor], classes: Tensor | None = None,
    metrics: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
    replacement: str = DEFAULT_REPLACEMENT, forward_batch: int = 1024, amp: bool = False,
    seed: int = 0, image_indices: Sequence[int] | None = None,
) -> BatchScores:
    """Deletion / insertion curves and confidence change of any maps on pixel-space images ``x``.

    Args:
        model: an ltpa model (``ModelOutput``) taking pixel-space input, in eval mode.
        x: images B x 3 x H x W in [0, 1].
        maps: method name -> B x h x w (or B x 1 x h x w) maps, any resolution up to the image's.
        classes: target class per image (default: the clean prediction).
        metrics: names from ``METRICS`` (``randomisation`` is ignored here: see
            ``randomisation_check``).
        steps: points of each curve beyond the clean image.
        replacement: what removed pixels become (``REPLACEMENTS``).
        forward_batch: perturbed images per forward pass.
        amp: bf16 forwards on CUDA.
        seed: fixes the tie order and the imputation noise.
        image_indices: dataset indices of the images (tie order independent of batching).

    Returns:
        The per-image curves and probabilities of every method.
    """
    _check_model(model)
    _check_images(x)
    metrics = check_metrics(metrics)
    check_replacement(replacement)
    if not maps:
        raise ValueError(f"no maps to score; {_choice_list('methods', list(METHODS))}")
    flat = {name: check_maps(m, x).flatten(1) for name, m in maps.items()}
    b, n = x.shape[0], x.shape[2] * x.shape[3]
    indices = list(range(b)) if image_indices is None else list(image_indices)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and x.is_cuda):
        clean_logits = model(x).logits.float()  # same precision as the perturbed forwards
    classes = clean_logits.argmax(dim=1) if classes is None else classes.to(x.device, torch.long)
    clean = torch.softmax(clean_logits, dim=1).gather(1, classes[:, None])[:, 0]
    fill = model_fill(model).to(x.device)
    counts = removed_counts(n, steps)
    interior = counts[1:-1]  # the clean image and the fully replaced one are shared by all maps
    generator = torch.Generator(device=x.device).manual_seed(seed * 7919 + (indices[0] if indices else 0))
    orders = [o for o, metric in ((True, "deletion"), (False, "insertion")) if metric in metrics]
    tie_noise = image_noise(indices, n, seed, 1, x.device) if orders else None
    batches: list[Tensor] = []
    layout: list[tuple[str, str]] = []
    everything_removed = torch.ones(b, 1, n, dtype=torch.bool, device=x.device)
    if orders:
        batches.append(replaced_images(x, everything_removed, replacement, fill, generator))
        layout.append(("all", ""))
    for name, values in flat.items():
        if orders:
            ranks = relevance_ranks(values, tie_noise)
            for most_relevant_first in orders:
                removed = removal_masks(ranks, interior, most_relevant_first)
                batches.append(replaced_images(x, removed, replacement, fill, generator))
                layout.append(("morf" if most_relevant_first else "lerf", name))
        if "confidence" in metrics:
            peak = values.amax(dim=1, keepdim=True)
            unit = torch.where(peak > 0, values.clamp_min(0) / peak.clamp_min(1e-30), torch.zeros_like(values))
            unit = unit.view(b, 1, 1, *x.shape[2:])
            batches.append((x[:, None] * unit + (1 - unit) * fill[:, None]))
            layout.append(("confidence", name))
    scores = BatchScores(clean_probability=clean)
    if not batches:  # only the randomisation check was asked for
        return scores
    sizes = [t.shape[1] for t in batches]
    stacked = torch.cat(batches, dim=1)  # B x total x C x H x W: one forward pass for all of it
    total = stacked.shape[1]
    probability = class_probability(model, stacked.flatten(0, 1), classes.repeat_interleave(total),
                                    forward_batch, amp).view(b, total)
    parts: dict[tuple[str, str], Tensor] = {}
    offset = 0
    for (kind, name), size in zip(layout, sizes):
        parts[(kind, name)] = probability[:, offset:offset + size]
        offset += size
    for (kind, name), values in parts.items():
        if kind in ("morf", "lerf"):
            curve = torch.cat([clean[:, None], values, parts[("all", "")]], dim=1)
            (scores.deletion if kind == "morf" else scores.lerf)[name] = curve
        elif kind == "confidence":
            scores.explanation_probability[name] = values[:, 0]
    return scores


# ----------------------------------------------------------------------------- randomisation
def average_ranks_batched(values: Tensor) -> Tensor:
    """1-based ranks along the last dimension of B x N, ties sharing their average rank (as
    ``ltpa.robustness.average_ranks``, for a whole batch at once)."""
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = starts.long().cumsum(dim=1) - 1
    positions = torch.arange(values.shape[1], device=values.device, dtype=torch.float64).expand_as(ordered)
    first = torch.full_like(positions, float(values.shape[1])).scatter_reduce(1, group, positions, "amin")
    last = torch.zeros_like(positions).scatter_reduce(1, group, positions, "amax")
    average = ((first + last) / 2 + 1).gather(1, group)
    return torch.empty_like(average).scatter_(1, order, average)


def spearman_batched(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each row pair of B x N tensors (nan where a row is flat)."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    ra, rb = average_ranks_batched(a.flatten(1)), average_ranks_batched(b.flatten(1))
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denominator = (ra.pow(2).sum(dim=1) * rb.pow(2).sum(dim=1)).sqrt()
    rho = (ra * rb).sum(dim=1) / denominator.clamp_min(1e-30)
    return torch.where(denominator > 0, rho, torch.full_like(rho, float("nan"))).float()


def parameterised_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters of their own, bottom (input) to top (output),
    in the order the model defines them."""
    inner = getattr(model, "model", model)
    return [name for name, module in inner.named_modules()
            if any(True for _ in module.parameters(recurse=False))]


def cascade_points(n_layers: int, cascade_steps: int = DEFAULT_CASCADE_STEPS) -> list[int]:
    """How many layers (from the top) are re-initialised after each step: the top layer alone,
    then equal shares down to all of them."""
    if cascade_steps < 1:
        raise ValueError(f"the cascade needs at least one step; got {cascade_steps}")
    if cascade_steps == 1:
        return [n_layers]
    points = [1] + [math.ceil(n_layers * k / (cascade_steps - 1)) for k in range(1, cascade_steps)]
    return sorted(set(min(max(p, 1), n_layers) for p in points))


class Randomisation(NamedTuple):
    """The cascading randomisation check of one batch."""

    steps: list[str]  # after each step: the deepest layer re-initialised so far
    layers_reset: list[int]  # how many parameterised layers (from the top) are re-initialised
    total_layers: int
    rho: dict[str, Tensor]  # method -> steps x B Spearman correlations (nan: a flat map)
    maps: dict[str, list[Tensor]]  # method -> per step B x H x W maps of the randomised model


def randomised_copies(model: nn.Module, cascade_steps: int = DEFAULT_CASCADE_STEPS, seed: int = 0):
    """Yield ``(deepest layer name, layers reset, private copy)`` after each cascade step: a deep
    copy of ``model`` whose top layers are re-initialised (``reset_parameters``: weights, BatchNorm
    statistics), cumulatively from the top down. ``model`` itself is never touched."""
    private = copy.deepcopy(model).eval()
    inner = getattr(private, "model", private)
    modules = dict(inner.named_modules())
    names = parameterised_layers(private)
    done = 0
    devices = [next(private.parameters()).device] if next(private.parameters()).is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for point in cascade_points(len(names), cascade_steps):
            for name in reversed(names[len(names) - point:len(names) - done]):
                module = modules[name]
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
                else:  # a parameter holder without its own initialiser
                    for parameter in module.parameters(recurse=False):
                        nn.init.normal_(parameter, 0.0, 0.02)
            done = point
            yield names[len(names) - point], point, private


def randomisation_check(
    model: nn.Module, x: Tensor, methods: Sequence[str], classes: Tensor | None = None,
    cascade_steps: int = DEFAULT_CASCADE_STEPS, seed: int = 0,
    image_indices: Sequence[int] | None = None, keep_maps: bool = False,
) -> Randomisation:
    """Spearman correlation of each method's map on the trained model with the same map on
    cascading re-initialised copies (the target class stays the trained model's prediction)."""
    trained = method_maps(model, x, methods, classes, image_indices, seed)
    rho: dict[str, list[Tensor]] = {m: [] for m in methods}
    kept: dict[str, list[Tensor]] = {m: [] for m in methods}
    labels, counts = [], []
    total = len(parameterised_layers(model))
    for deepest, point, copy_ in randomised_copies(model, cascade_steps, seed):
        randomised = method_maps(copy_, x, methods, trained.classes, image_indices, seed)
        labels.append(deepest)
        counts.append(point)
        for method in methods:
            rho[method].append(spearman_batched(trained.maps[method], randomised.maps[method]))
            if keep_maps:
                kept[method].append(randomised.maps[method])
    return Randomisation(labels, counts, total, {m: torch.stack(v) for m, v in rho.items()},
                         kept if keep_maps else {})
