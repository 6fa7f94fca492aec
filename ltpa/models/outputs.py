"""The value every ltpa model's ``forward`` returns."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class ModelOutput(NamedTuple):
    """Logits plus everything needed to show attention, without hooks.

    ``maps[k]`` is the attention of stage ``stages[k]`` (B x 1 x H x W, fp32; sums to 1 per image
    under softmax), ``scores[k]`` its raw compatibility scores. Models without attention return
    empty tuples. ``features`` is the last spatial feature map (B x C x h x w) kept in the graph so
    CAM and Grad-CAM can be computed from it with ``torch.autograd.grad``. ``stage_logits[k]`` are
    the class scores from stage ``stages[k]``'s attended descriptor alone, for models built with
    per-stage classifiers (the ``indep`` head, or ``stage_classifiers=True``); empty otherwise.
    """

    logits: Tensor
    maps: tuple[Tensor, ...]
    scores: tuple[Tensor, ...]
    stages: tuple[str, ...]
    features: Tensor
    stage_logits: tuple[Tensor, ...] = ()


MIN_INPUT_SIZE = 32


def check_input(x: Tensor, in_channels: int = 3) -> None:
    """Raise a ValueError describing what is wrong with an input batch, if anything."""
    if x.dim() != 4:
        raise ValueError(
            f"expected a batch of images shaped (B, {in_channels}, H, W); got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} colour channels (RGB) in dimension 1; got {x.shape[1]} "
            f"(shape {tuple(x.shape)})"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point batch (normalised images); got dtype {x.dtype}: "
            "convert uint8 images with ltpa.preprocess.image_to_input, then normalise"
        )
    if x.shape[2] < MIN_INPUT_SIZE or x.shape[3] < MIN_INPUT_SIZE:
        raise ValueError(
            f"images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; got "
            f"{x.shape[2]}x{x.shape[3]}"
        )
