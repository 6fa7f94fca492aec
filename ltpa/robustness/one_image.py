"""One image under attack: what the Adversarial page shows.

``attack_report`` gives the adversarial image, probabilities before and after, every stage's
attention before and after and how far it moved (``attention_shift``); ``confidence_curve`` one
class's probability against epsilon.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ltpa.attacks import (
    APP_MAX_LEVELS,
    ATTACKS,
    DEFAULT_STEPS,
    attack,
    fgsm_levels_logits,
    iterative_fgsm,
    levels_to_epsilon,
)
from ltpa.masks import jaccard, make_mask
from ltpa.preprocess import PixelModel
from ltpa.robustness.sweeps import check_levels
from ltpa.stats import spearman
from ltpa.choices import check_choice

# The attention shift thresholds each map by keeping its top quarter of positions (masks' default
# for the ``top`` rule): same-size masks, so their IoU measures only where attention sits.
SHIFT_RULE, SHIFT_VALUE = "top", 25.0


class AttentionShift(NamedTuple):
    """How far one stage's attention moved between the clean and the adversarial image."""

    iou: float  # IoU of the two thresholded masks (top 25% of positions each)
    moved_mass: float  # total-variation distance of the two maps as distributions, in [0, 1]
    spearman: float  # rank correlation of the two maps over positions (nan if a map is flat)


