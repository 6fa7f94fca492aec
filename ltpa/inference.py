"""One forward pass of a zoo model on one image, packaged for display: every page calls this.

``analyse`` gives the top classes, and for every attention stage its map at the model's native
resolution, the same map upsampled to the image's own size (mass-preserving, so it still sums to
1) and its summary figures. ``posthoc`` does the same for CAM / Grad-CAM, for contrast. Neither
mutates the model (no hooks, no ``.backward``, no ``.train()``), so one cached model can serve
every app session.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ltpa.maps import MapStats, map_stats, to_numpy_map, upsample
from ltpa.preprocess import image_to_input
from ltpa.saliency import cam, grad_cam
from ltpa.zoo import LoadedModel

POSTHOC_METHODS = {"grad_cam": "Grad-CAM", "cam": "CAM"}


@dataclass(frozen=True)
class StageMap:
    """One attention (or saliency) map of one image."""

    stage: str  # e.g. "layer7", or "Grad-CAM"
    native: np.ndarray  # h x w float32 at the model's resolution
    image_size: tuple[int, int]  # (height, width) of the image it belongs to
    stats: MapStats  # of the native map

    @property
    def native_size(self) -> tuple[int, int]:
        return int(self.native.shape[0]), int(self.native.shape[1])

    @cached_property
    def upsampled(self) -> np.ndarray:
        """H x W float32 at the image's resolution with the same total mass (``ltpa.maps.upsample``).

        Computed on first use, not stored: for a 40-megapixel photo each map is 160 MB, and the
        app caches (pickles) analyses that mostly only need the native maps."""
        return upsample(self.native, self.image_size)


@dataclass(frozen=True)
class Analysis:
    """What one model makes of one image."""

    model_id: str
    checkpoint_sha256: str
    class_names: tuple[str, ...]
    probabilities: np.ndarray  # (num_classes,) float32, sums to 1
    maps: tuple[StageMap, ...]  # one per attention stage; empty for baselines
    image_size: tuple[int, int]  # (height, width) of the image the maps were upsampled to
    input_size: int  # side of the square model input
    device: str

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(m.stage for m in self.maps)

    @property
    def predicted_index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.predicted_index]

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes with their probabilities, most probable first."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.class_names[i], float(self.probabilities[i])) for i in order]


def _model_device(loaded: LoadedModel) -> torch.device:
    return next(loaded.model.parameters()).device


def _stage_map(stage: str, attention: torch.Tensor, size: tuple[int, int]) -> StageMap:
    native = to_numpy_map(attention)
    return StageMap(stage, native, size, map_stats(native))


def analyse(loaded: LoadedModel, image: np.ndarray) -> Analysis:
    """Classify an RGB uint8 image (any size) and collect the attention of every stage.

    The image is resized to the model's input size; the maps are upsampled back to the image's
    own size with ``ltpa.maps.upsample``.
    """
    device = _model_device(loaded)
    x = image_to_input(image, loaded.input_size).to(device)
    with torch.no_grad():
        out = loaded.model(x)
    probabilities = torch.softmax(out.logits.float(), dim=1)[0].cpu().numpy()
    size = (int(image.shape[0]), int(image.shape[1]))
    maps = tuple(_stage_map(stage, attention[0], size) for stage, attention in zip(out.stages, out.maps))
    return Analysis(
        model_id=loaded.entry.id,
        checkpoint_sha256=str(loaded.entry.card.get("sha256", "")),
        class_names=tuple(loaded.class_names),
        probabilities=probabilities.astype(np.float32),
        maps=maps,
        image_size=size,
        input_size=loaded.input_size,
        device=str(device),
    )


def posthoc(
    loaded: LoadedModel, image: np.ndarray, method: str = "grad_cam", class_index: int | None = None
) -> StageMap:
    """A post-hoc saliency map (``grad_cam`` on any model, ``cam`` on a GAP model) for the
    predicted class (or ``class_index``), normalised to sum to 1 like an attention map."""
    if method not in POSTHOC_METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(POSTHOC_METHODS)}")
    x = image_to_input(image, loaded.input_size).to(_model_device(loaded))
    compute = grad_cam if method == "grad_cam" else cam
    saliency = to_numpy_map(compute(loaded.model, x, class_index)[0]).astype(np.float64)
    total = saliency.sum()
    # ReLU can leave an all-zero map (no positive evidence): show it as uniform, not as NaNs.
    distribution = saliency / total if total > 0 else np.full_like(saliency, 1.0 / saliency.size)
    return _stage_map(POSTHOC_METHODS[method], torch.from_numpy(distribution.astype(np.float32)),
                      (int(image.shape[0]), int(image.shape[1])))
