"""Pictures made from an image and its maps with OpenCV: a label drawn on a map, a colour bar, and
one figure with every stage side by side (for slides).

A map whose attention is spread almost evenly says nothing about where the model looks, yet
scaled for display (divided by its peak) it fills the frame with colour. Such maps are labelled
on the picture itself: a map is *near-uniform* when its normalised entropy (entropy / log N,
1 for a perfectly even map, ``ltpa.maps.map_stats``) is at least ``NEAR_UNIFORM_ENTROPY``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ltpa.maps import MapStats, colorize, map_stats, overlay

# entropy / log(N) at or above which a map is labelled near-uniform. Measured on the 25 gallery
# images (assets/examples): the shipped VGG-att3-pc's layer-7 and layer-10 maps sit at 0.994-1.000
# (median peak only 1.4-1.6x the uniform weight: a wash of colour once scaled to the peak), its
# layer-13 maps at 0.34-0.63; ResNet-att2-pc's stage 2 at 0.89-0.98, stage 3 at 0.56-0.86.
NEAR_UNIFORM_ENTROPY = 0.98
# Pictures smaller than this (shortest side) are enlarged without smoothing before text is drawn
# on them, so the text stays readable (a CIFAR-10 image is 32x32).
MIN_LABELLED_SIDE = 256
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def is_near_uniform(stats: MapStats) -> bool:
    """Whether a map is spread almost evenly (see ``NEAR_UNIFORM_ENTROPY``).

    Args:
        stats: the map's summary figures (``ltpa.maps.map_stats``).

    Returns:
        True when its normalised entropy is at least ``NEAR_UNIFORM_ENTROPY``.
    """
    return stats.normalised_entropy >= NEAR_UNIFORM_ENTROPY


def near_uniform_label(stats: MapStats) -> str | None:
    """The label drawn on a near-uniform map, None for a map that is not.

    Args:
        stats: the map's summary figures.

    Returns:
        e.g. ``"near-uniform: entropy/log N = 0.995"``, or None.
    """
    if not is_near_uniform(stats):
        return None
    return f"near-uniform: entropy/log N = {stats.normalised_entropy:.3f}"


def enlarge_for_text(image: np.ndarray, min_side: int = MIN_LABELLED_SIDE) -> np.ndarray:
    """The image, or a copy enlarged by a whole factor (nearest neighbour) so its shortest side
    is at least ``min_side``.

    Args:
        image: an RGB uint8 image.
        min_side: the shortest side wanted.

    Returns:
        The image itself when large enough, else the enlarged copy.
    """
    height, width = image.shape[:2]
    factor = int(np.ceil(min_side / max(1, min(height, width))))
    if factor <= 1:
        return image
    return cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_NEAREST)


def _text_scale(width: int) -> tuple[float, int]:
    scale = float(np.clip(width / 700, 0.4, 1.6))
    return scale, max(1, round(scale * 2))


def with_banner(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of the image with ``text`` in white on a dark band across its top.

    Args:
        image: an RGB uint8 image (small images are enlarged first, see ``enlarge_for_text``).
        text: one line of text (ASCII; it is shrunk to fit the width).

    Returns:
        The labelled copy.
    """
    picture = enlarge_for_text(image).copy()
    width = picture.shape[1]
    scale, thickness = _text_scale(width)
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    if text_width > width - 8:
        scale *= (width - 8) / text_width
        (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    band = text_height + baseline + 8
    picture[:band] = (picture[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(picture, text, (4, band - baseline - 4), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return picture


def _caption_strip(text: str, width: int, height: int) -> np.ndarray:
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    scale, thickness = _text_scale(max(width, 400))
    scale = min(scale, 0.6)
    (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    if text_width > width - 6:
        scale *= (width - 6) / text_width
        (text_width, text_height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    origin = (max(3, (width - text_width) // 2), (height + text_height) // 2)
    cv2.putText(strip, text, origin, _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return strip


def colour_bar(colormap: str, width: int, height: int = 18, low: str = "0",
               high: str = "peak") -> np.ndarray:
    """A horizontal colour bar with its two end labels underneath, as an RGB uint8 image.

    Args:
        colormap: an ``ltpa.maps.COLORMAPS`` name.
        width: the bar's width in pixels.
        height: the height of the coloured band.
        low: the label of the left end (e.g. ``"0"`` or ``"min"``).
        high: the label of the right end (e.g. ``"peak"`` or ``"max"``).

    Returns:
        The bar, with a white band of labels below it.
    """
    width = max(16, int(width))
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    bar = colorize(ramp, colormap)
    labels = np.full((height + 6, width, 3), 255, dtype=np.uint8)
    scale, thickness = 0.45, 1
    (_, text_height), _ = cv2.getTextSize(low, _FONT, scale, thickness)
    cv2.putText(labels, low, (2, text_height + 3), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    (high_width, _), _ = cv2.getTextSize(high, _FONT, scale, thickness)
    cv2.putText(labels, high, (width - high_width - 2, text_height + 3), _FONT, scale, (0, 0, 0), thickness,
                cv2.LINE_AA)
    return np.concatenate([bar, labels], axis=0)


SCALE_ENDS = {"max": ("0", "peak"), "minmax": ("min", "max")}


def stages_figure(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    colormap: str = "jet",
    opacity: float = 0.5,
    mode: str = "max",
    tile: int = 320,
    title: str | None = None,
) -> np.ndarray:
    """One picture with the image and every map over it side by side, each captioned, near-uniform
    maps labelled, and a colour bar underneath (for a slide).

    Args:
        image: the RGB uint8 image (any size; it is resized to the tile height).
        panels: (caption, map) pairs; each map is any 2-D array of weights (e.g. a stage's native
            attention map), upsampled over the image by ``ltpa.maps.overlay``.
        colormap: an ``ltpa.maps.COLORMAPS`` name.
        opacity: the map's weight in the blend, 0 to 1.
        mode: how maps are scaled to colours (``ltpa.maps.NORMALISE_MODES``).
        tile: the height of each picture in pixels.
        title: an optional line above everything.

    Returns:
        The figure as an RGB uint8 array.

    Raises:
        ValueError: for an empty ``panels``, a bad colormap, scaling mode or opacity.
    """
    if not panels:
        raise ValueError("a stages figure needs at least one map")
    height, width = image.shape[:2]
    tile_width = int(np.clip(round(tile * width / max(1, height)), tile // 2, 2 * tile))
    interpolation = cv2.INTER_AREA if height > tile else cv2.INTER_NEAREST
    base = cv2.resize(np.ascontiguousarray(image), (tile_width, tile), interpolation=interpolation)
    caption_height = max(28, tile // 10)
    columns = [np.concatenate([_caption_strip("image", tile_width, caption_height), base])]
    for caption, attention in panels:
        picture = overlay(base, attention, opacity, colormap, mode)
        label = near_uniform_label(map_stats(attention))
        if label is not None:
            picture = with_banner(picture, label)
            picture = cv2.resize(picture, (tile_width, tile), interpolation=cv2.INTER_AREA)
        columns.append(np.concatenate([_caption_strip(caption, tile_width, caption_height), picture]))
    gap = np.full((tile + caption_height, 8, 3), 255, dtype=np.uint8)
    row = columns[0]
    for column in columns[1:]:
        row = np.concatenate([row, gap, column], axis=1)
    low, high = SCALE_ENDS.get(mode, ("0", "1"))
    bar_width = min(row.shape[1], 3 * tile_width)
    bar = colour_bar(colormap, bar_width, low=low, high=high)
    padded = np.full((bar.shape[0] + 8, row.shape[1], 3), 255, dtype=np.uint8)
    left = (row.shape[1] - bar_width) // 2
    padded[8:, left:left + bar_width] = bar
    parts = [row, padded]
    if title:
        parts.insert(0, _caption_strip(title, row.shape[1], caption_height + 8))
    return np.concatenate(parts, axis=0)
