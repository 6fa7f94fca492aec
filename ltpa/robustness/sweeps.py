"""Robustness curves over a dataset: every test image attacked at each epsilon ``k / 255``.

* **accuracy** at epsilon: share of all images whose adversarial prediction is their true label
  (at epsilon 0, the clean accuracy);
* **fooling rate** at epsilon: among the images the model classifies correctly *without* attack,
  the share whose adversarial prediction differs from that clean (= true) prediction. Images
  wrong from the start are left out, so the fooling rate measures only what the attack broke; it
  is 0 at epsilon 0 by definition.

The data are decoded once into a uint8 tensor kept on the device. FGSM's direction does not
depend on epsilon, so each batch costs one forward-backward plus one forward per epsilon. The
attack gradient is always computed in fp32; ``amp=True`` runs only the evaluation forwards under
bf16 autocast (CUDA only).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from ltpa.attacks import (
    APP_MAX_LEVELS,
    ATTACK_NAMES,
    ATTACKS,
    DEFAULT_STEPS,
    attack_direction,
    check_model,
    fgsm_from_direction,
    iterative_fgsm,
    levels_to_epsilon,
)
from ltpa.preprocess import PixelModel
from ltpa.robustness.results import DEFINITIONS, RESULTS_FORMAT
from ltpa.choices import check_choice

DEFAULT_LEVELS = (0, 1, 2, 4, 8, 16)
LABEL_MODES = ("true", "predicted")


def parse_levels(text: str | Sequence[int]) -> list[int]:
    """Epsilons in grey levels, sorted and without repeats.

    Args:
        text: ``"0,1,2,4"`` or a sequence of integers.

    Returns:
        Integers k in [0, 255], each meaning k/255.

    Raises:
        ValueError: a value that is not such an integer, or none at all.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    levels = []
    for item in items:
        try:
            value = float(str(item).strip())
        except ValueError:
            raise ValueError(f"epsilons are integers k (meaning k/255); got {str(item).strip()!r}") from None
        if not value.is_integer() or not 0 <= value <= 255:
            raise ValueError(f"epsilons are integers k in [0, 255] (meaning k/255); got {item}")
        levels.append(int(value))
    if not levels:
        raise ValueError("give at least one epsilon, e.g. --eps 0,1,2,4,8,16")
    return sorted(set(levels))


def check_levels(levels: int, max_levels: int = APP_MAX_LEVELS) -> int:
    """One epsilon in grey levels for the app.

    Args:
        levels: the epsilon, a whole number of grey levels.
        max_levels: the largest allowed.

    Returns:
        ``levels`` as an int in [0, max_levels].

    Raises:
        ValueError: not a whole number in range.
    """
    try:
        whole = not isinstance(levels, bool) and float(levels).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole or not 0 <= levels <= max_levels:
        raise ValueError(f"epsilon must be a whole number of grey levels from 0 to {max_levels} "
                         f"(0/255 to {max_levels}/255); got {levels}")
    return int(levels)


