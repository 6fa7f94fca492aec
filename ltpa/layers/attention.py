"""The trainable attention estimator of "Learn to Pay Attention" (Jetley et al., ICLR 2018).

For one tapped layer with local features ``l`` (B x C x H x W) and the global feature ``g`` (B x D):

* compatibility ``pc``: ``c_i = <u, l_i + g>`` with a learned ``u`` (a 1x1 conv to one channel);
* compatibility ``dp``: ``c_i = <l_i, g> / sqrt(C)`` (no parameters). The paper has no
  ``1/sqrt(C)``; we add it by default (``dp_scale="sqrt"``, as in scaled dot-product attention)
  because at initialisation the unscaled scores already spread by ~40-120 over a map, so the
  softmax starts one-hot: VGG-att3-dp lost ~1.4 points to pc and RN-att2-dp never trained.
  ``dp_scale="none"`` gives the paper's unscaled form;
* normalisation ``softmax`` over all H*W positions (the paper's), ``sigmoid`` (a deviation used
  by a popular port; each weight in [0, 1] independently, descriptor averaged over positions) or
  ``sigmoid_sum`` (a deviation: sigmoid weights divided by their sum, so the map sums to 1 like a
  softmax map and the descriptor is a weighted sum, but positions do not compete exponentially).
  A model takes one for every tapped layer or a comma-separated list, one per tapped layer in
  order (``"softmax,softmax,sigmoid_sum"``, see :func:`stage_normalisations`);
* temperature ``T`` (an attention-quality lever, not in the paper): the scores are divided by ``T``
  before the normalisation; a fixed positive number (1 is the paper's) or ``"learned"`` (one
  learned ``log T`` per tapped layer, starting at T = 1);
* attended descriptor ``g_a = sum_i a_i l_i``.

Both compatibilities need ``dim(l) == dim(g)``. ``match="project_l"`` (default, the paper's text)
maps ``l`` to ``dim(g)`` with a 1x1 conv and pools the *projected* ``l``; ``match="project_g"``
(the authors' Torch code) maps ``g`` to ``dim(l)`` with a linear layer and pools the raw ``l``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.choices import check_choice

COMPATIBILITIES = ("pc", "dp")
NORMALISATIONS = ("softmax", "sigmoid", "sigmoid_sum")
LEARNED_TEMPERATURE = "learned"
# A fixed temperature outside this range makes the maps one-hot or uniform at initialisation.
TEMPERATURE_RANGE = (0.01, 100.0)
DIMENSION_MATCHING = ("project_l", "project_g")
DP_SCALES = ("sqrt", "none")
DEFAULT_DP_SCALE = "sqrt"


class AttentionResult(NamedTuple):
    """What one attention estimator produces for a batch."""

    attention: Tensor  # B x 1 x H x W, fp32; sums to 1 per image under softmax
    scores: Tensor  # B x 1 x H x W raw compatibility scores, fp32
    descriptor: Tensor  # B x C attended descriptor g_a, fp32


def check_temperature(value: float | str) -> None:
    """Raise a ValueError naming the valid range unless ``value`` is ``"learned"`` or a number in
    ``TEMPERATURE_RANGE``.

    Args:
        value: the attention temperature asked for.
    """
    if value == LEARNED_TEMPERATURE:
        return
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"attention temperature must be {LEARNED_TEMPERATURE!r} or a number from "
                         f"{low} to {high}; got {value!r}")


def normalisation_names(normalisation: str) -> tuple[str, ...]:
    """The names in a normalisation setting: one name, or a comma-separated list of them."""
    return tuple(part.strip() for part in str(normalisation).split(","))


def stage_normalisations(normalisation: str, stages: int) -> tuple[str, ...]:
    """The normalisation of each tapped layer, from one name or a comma-separated list.

    Args:
        normalisation: one of ``NORMALISATIONS`` for every tapped layer, or one per tapped layer in
            order, separated by commas (e.g. ``"softmax,softmax,sigmoid_sum"``).
        stages: the number of tapped layers.

    Returns:
        ``stages`` names.

    Raises:
        ValueError: an unknown name, or a list whose length is not ``stages``.
    """
    names = normalisation_names(normalisation)
    if len(names) == 1:
        names *= stages
    elif len(names) != stages:
        raise ValueError(f"normalisation lists one name per tapped layer: this model taps {stages} "
                         f"layers, got {len(names)} names in {normalisation!r}")
    for name in names:
        check_choice("normalisation", name, NORMALISATIONS)
    return names


class AttentionBlock(nn.Module):
    """Attention over one tapped layer, given that layer's local features and the global feature."""

    def __init__(
        self,
        local_dim: int,
        global_dim: int,
        compatibility: str = "pc",
        normalisation: str = "softmax",
        match: str = "project_l",
        dp_scale: str = DEFAULT_DP_SCALE,
        temperature: float | str = 1.0,
    ) -> None:
        super().__init__()
        check_temperature(temperature)
        check_choice("compatibility", compatibility, COMPATIBILITIES)
        check_choice("normalisation", normalisation, NORMALISATIONS)
        check_choice("dimension matching", match, DIMENSION_MATCHING)
        check_choice("dp scale", dp_scale, DP_SCALES)
        self.compatibility = compatibility
        self.normalisation = normalisation
        self.match = match
        self.project_local: nn.Module = nn.Identity()
        self.project_global: nn.Module = nn.Identity()
        if local_dim != global_dim and match == "project_l":
            self.project_local = nn.Conv2d(local_dim, global_dim, kernel_size=1, bias=False)
        elif local_dim != global_dim:
            self.project_global = nn.Linear(global_dim, local_dim, bias=False)
        self.descriptor_dim = global_dim if match == "project_l" else local_dim
        self.dp_scale = dp_scale
        self.dp_factor = self.descriptor_dim ** -0.5 if dp_scale == "sqrt" else 1.0
        # u_s of the paper: one learned vector per tapped layer, only for pc.
        self.u = (
            nn.Conv2d(self.descriptor_dim, 1, kernel_size=1, bias=False)
            if compatibility == "pc"
            else None
        )
        self.temperature = temperature
        # log T, so the learned temperature stays positive; a fixed one is a plain float.
        self.log_temperature = (nn.Parameter(torch.zeros(())) if temperature == LEARNED_TEMPERATURE
                                else None)

    def current_temperature(self) -> float:
        """The temperature the scores are divided by (the learned one's present value)."""
        if self.log_temperature is not None:
            return float(self.log_temperature.detach().exp())
        return float(self.temperature)

    def forward(self, local: Tensor, global_feature: Tensor) -> AttentionResult:
        local = self.project_local(local)
        global_feature = self.project_global(global_feature)
        # Scores, normalisation and the weighted sum run in fp32 even under bf16 autocast:
        # in bf16 a 1024-way softmax and its sum lose enough precision that training collapsed
        # to chance in a probe (docs/reproduction.md).
        with torch.autocast(device_type=local.device.type, enabled=False):
            local32 = local.float()
            global32 = global_feature.float()[:, :, None, None]
            if self.u is not None:
                weight = self.u.weight.float()
                scores = F.conv2d(local32 + global32, weight)
            else:
                scores = (local32 * global32).sum(dim=1, keepdim=True) * self.dp_factor
            batch, _, height, width = scores.shape
            if self.log_temperature is not None:
                tempered = scores / self.log_temperature.float().exp()
            elif self.temperature != 1.0:
                tempered = scores / float(self.temperature)
            else:
                tempered = scores
            if self.normalisation == "softmax":
                attention = torch.softmax(tempered.flatten(1), dim=1).view(batch, 1, height, width)
                descriptor = (attention * local32).sum(dim=(2, 3))
            elif self.normalisation == "sigmoid_sum":
                gates = torch.sigmoid(tempered)
                attention = gates / gates.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
                descriptor = (attention * local32).sum(dim=(2, 3))
            else:
                attention = torch.sigmoid(tempered)
                descriptor = (attention * local32).mean(dim=(2, 3))
        return AttentionResult(attention, scores, descriptor)
