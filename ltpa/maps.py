"""Attention-map post-processing shared by the app, masks and attacks: one place for each step.

Softmax maps are tiny numbers (uniform is 1/1024 at 32x32), so display and thresholding use a
per-map normalisation; maps are upsampled bilinearly (align_corners=False) to the display size.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

NORMALISE_MODES = ("max", "minmax")


def to_numpy_map(attention: Tensor | np.ndarray) -> np.ndarray:
    """One map as a float32 H x W array (accepts 1x1xHxW, 1xHxW or HxW)."""
    if isinstance(attention, Tensor):
        attention = attention.detach().float().cpu().numpy()
    array = np.asarray(attention, dtype=np.float32)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"expected a single 2-D map; got shape {np.shape(attention)}")
    return array


def upsample(attention: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling (align_corners=False) of one map to ``size`` = (height, width).

    The result is rescaled so it keeps the map's total mass: a softmax map still sums to 1.
    """
    array = to_numpy_map(attention)
    tensor = torch.tensor(array)[None, None]  # a copy: cached maps are read-only arrays
    up = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    total, up_total = float(array.sum()), float(up.sum())
    if up_total > 0 and total > 0:
        up = up * (total / up_total)
    return up.astype(np.float32)


def normalise_map(attention: np.ndarray, mode: str = "max") -> np.ndarray:
    """Scale a map to [0, 1]: ``max`` divides by the peak, ``minmax`` stretches min..max."""
    if mode not in NORMALISE_MODES:
        raise ValueError(f"unknown normalisation {mode!r}; valid choices: {', '.join(NORMALISE_MODES)}")
    array = np.asarray(attention, dtype=np.float32)
    low = float(array.min()) if mode == "minmax" else 0.0
    span = float(array.max()) - low
    if span <= 0:
        return np.zeros_like(array)
    return np.clip((array - low) / span, 0.0, 1.0)


COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "turbo": cv2.COLORMAP_TURBO,
    "hot": cv2.COLORMAP_HOT,
}


def colorize(unit_map: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] map as an RGB uint8 image through an OpenCV colormap."""
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; valid choices: {', '.join(COLORMAPS)}")
    levels = np.round(np.clip(unit_map, 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, attention: np.ndarray, opacity: float = 0.5,
            colormap: str = "jet", mode: str = "max") -> np.ndarray:
    """Blend a map (any size) over an RGB uint8 image at the image's own resolution."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity}")
    height, width = image.shape[:2]
    unit = normalise_map(upsample(attention, (height, width)), mode)
    heat = colorize(unit, colormap)
    return cv2.addWeighted(heat, opacity, image, 1.0 - opacity, 0.0)


class MapStats(NamedTuple):
    """Summary figures for one attention map (at its native resolution)."""

    entropy: float  # nats, of the map as a distribution
    normalised_entropy: float  # entropy / log(H*W): 1 means uniform
    peak: float  # largest weight
    peak_over_uniform: float  # peak * H * W: 1 means uniform
    top10_mass: float  # share of the total mass in the top 10% of positions


def map_stats(attention: Tensor | np.ndarray) -> MapStats:
    """Entropy, peak and top-10% mass of a map (normalised to a distribution first)."""
    array = to_numpy_map(attention).astype(np.float64)
    array = np.clip(array, 0, None)
    total = array.sum()
    n = array.size
    p = array.ravel() / total if total > 0 else np.full(n, 1.0 / n)
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    k = max(1, int(np.ceil(0.1 * n)))
    top = np.sort(p)[::-1][:k].sum()
    return MapStats(entropy, float(entropy / np.log(n)) if n > 1 else 0.0, float(p.max()),
                    float(p.max() * n), float(top))


def batch_entropy(attention: Tensor) -> Tensor:
    """Mean normalised entropy of a batch of maps (B x 1 x H x W) as a 0-d tensor (for training logs)."""
    p = attention.flatten(1).float()
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
    return (entropy / np.log(p.shape[1])).mean()


def panel_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]], panel_side: int = 224,
               title: str | None = None, pixelated: bool = False) -> np.ndarray:
    """Captioned images in a grid, as one RGB uint8 picture (a figure for a slide).

    Args:
        rows: one sequence of ``(caption, RGB uint8 image)`` per row; rows may differ in length.
        panel_side: each image is scaled to fit a ``panel_side`` square, keeping its aspect ratio.
        title: a line of text above the grid.
        pixelated: enlarge with nearest-neighbour interpolation (keeps a 32x32 input's pixels
            visible) instead of bilinear.

    Returns:
        The figure, at most ``panel_side`` + a caption line high per row.
    """
    if not rows or not any(rows):
        raise ValueError("panel_grid needs at least one image")
    if not 16 <= panel_side <= 2048:
        raise ValueError(f"panel_side must be from 16 to 2048 pixels; got {panel_side}")
    font, scale, thickness, gap = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1, 8
    text_height = cv2.getTextSize("Ag", font, scale, thickness)[0][1] + 10
    columns = max(len(row) for row in rows)
    cell_width, cell_height = panel_side + gap, panel_side + text_height + gap
    top = text_height + gap if title else 0
    canvas = np.full((top + cell_height * len(rows) + gap, cell_width * columns + gap, 3), 255, np.uint8)
    if title:
        cv2.putText(canvas, title, (gap, text_height), font, scale * 1.2, (0, 0, 0), thickness, cv2.LINE_AA)
    for r, row in enumerate(rows):
        for c, (caption, image) in enumerate(row):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"panel {caption!r}: expected an RGB uint8 image; got {image.shape} {image.dtype}")
            height, width = image.shape[:2]
            ratio = panel_side / max(height, width)
            size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            shrinking = ratio < 1
            interpolation = cv2.INTER_AREA if shrinking else (cv2.INTER_NEAREST if pixelated else cv2.INTER_LINEAR)
            panel = cv2.resize(image, size, interpolation=interpolation)
            y, x = top + gap + r * cell_height, gap + c * cell_width
            canvas[y:y + size[1], x:x + size[0]] = panel
            text = caption
            while len(text) > 3 and cv2.getTextSize(text, font, scale, thickness)[0][0] > panel_side:
                text = text[:-4] + "..."
            cv2.putText(canvas, text, (x, y + panel_side + text_height - 4), font, scale, (0, 0, 0),
                        thickness, cv2.LINE_AA)
    return canvas
