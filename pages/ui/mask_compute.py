"""Cached computations of the Masks page (``pages/3_Masks.py``), in byte-bounded caches
(``pages.ui.compute.bounded_cache``) built once per process.

Keys are the image's sha256, the checkpoint (zoo folder, id, file sha256) and the settings; the
arrays themselves are passed as underscore arguments (not part of the key).
"""
from __future__ import annotations

import cv2
import numpy as np

from ltpa import masks, viz
from ltpa.maps import overlay
from ltpa.preprocess import image_to_input
from ltpa.saliency import centre_prior
from ltpa.segmentation import COMBINED, native_maps
from ltpa.zoo import LoadedModel, zoo_dir
from pages.ui.compute import MiB, bounded_cache, cache_key, digest
from pages.ui.widgets import load_model

RULE_LABELS = {
    "fraction": "fraction of the maximum",
    "top": "top q % of pixels",
    "mass": "p % of the attention mass",
    "otsu": "Otsu (automatic)",
}


def checkpoint_key(loaded: LoadedModel) -> str:
    """Identifies a loaded checkpoint: zoo folder, id and the file's sha256 (as
    ``pages.ui.compute.model_key``, joined into one string)."""
    return ":".join(cache_key(str(zoo_dir()), loaded.entry.id, str(loaded.entry.card.get("sha256", ""))))


@bounded_cache(max_bytes=16 * MiB)
def _truth_mask(data_sha256: str, _data: bytes) -> np.ndarray:
    return masks.load_mask(_data)


def truth_mask(data: bytes) -> np.ndarray:
    """``ltpa.masks.load_mask`` of an uploaded mask file, cached on the file's sha256."""
    return _truth_mask(digest(data), data)


@bounded_cache(max_bytes=32 * MiB)
def work_image_at(image_sha: str, size: tuple[int, int], _image: np.ndarray) -> np.ndarray:
    if _image.shape[:2] == size:
        return _image
    shrinking = size[0] < _image.shape[0]
    return cv2.resize(_image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


@bounded_cache(max_bytes=16 * MiB)
def attention_unit_map(checkpoint: str, image_sha: str, stage: str, combine: str, size: tuple[int, int],
                    _natives: dict[str, np.ndarray]) -> np.ndarray:
    if stage == COMBINED:
        return masks.combine_maps([masks.unit_map(m, size) for m in _natives.values()], combine)
    return masks.unit_map(_natives[stage], size)


@bounded_cache(max_bytes=8 * MiB)
def posthoc_unit_map(checkpoint: str, image_sha: str, method: str, size: tuple[int, int],
                  _model_id: str, _image: np.ndarray) -> np.ndarray:
    loaded = load_model(_model_id)
    native = native_maps(loaded, method, image_to_input(_image, loaded.input_size))[method][0]
    return masks.unit_map(native, size)


@bounded_cache(max_bytes=4 * MiB)
def prior_unit_map(size: tuple[int, int], sigma: float) -> np.ndarray:
    return masks.unit_map(centre_prior(size[0], size[1], sigma))


@bounded_cache(max_bytes=24 * MiB)
def map_overlay(map_key: str, _image: np.ndarray, _unit: np.ndarray) -> np.ndarray:
    return overlay(_image, _unit)


@bounded_cache(max_bytes=4 * MiB)
def curve_figure(curves_key: str, rule: str, _curves: dict[str, masks.Sweep]):
    """The curves do not depend on the threshold: built once (Plotly figures are slow to build),
    shared read-only."""
    return viz.jaccard_threshold_figure({label: (c.thresholds, c.jaccard) for label, c in _curves.items()},
                                        rule, title=f"Jaccard versus threshold: {RULE_LABELS[rule]}")


@bounded_cache(max_bytes=16 * MiB)
def rule_table(map_key: str, rule: str, truth_key: str, opening: int, largest: bool,
                _unit: np.ndarray, _truth: np.ndarray | None) -> tuple[dict[float, float] | None,
                                                                      np.ndarray | None, masks.Sweep | None]:
    """What a threshold change needs, computed once: the cut table (or Otsu's mask) and the
    Jaccard-versus-threshold curve against the ground truth."""
    ranked = masks.RankedMap(_unit)
    grid = masks.FINE_GRIDS[rule]
    cuts = masks.cut_table(ranked, rule, grid) if rule != "otsu" else None
    otsu = masks.binarise(ranked, "otsu") if rule == "otsu" else None
    curve = None
    if _truth is not None:
        curve = masks.threshold_curve(ranked, _truth, rule, grid, opening, largest)
    return cuts, otsu, curve