def moved_mass(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """Share of attention that moved: the total-variation distance ``0.5 * sum |p - q|`` of two maps
    normalised to sum to 1.

    Args:
        clean: the clean image's map.
        adversarial: the adversarial image's map, same size.

    Returns:
        0 for identical maps, 1 for disjoint ones.

    Raises:
        ValueError: the maps differ in size or one has no positive value.
    """
    p = np.clip(np.asarray(clean, dtype=np.float64).ravel(), 0, None)
    q = np.clip(np.asarray(adversarial, dtype=np.float64).ravel(), 0, None)
    if p.shape != q.shape:
        raise ValueError(f"maps differ in size: {p.size} vs {q.size}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("a map with no positive attention cannot be compared")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def attention_shift(clean: np.ndarray, adversarial: np.ndarray) -> AttentionShift:
    """How far attention moved between two same-size maps.

    Args:
        clean: 2-D map of the clean image.
        adversarial: 2-D map of the adversarial image.

    Returns:
        IoU of the thresholded masks, moved mass and rank correlation.

    Raises:
        ValueError: the maps are not 2-D maps of one size.
    """
    clean = np.asarray(clean, dtype=np.float32).squeeze()
    adversarial = np.asarray(adversarial, dtype=np.float32).squeeze()
    if clean.shape != adversarial.shape or clean.ndim != 2:
        raise ValueError(f"expected two 2-D maps of one size; got {clean.shape} and {adversarial.shape}")
    masks = [make_mask(m, None, SHIFT_RULE, SHIFT_VALUE) for m in (clean, adversarial)]
    return AttentionShift(jaccard(masks[0], masks[1]), moved_mass(clean, adversarial),
                          spearman(clean, adversarial))


# --------------------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class AttackReport:
    """One image under one attack: what the Adversarial page shows."""

    method: str
    levels: int  # epsilon in grey levels (k/255)
    attacked_class: int  # the class pushed away from (untargeted) or towards (targeted)
    targeted: bool
    clean: np.ndarray  # H x W x 3 float32 in [0, 1]
    adversarial: np.ndarray  # H x W x 3 float32 in [0, 1]
    clean_probabilities: np.ndarray  # (C,)
    adversarial_probabilities: np.ndarray  # (C,)
    stages: tuple[str, ...]
    clean_maps: tuple[np.ndarray, ...]  # native resolution, each sums to 1
    adversarial_maps: tuple[np.ndarray, ...]
    shifts: tuple[AttentionShift, ...]

    @property
    def perturbation(self) -> np.ndarray:
        """adversarial - clean (H x W x 3), within [-epsilon, epsilon]."""
        return self.adversarial - self.clean

    @property
    def linf(self) -> float:
        """Largest absolute change of any channel of any pixel, in grey levels."""
        return float(np.abs(self.perturbation).max() * 255) if self.perturbation.size else 0.0

    @property
    def clean_prediction(self) -> int:
        return int(np.argmax(self.clean_probabilities))

    @property
    def adversarial_prediction(self) -> int:
        return int(np.argmax(self.adversarial_probabilities))

    @property
    def flipped(self) -> bool:
        """Untargeted: the prediction changed; targeted: the target is now predicted."""
        if self.targeted:
            return self.adversarial_prediction == self.attacked_class
        return self.adversarial_prediction != self.clean_prediction


def perturbation_image(perturbation: np.ndarray, gain: float) -> np.ndarray:
    """The perturbation made visible: ``0.5 + gain * delta`` clipped to [0, 1] (grey = no change).

    Args:
        perturbation: adversarial - clean, H x W x 3.
        gain: the amplification, positive.

    Returns:
        An H x W x 3 float32 image in [0, 1].

    Raises:
        ValueError: a gain that is not a positive number.
    """
    if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be a positive number; got {gain!r}")
    return np.clip(0.5 + gain * np.asarray(perturbation, dtype=np.float32), 0.0, 1.0)


def attack_report(
    model: PixelModel,
    x: Tensor,
    levels: int,
    method: str = "fgsm",
    label: int | None = None,
    target: int | None = None,
    steps: int = DEFAULT_STEPS,
    max_levels: int = APP_MAX_LEVELS,
) -> AttackReport:
    """Attack one image and compare the model's view of the clean and the adversarial image, stage
    by stage.

    Args:
        model: a pixel-space model.
        x: the image, 1 x 3 x H x W in [0, 1].
        levels: epsilon in grey levels (k/255).
        method: a key of ``ltpa.attacks.ATTACKS``.
        label: the class attacked (None: the model's own prediction).
        target: a class to push towards (targeted attack), or None.
        steps: I-FGSM steps.
        max_levels: the largest epsilon allowed (32 for the app).

    Returns:
        The AttackReport.

    Raises:
        ValueError: an epsilon out of range or an input that is not one image.
    """
    levels = check_levels(levels, max_levels)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got shape {tuple(x.shape)}")
    adversarial = attack(model, x, levels_to_epsilon(levels), method, label, target, steps)
    with torch.no_grad():
        out = model(torch.cat([x.detach(), adversarial]))
    probabilities = torch.softmax(out.logits.float(), dim=1).cpu().numpy()
    maps = [m.float().cpu().numpy()[:, 0] for m in out.maps]
    if target is not None:
        attacked = int(target)
    elif label is not None:
        attacked = int(label)
    else:
        attacked = int(np.argmax(probabilities[0]))
    clean_maps = tuple(m[0] for m in maps)
    adversarial_maps = tuple(m[1] for m in maps)
    return AttackReport(
        method=method, levels=levels, attacked_class=attacked, targeted=target is not None,
        clean=x[0].detach().permute(1, 2, 0).cpu().numpy().astype(np.float32),
        adversarial=adversarial[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        clean_probabilities=probabilities[0], adversarial_probabilities=probabilities[1],
        stages=tuple(out.stages), clean_maps=clean_maps, adversarial_maps=adversarial_maps,
        shifts=tuple(attention_shift(c, a) for c, a in zip(clean_maps, adversarial_maps)),
    )


#: Epsilons of the I-FGSM confidence curve: a full attack each, so fewer than FGSM's 0..32.
IFGSM_CURVE_LEVELS = (0, 1, 2, 4, 8, 16, 32)


def confidence_curve(
    model: PixelModel,
    x: Tensor,
    class_index: int | None = None,
    method: str = "fgsm",
    label: int | None = None,
    target: int | None = None,
    levels: Sequence[int] | None = None,
    steps: int = DEFAULT_STEPS,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """This image's probability of one class under the attack at each epsilon.

    Args:
        model: a pixel-space model.
        x: the image, 1 x 3 x H x W in [0, 1].
        class_index: the class followed (None: the target, the label, or the clean prediction).
        method: ``fgsm`` (every k in 0..32 from one gradient) or ``ifgsm``
            (``IFGSM_CURVE_LEVELS``).
        label: the class attacked (None: the prediction).
        target: a class to push towards, or None.
        levels: epsilons in grey levels (default as above).
        steps: I-FGSM steps.

    Returns:
        (levels, probability of ``class_index``, predicted class), one value per epsilon.

    Raises:
        ValueError: an unknown method, an epsilon out of range or a class that does not exist.
    """
    check_choice("attack", method, ATTACKS)
    if levels is None:
        levels = range(APP_MAX_LEVELS + 1) if method == "fgsm" else IFGSM_CURVE_LEVELS
    levels = [check_levels(k) for k in levels]
    if method == "fgsm":
        logits = fgsm_levels_logits(model, x, levels, label, target)
    else:
        batch = torch.cat([
            iterative_fgsm(model, x, levels_to_epsilon(k), steps, label=label, target=target)
            for k in levels
        ])
        with torch.no_grad():
            logits = model(batch).logits.float()
    probabilities = torch.softmax(logits, dim=1)
    if class_index is None:
        if target is not None or label is not None:
            class_index = int(target if target is not None else label)
        else:
            with torch.no_grad():
                class_index = int(model(x).logits.argmax(dim=1)[0])
    if not 0 <= class_index < probabilities.shape[1]:
        raise ValueError(f"class {class_index} does not exist: the model has {probabilities.shape[1]} classes")
    return levels, probabilities[:, class_index].cpu().numpy(), probabilities.argmax(dim=1).cpu().numpy()

