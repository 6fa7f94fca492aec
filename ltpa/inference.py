"""One forward pass of a zoo model on one image, packaged for display: every page calls this.

``load_model_source`` turns what a user names (a shipped model id, a checkpoint file or a run
folder holding ``model.pt``) into a ready model. ``analyse`` gives the top classes, and for every attention stage its map at the model's native
resolution, the same map upsampled to the image's own size (mass-preserving, so it still sums to
1) and its summary figures. ``posthoc`` does the same for CAM / Grad-CAM, for contrast. Neither
mutates the model (no hooks, no ``.backward``, no ``.train()``), so one cached model can serve
every app session.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ltpa.choices import check_choice
from ltpa.checkpoint import file_sha256, load_checkpoint
from ltpa.maps import MapStats, map_stats, to_numpy_map, upsample
from ltpa.preprocess import PixelModel, image_to_input
from ltpa.saliency import cam, grad_cam
from ltpa.zoo import (LoadedModel, ZooEntry, ZooError, describe_model, get_entry, list_zoo,
                      load_zoo_model)

POSTHOC_METHODS = {"grad_cam": "Grad-CAM", "cam": "CAM"}
# The checkpoint a training run folder holds (ltpa.training writes it under this name).
RUN_MODEL_FILE = "model.pt"


def _shipped_ids(source: str | Path) -> list[str]:
    """The shipped ids, or a ValueError saying ``source`` is no file and there is no zoo."""
    try:
        return [e.id for e in list_zoo()]
    except ZooError as error:
        raise ValueError(f"{str(source)!r} is neither a checkpoint file nor a run folder, and {error}") from None


def _unknown_source(source: str | Path, shipped: list[str]) -> ValueError:
    return ValueError(f"{str(source)!r} is neither a checkpoint file, a run folder nor a shipped "
                      f"model id (shipped: {', '.join(shipped) or 'none'})")


def resolve_checkpoint(source: str | Path) -> Path:
    """The checkpoint file a user means: a file, a run folder holding ``model.pt``, or a shipped
    model id.

    Args:
        source: a path or a zoo id.

    Returns:
        The path of the checkpoint file.

    Raises:
        ValueError: ``source`` is none of these (the message lists the shipped ids).
    """
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / RUN_MODEL_FILE).is_file():
            return path / RUN_MODEL_FILE
        raise ValueError(f"{path} is a folder without {RUN_MODEL_FILE}: give a checkpoint file, "
                         "a run folder of `ltpa train`, or a shipped model id")
    shipped = _shipped_ids(source)
    if str(source) in shipped:
        return get_entry(str(source)).path
    raise _unknown_source(source, shipped)


def load_model_source(source: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model ready for inference from a shipped id, a checkpoint file or a run folder.

    Shipped ids load through ``ltpa.zoo.load_zoo_model``; files get a card built from their
    metadata (classes, normalisation, input size) and the model itself (stages), with the id
    being the file's path.

    Args:
        source: a zoo id, a checkpoint file or a run folder holding ``model.pt``.
        device: where the model runs.

    Returns:
        The LoadedModel (a pixel-space model in eval mode, its card and metadata).

    Raises:
        ValueError: an unknown source, or a checkpoint that is not readable (CheckpointError).
    """
    if not Path(source).exists():
        shipped = _shipped_ids(source)
        if str(source) not in shipped:
            raise _unknown_source(source, shipped)
        return load_zoo_model(str(source), device=device)
    checkpoint = resolve_checkpoint(source)
    model, meta = load_checkpoint(checkpoint, device=device)
    missing = [key for key in ("class_names", "mean", "std") if key not in meta]
    if missing:
        raise ValueError(f"{checkpoint} lacks the metadata a model needs for images "
                         f"({', '.join(missing)}); save it with ltpa train or ltpa.save_checkpoint")
    input_size = int(meta.get("input_size", 32))
    card = {
        "id": str(source), "file": str(checkpoint.resolve()),
        "registry_name": model.ltpa_config["name"], "kwargs": model.ltpa_config["kwargs"],
        "class_names": list(meta["class_names"]), "mean": meta["mean"], "std": meta["std"],
        "input_size": input_size, "sha256": file_sha256(checkpoint),
        **describe_model(model, input_size),
    }
    pixel_model = PixelModel(model, meta["mean"], meta["std"]).to(device).eval()
    return LoadedModel(ZooEntry(str(source), card), pixel_model, meta)


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

    The image becomes model input through ``ltpa.preprocess.image_to_input``; the maps are
    upsampled back to the image's own size with ``ltpa.maps.upsample``.

    Args:
        loaded: the model (``load_model_source`` or ``ltpa.zoo.load_zoo_model``).
        image: H x W x 3 uint8 RGB array.

    Returns:
        The Analysis: probabilities, one StageMap per attention stage, sizes and device.
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
    """A post-hoc saliency map for contrast with attention, normalised to sum to 1.

    Args:
        loaded: the model; ``cam`` needs a GAP model.
        image: H x W x 3 uint8 RGB array.
        method: a key of ``POSTHOC_METHODS`` (``grad_cam`` or ``cam``).
        class_index: the class explained (default: the predicted one).

    Returns:
        The StageMap (uniform when the map has no positive value).

    Raises:
        ValueError: an unknown method, or CAM on a model without global average pooling.
    """
    check_choice("method", method, POSTHOC_METHODS)
    x = image_to_input(image, loaded.input_size).to(_model_device(loaded))
    compute = grad_cam if method == "grad_cam" else cam
    saliency = to_numpy_map(compute(loaded.model, x, class_index)[0]).astype(np.float64)
    total = saliency.sum()
    # ReLU can leave an all-zero map (no positive evidence): show it as uniform, not as NaNs.
    distribution = saliency / total if total > 0 else np.full_like(saliency, 1.0 / saliency.size)
    return _stage_map(POSTHOC_METHODS[method], torch.from_numpy(distribution.astype(np.float32)),
                      (int(image.shape[0]), int(image.shape[1])))