@dataclass
class ModelCurve:
    """Accuracy and fooling rate of one model at each epsilon."""

    model_id: str
    levels: list[int]
    correct: list[int]  # images right at each epsilon
    fooled: list[int]  # clean-correct images whose prediction changed at each epsilon
    n_images: int
    n_clean_correct: int
    sweep_time_s: float
    info: dict[str, Any] = field(default_factory=dict)  # paper name, attention, test error...

    @property
    def accuracy(self) -> list[float]:
        return [c / self.n_images for c in self.correct]

    @property
    def fooling_rate(self) -> list[float]:
        if self.n_clean_correct == 0:
            return [float("nan")] * len(self.levels)
        return [f / self.n_clean_correct for f in self.fooled]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.model_id, **self.info,
            "accuracy": self.accuracy, "fooling_rate": self.fooling_rate,
            "correct": self.correct, "fooled": self.fooled,
            "n_images": self.n_images, "n_clean_correct": self.n_clean_correct,
            "sweep_time_s": round(self.sweep_time_s, 4),
            "images_per_s": round(self.n_images / self.sweep_time_s, 1) if self.sweep_time_s else None,
        }


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep_model(
    model: PixelModel,
    images: Tensor,
    labels: Tensor,
    levels: Sequence[int] = DEFAULT_LEVELS,
    batch_size: int = 500,
    method: str = "fgsm",
    steps: int = DEFAULT_STEPS,
    label_mode: str = "true",
    amp: bool = False,
    channels_last: bool = False,
    model_id: str = "",
) -> ModelCurve:
    """Accuracy and fooling rate of ``model`` under an attack at each epsilon ``k / 255``.

    See the module docstring for the definitions. The model is only read, never changed.

    Args:
        model: a pixel-space model.
        images: uint8 N x 3 x H x W on the model's device.
        labels: int64 N on the same device.
        levels: epsilons in grey levels.
        batch_size: images per batch.
        method: a key of ``ltpa.attacks.ATTACKS``.
        steps: I-FGSM steps.
        label_mode: ``"true"`` attacks the true label, ``"predicted"`` the clean prediction.
        amp: bf16 autocast for the evaluation forwards (CUDA only).
        channels_last: feed channels-last batches.
        model_id: recorded in the curve.

    Returns:
        The ModelCurve.

    Raises:
        ValueError: an unknown method or label mode, malformed images or labels, a bad batch size.
    """
    check_model(model)
    check_choice("attack", method, ATTACKS)
    check_choice("label mode", label_mode, LABEL_MODES)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images N x 3 x H x W; got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"expected one label per image ({images.shape[0]}); got shape {tuple(labels.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer; got {batch_size!r}")
    if images.shape[0] == 0:
        raise ValueError("no images to attack")
    levels = parse_levels(levels)
    device = images.device
    use_amp = amp and device.type == "cuda"
    correct = torch.zeros(len(levels), dtype=torch.long, device=device)
    fooled = torch.zeros(len(levels), dtype=torch.long, device=device)
    clean_correct = torch.zeros((), dtype=torch.long, device=device)
    _synchronise(device)
    start_time = time.perf_counter()
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[start:start + batch_size]
        attacked = y if label_mode == "true" else None
        clean_logits = None
        if method == "fgsm" and any(levels):
            # One fp32 gradient serves every epsilon (outside autocast on purpose).
            direction, clean_logits, _ = attack_direction(model, x, label=attacked)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            # The gradient pass already classified the clean images in fp32; under amp they are
            # classified again in bf16 so clean and attacked predictions share one precision.
            if clean_logits is None or use_amp:
                clean_logits = model(x).logits
            clean_prediction = clean_logits.argmax(dim=1)
            right = clean_prediction == y
            clean_correct += right.sum()
            for index, k in enumerate(levels):
                if k == 0:
                    prediction = clean_prediction
                else:
                    if method == "fgsm":
                        adversarial = fgsm_from_direction(x, direction, levels_to_epsilon(k))
                    else:
                        with torch.autocast("cuda", enabled=False):
                            adversarial = iterative_fgsm(model, x, levels_to_epsilon(k), steps,
                                                         label=attacked)
                    prediction = model(adversarial).logits.argmax(dim=1)
                correct[index] += (prediction == y).sum()
                fooled[index] += (right & (prediction != clean_prediction)).sum()
    _synchronise(device)
    elapsed = time.perf_counter() - start_time
    return ModelCurve(model_id, levels, correct.tolist(), fooled.tolist(), int(images.shape[0]),
                      int(clean_correct), elapsed)


def _model_info(loaded: Any) -> dict[str, Any]:
    """Card fields worth keeping next to a curve (whatever the card has)."""
    from ltpa.registry import get_spec

    card = loaded.entry.card
    info: dict[str, Any] = {"registry_name": card.get("registry_name")}
    try:
        spec = get_spec(card["registry_name"])
        info["paper_name"] = card.get("paper_name") or spec.paper_name
        info["attention"] = spec.attention
    except (KeyError, ValueError):
        info["paper_name"] = card.get("paper_name", loaded.entry.id)
        info["attention"] = bool(card.get("stages"))
    info["test_error"] = card.get("test_error")
    info["sha256"] = card.get("sha256")
    return info


