"""Weight quantisation for storage: how ``save_checkpoint`` stores weights under each precision.

``fp16`` stores floating weights in half precision; ``int8`` stores conv/linear weights as int8
with one fp32 scale per output channel (symmetric, round-to-nearest) and the rest in fp16, a
quarter of fp32. ``int4`` stores them as 4-bit integers, two per byte, with one fp16 scale per
group of 32 consecutive weights of an output channel (4.5 bits a weight, about a seventh of
fp32): finer scales than int8's per-channel ones, because 15 levels shared by a whole channel
lose too much, each chosen to minimise the group's rounding error. Batch-norm statistics always
stay fp32.

Models meant for int4 are best trained for it (``ltpa train --qat int4``): quantisation-aware
training runs each step on the weights as storage rounds them (:func:`storage_rounded_weights`).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator

import torch
from torch import nn

PRECISIONS = ("fp32", "fp16", "int8", "int4")
INT4_GROUP = 32
# Clipping ratios tried for each int4 group's scale (see _int4_levels).
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
# Smallest normal fp16: int4 scales are stored in fp16 and must not underflow to zero.
_FP16_TINY = 2.0 ** -14
# Buffers kept in fp32 under fp16 storage: batch-norm statistics lose too much in half precision.
_KEEP_FP32_SUFFIXES = ("running_mean", "running_var")


def quantise_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantisation.

    Args:
        weight: a weight tensor, output channels first.

    Returns:
        (int8 weight of the same shape, fp32 scale per output channel).
    """
    flat = weight.float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    quantised = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return quantised.reshape(weight.shape), scale