def subset(images: Tensor, labels: Tensor, limit: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A reproducible random subset of images, so a quick run still covers every class.

    Args:
        images: N x ... tensor.
        labels: N labels.
        limit: how many to keep (None: all).
        seed: the subset's seed.

    Returns:
        (images, labels) of the subset, in their original order.

    Raises:
        ValueError: ``limit`` below 1.
    """
    if limit is None or limit >= images.shape[0]:
        return images, labels
    if limit < 1:
        raise ValueError(f"--limit must be a positive number of images; got {limit}")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:limit]
    order = order.sort().values
    return images[order], labels[order]


def load_eval_images(data: str, class_names: Sequence[str], image_size: int,
                     data_root: str | None = None) -> tuple[Tensor, Tensor, str]:
    """The evaluation images, through ``ltpa.data.load_test_split``.

    Args:
        data: a dataset name (its test split), an ImageFolder tree with ``test/``, or a folder of
            class folders; the classes must be the model's (same names, same order).
        class_names: the model's classes.
        image_size: the model's input size.
        data_root: folder of the torchvision files.

    Returns:
        (uint8 images N x 3 x S x S, int64 labels, a description of the source).
    """
    from ltpa.data import load_test_split

    test, source = load_test_split(data, class_names=list(class_names), image_size=image_size,
                                   data_root=data_root)
    return test.images, test.labels, source


def run_robustness(
    model_ids: Sequence[str],
    data: str,
    levels: Sequence[int] = DEFAULT_LEVELS,
    batch_size: int = 500,
    device: str | None = None,
    limit: int | None = None,
    method: str = "fgsm",
    steps: int = DEFAULT_STEPS,
    label_mode: str = "true",
    amp: bool = False,
    data_root: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Curves for several shipped models on one dataset, as the results dict written to JSON.

    Each model is loaded fresh (its own copy, so channels_last on CUDA is safe), the images are
    decoded once (``ltpa.data.load_test_split``) and kept on the device.

    Args:
        model_ids: shipped ids; all must share the first one's classes.
        data: a dataset name, an ImageFolder tree with ``test/`` or a folder of class folders.
        levels: epsilons in grey levels.
        batch_size: images per batch.
        device: auto, cpu, cuda, cuda:N or mps.
        limit: a fixed random subset of this many images.
        method: ``fgsm`` or ``ifgsm``.
        steps: I-FGSM steps.
        label_mode: ``true`` or ``predicted``.
        amp: bf16 evaluation forwards on CUDA.
        data_root: folder of the torchvision files.
        log: called with progress lines.

    Returns:
        The results dict (format ``RESULTS_FORMAT``).
    """
    from ltpa.device import get_device
    from ltpa.zoo import get_entry, load_zoo_model

    if not model_ids:
        raise ValueError("give at least one model id (see `ltpa models` or assets/models/manifest.json)")
    levels = parse_levels(levels)
    entries = [get_entry(model_id) for model_id in model_ids]  # fail early on a bad id
    target = get_device(device)
    first = entries[0].card
    load_start = time.perf_counter()
    images, labels, source = load_eval_images(data, first["class_names"], int(first["input_size"]), data_root)
    images, labels = subset(images, labels, limit)
    images, labels = images.to(target), labels.to(target)
    load_time = time.perf_counter() - load_start
    if log:
        log(f"loaded {images.shape[0]} images from {source} in {load_time:.1f} s")
    channels_last = target.type == "cuda"
    curves = []
    for entry in entries:
        if entry.card["class_names"] != first["class_names"]:
            raise ValueError(f"model {entry.id} has other classes than {entries[0].id}")
        loaded = load_zoo_model(entry.id, device=target)
        if channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        if target.type == "cuda":  # untimed warm-up batch: lazy CUDA init and cuDNN kernel choice
            sweep_model(loaded.model, images[:batch_size], labels[:batch_size], levels, batch_size,
                        method, steps, label_mode, amp, channels_last)
        curve = sweep_model(loaded.model, images, labels, levels, batch_size, method, steps,
                            label_mode, amp, channels_last, model_id=entry.id)
        curve.info = _model_info(loaded)
        curves.append(curve)
        if log:
            log(f"{entry.id}: accuracy " + " ".join(f"{a:.3f}" for a in curve.accuracy)
                + f"; {curve.sweep_time_s:.2f} s ({curve.n_images / curve.sweep_time_s:.0f} images/s)")
        del loaded
    return {
        "format": RESULTS_FORMAT,
        "attack": method,
        "attack_name": ATTACK_NAMES[method],
        "steps": steps if method == "ifgsm" else None,
        "label": label_mode,
        "levels": levels,
        "epsilons": [levels_to_epsilon(k) for k in levels],
        "dataset": {"source": source, "n_images": int(images.shape[0]), "limit": limit,
                    "class_names": list(first["class_names"])},
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else str(target),
        "precision": "fp32 gradient, bf16 evaluation" if amp and target.type == "cuda" else "fp32",
        "torch": torch.__version__.split("+")[0],
        "batch_size": batch_size,
        "load_time_s": round(load_time, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "definitions": DEFINITIONS,
        "models": [curve.as_dict() for curve in curves],
    }