def dequantise_int8(quantised: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantise_int8` (up to rounding).

    Args:
        quantised: the int8 weight.
        scale: its fp32 scales, one per output channel.

    Returns:
        The fp32 weight.
    """
    shape = (-1,) + (1,) * (quantised.ndim - 1)
    return quantised.float() * scale.float().reshape(shape)


@functools.cache
def _clip_ratios(device: torch.device) -> torch.Tensor:
    # Cached per device: a fresh host-to-GPU copy at every training step would stall the GPU.
    return torch.tensor(INT4_CLIP_RATIOS, device=device)[:, None, None]


def _int4_levels(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise int4 levels (-7..7, as floats, out x groups x group) and their fp16 scales.

    Each group's scale is the one, among its absolute maximum times each of ``INT4_CLIP_RATIOS``,
    whose rounded weights are closest to the originals (least squared error): clipping a few
    outliers shrinks the step for all the other weights of the group."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    flat = torch.nn.functional.pad(flat, (0, (-flat.shape[1]) % group))
    groups = flat.view(flat.shape[0], -1, group)
    # All candidate scales at once (ratio x out x groups): a few large kernels, not a loop of
    # small ones, since quantisation-aware training calls this for every weight at every step.
    ratios = _clip_ratios(flat.device)
    scales = (groups.abs().amax(dim=2) * ratios / 7.0).clamp_min(_FP16_TINY).half().float()
    levels = torch.round(groups / scales[..., None]).clamp_(-7, 7)
    error = (levels * scales[..., None] - groups).square().sum(dim=3)
    best = error.argmin(dim=0, keepdim=True)  # the first (largest) ratio wins ties
    levels = levels.gather(0, best[..., None].expand(1, *levels.shape[1:]))[0]
    return levels, scales.gather(0, best)[0].half()


def quantise_int4(
    weight: torch.Tensor, group: int = INT4_GROUP
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise int4 quantisation of a weight with at least 2 dims.

    Each output channel's weights, flattened and zero-padded to a multiple of ``group``, are split
    into groups of ``group`` that share one fp16 scale (chosen as in :func:`_int4_levels`); values
    -7..7 are stored offset by 8, two per byte (low nibble first).

    Args:
        weight: the weight, output channels first.
        group: weights per scale.

    Returns:
        (packed uint8 of shape out x padded/2, fp16 scales of shape out x groups).
    """
    levels, scale = _int4_levels(weight, group)
    levels = (levels + 8).to(torch.uint8).view(levels.shape[0], -1)
    return levels[:, 0::2] | (levels[:, 1::2] << 4), scale


def dequantise_int4(
    packed: torch.Tensor, scale: torch.Tensor, shape: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """Inverse of :func:`quantise_int4` (up to rounding).

    Args:
        packed: the packed uint8 weights.
        scale: their fp16 scales (out x groups).
        shape: the original weight's shape.

    Returns:
        An fp32 tensor of ``shape``.
    """
    low = (packed & 0x0F).to(torch.int16) - 8
    high = (packed >> 4).to(torch.int16) - 8
    levels = torch.stack((low, high), dim=2).view(packed.shape[0], scale.shape[1], -1)
    return _int4_values(levels.float(), scale, shape)


def _int4_values(levels: torch.Tensor, scale: torch.Tensor,
                 shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Levels (out x groups x group) times their group's scale, unpadded to ``shape`` (fp32)."""
    flat = (levels * scale.float()[..., None]).view(levels.shape[0], -1)
    return flat[:, :math.prod(shape[1:])].reshape(tuple(shape))


def storage_kind(key: str, tensor: torch.Tensor, precision: str) -> str:
    """How ``ltpa.checkpoint.save_checkpoint`` stores one state-dict entry under ``precision``.

    Args:
        key: the entry's name.
        tensor: its value.
        precision: one of ``PRECISIONS``.

    Returns:
        ``"int8"``/``"int4"`` (conv/linear weights), ``"fp16"`` or ``"fp32"`` (integers,
        batch-norm statistics, and everything under fp32).
    """
    if precision == "fp32" or not tensor.is_floating_point() or key.endswith(_KEEP_FP32_SUFFIXES):
        return "fp32"
    if precision in ("int8", "int4") and tensor.ndim >= 2:
        return precision
    return "fp16"


@torch.no_grad()
def stored_value(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """``tensor`` as it reads back after being stored as ``kind``.

    Args:
        tensor: the full-precision value.
        kind: a result of :func:`storage_kind`.

    Returns:
        The rounded value, same dtype and device.
    """
    if kind == "int8":
        quantised, scale = quantise_int8(tensor)
        restored = dequantise_int8(quantised, scale)
    elif kind == "int4":
        restored = _int4_values(*_int4_levels(tensor, INT4_GROUP), tensor.shape)
    elif kind == "fp16":
        restored = tensor.half()
    else:
        return tensor
    return restored.to(tensor.dtype)


@torch.no_grad()
def round_weights_to_storage(model: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """Overwrite, in place, every parameter that ``precision`` stores in less than fp32 with the
    value it reads back as.

    Quantisation-aware training rounds before each forward pass and restores before the optimiser
    step, so the gradient is taken at the stored weights (straight-through estimate) while the
    full-precision weights keep accumulating small updates.

    Args:
        model: the model to round.
        precision: one of ``PRECISIONS``.

    Returns:
        The originals (name -> copy) for :func:`restore_weights`.
    """
    originals = {}
    for name, param in model.named_parameters():
        kind = storage_kind(name, param, precision)
        if kind != "fp32":
            originals[name] = param.detach().clone()
            param.copy_(stored_value(param, kind))
    return originals


@torch.no_grad()
def restore_weights(model: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Undo :func:`round_weights_to_storage`.

    Args:
        model: the rounded model.
        originals: what :func:`round_weights_to_storage` returned.
    """
    for name, param in model.named_parameters():
        if name in originals:
            param.copy_(originals[name])


@contextlib.contextmanager
def storage_rounded_weights(model: nn.Module, precision: str | None) -> Iterator[None]:
    """Within the block, ``model`` runs on its weights as ``precision`` storage rounds them; the
    originals come back on exit.

    Args:
        model: the model.
        precision: one of ``PRECISIONS``; empty or None changes nothing.

    Returns:
        A context manager.
    """
    originals = round_weights_to_storage(model, precision) if precision else None
    try:
        yield
    finally:
        if originals is not None:
            restore_weights(model, originals)

