"""Adversarial attacks in pixel space: FGSM, iterative FGSM (I-FGSM / PGD) and the smallest
flipping epsilon of an image.

Every attack takes a :class:`ltpa.preprocess.PixelModel` (input in pixel space [0, 1],
normalisation inside the model), so the step ``epsilon * sign(gradient)`` is taken in pixel units
and the result is clamped to [0, 1] before the model re-normalises it (GUIDE.md pitfall 5).
Epsilon is given in pixel units: ``k / 255`` moves every channel of every pixel by at most ``k``
grey levels.

Why the attacks are safe on the one cached model that all app sessions share:

* the input gradient comes from ``torch.autograd.grad(loss, x_adv)`` inside
  ``torch.enable_grad()``: no ``.backward()``, so no parameter's ``.grad`` is ever written, and
  the attacks work when called under ``torch.no_grad()``;
* no hooks, no module state, no ``.train()``/``.eval()`` switch: a model in training mode is
  refused (BatchNorm would update its running statistics and dropout would make the gradient
  random) instead of being switched, because switching would race with other threads;
* randomness (PGD's random start) comes only from an explicit ``torch.Generator``.
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ltpa.models.outputs import check_input
from ltpa.preprocess import PixelModel

#: Largest epsilon the library accepts (the whole pixel range).
MAX_EPSILON = 1.0
#: Largest epsilon the app offers: 32 grey levels.
APP_MAX_EPSILON = 32 / 255
#: Largest epsilon, in grey levels, that the smallest-flip search tries by default.
APP_MAX_LEVELS = 32
ATTACKS = ("fgsm", "ifgsm")
ATTACK_NAMES = {"fgsm": "FGSM", "ifgsm": "I-FGSM"}
#: Default number of I-FGSM steps ("a few", as in Kurakin et al.; enough to beat FGSM clearly).
DEFAULT_STEPS = 10

ClassSpec = Union[int, Sequence[int], Tensor, None]


def levels_to_epsilon(levels: int) -> float:
    """Epsilon in pixel units for ``levels`` grey levels (``k`` -> ``k / 255``)."""
    return levels / 255


def epsilon_to_levels(epsilon: float) -> float:
    """Epsilon in grey levels (``/255`` units) for a pixel-unit epsilon."""
    return epsilon * 255


def check_epsilon(epsilon: float, max_epsilon: float = MAX_EPSILON) -> float:
    """``epsilon`` as a float, or a ValueError when it is not a number in [0, max_epsilon]."""
    if max_epsilon > MAX_EPSILON:
        raise ValueError(f"max_epsilon cannot exceed {MAX_EPSILON} (the whole pixel range)")
    if isinstance(epsilon, bool):
        raise ValueError(f"epsilon must be a number; got {epsilon!r}")
    if not isinstance(epsilon, (int, float)):
        try:
            epsilon = float(epsilon)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise ValueError(f"epsilon must be a number; got {epsilon!r}") from None
    epsilon = float(epsilon)
    # The tolerance lets 32/255 computed in another way (e.g. 32 * (1/255)) pass.
    if not math.isfinite(epsilon) or epsilon < 0 or epsilon > max_epsilon + 1e-9:
        raise ValueError(
            f"epsilon must be in [0, {max_epsilon:.4g}] (pixel units, i.e. 0 to "
            f"{epsilon_to_levels(max_epsilon):.4g}/255); got {epsilon:.4g} "
            f"({epsilon_to_levels(epsilon):.4g}/255)"
            if math.isfinite(epsilon) else f"epsilon must be a finite number; got {epsilon}"
        )
    return min(epsilon, max_epsilon)


def check_model(model: torch.nn.Module) -> None:
    """Raise unless ``model`` is a pixel-space model in eval mode."""
    if not isinstance(model, PixelModel):
        raise TypeError(
            "attacks need a ltpa.preprocess.PixelModel (pixel-space [0, 1] input, normalisation "
            f"inside the model) so the step is taken in pixel space; got {type(model).__name__}"
        )
    if model.training:
        raise RuntimeError(
            "the model is in training mode: attacks need eval mode (BatchNorm statistics and "
            "dropout must not change); call model.eval() once when loading it"
        )


def check_images(x: Tensor) -> None:
    """Raise a ValueError unless ``x`` is a float batch B x 3 x H x W with values in [0, 1]."""
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a tensor of images; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1]; got dtype {x.dtype} (divide uint8 by 255)")
    check_input(x)
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"expected pixel-space images in [0, 1]; got values in [{float(x.min()):.3g}, "
            f"{float(x.max()):.3g}] (attacks take un-normalised pixels)"
        )


def _class_tensor(classes: ClassSpec, batch: int, num_classes: int, what: str,
                  device: torch.device) -> Tensor:
    """``classes`` (one int for the whole batch, or one per image) as a long tensor of size B."""
    tensor = torch.as_tensor(classes, dtype=torch.long).to(device).flatten()
    if tensor.numel() == 1:
        tensor = tensor.expand(batch)
    if tensor.numel() != batch:
        raise ValueError(f"expected one {what} per image ({batch}); got {tensor.numel()}")
    bad = tensor[(tensor < 0) | (tensor >= num_classes)]
    if bad.numel():
        raise ValueError(
            f"{what} {int(bad[0])} does not exist: the model has {num_classes} classes "
            f"(0 to {num_classes - 1})"
        )
    return tensor


def attack_direction(
    model: PixelModel, x: Tensor, label: ClassSpec = None, target: ClassSpec = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradient that an attack ascends, with the clean logits and the attacked classes.

    Untargeted (``target`` is None): the gradient of the cross-entropy on ``label`` (the model's
    own prediction when ``label`` is None) with respect to the pixels; ascending it pushes the
    image away from that class. Targeted: minus the gradient of the cross-entropy on ``target``;
    ascending it pulls the image towards the target class.

    The loss is summed over the batch so each image's gradient is the one it would get alone.
    Returns ``(gradient fp32 B x 3 x H x W, logits B x C, classes B)``; nothing in the model is
    touched (see the module docstring).
    """
    if label is not None and target is not None:
        raise ValueError("give either a label to move away from or a target to move towards, not both")
    check_model(model)
    check_images(x)
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "attacks need gradients, which torch.inference_mode() forbids; use torch.no_grad() "
            "around other code instead"
        )
    with torch.enable_grad():
        pixels = x.detach().clone().requires_grad_(True)
        logits = model(pixels).logits
        num_classes = logits.shape[1]
        if target is not None:
            classes = _class_tensor(target, x.shape[0], num_classes, "target class", x.device)
        elif label is not None:
            classes = _class_tensor(label, x.shape[0], num_classes, "class", x.device)
        else:
            classes = logits.detach().argmax(dim=1)
        loss = F.cross_entropy(logits.float(), classes, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, pixels)
    gradient = gradient.float()
    return (-gradient if target is not None else gradient), logits.detach(), classes


def fgsm_from_direction(x: Tensor, direction: Tensor, epsilon: float) -> Tensor:
    """One FGSM step ``clamp(x + epsilon * sign(direction), 0, 1)`` (no model call)."""
    return (x.detach() + epsilon * direction.sign()).clamp_(0.0, 1.0)


def fgsm(
    model: PixelModel,
    x: Tensor,
    epsilon: float,
    label: ClassSpec = None,
    target: ClassSpec = None,
    max_epsilon: float = MAX_EPSILON,
) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015) on a batch of pixel-space images.

    Untargeted on ``label`` (the predicted class when None) or targeted towards ``target``.
    ``epsilon`` is in pixel units (``k / 255``) and must lie in [0, max_epsilon]. Returns the
    adversarial images in [0, 1] with ``|x_adv - x|_inf <= epsilon``; epsilon 0 returns a copy of
    ``x`` without calling the model.
    """
    epsilon = check_epsilon(epsilon, max_epsilon)
    if epsilon == 0:
        check_model(model)
        check_images(x)
        return x.detach().clone()
    direction, _, _ = attack_direction(model, x, label, target)
    return fgsm_from_direction(x, direction, epsilon)


def iterative_fgsm(
    model: PixelModel,
    x: Tensor,
    epsilon: float,
    steps: int = DEFAULT_STEPS,
    step_size: float | None = None,
    label: ClassSpec = None,
    target: ClassSpec = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    max_epsilon: float = MAX_EPSILON,
) -> Tensor:
    """Iterative FGSM (Kurakin et al. 2017); with ``random_start`` it is PGD (Madry et al. 2018).

    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 * epsilon / steps``, so the
    iterate can reach the boundary and move along it), each followed by projection onto the
    L-inf ball of radius ``epsilon`` around ``x`` and onto [0, 1]. The attacked class is fixed
    at the start (the clean prediction when ``label`` is None). The random start draws from
    ``generator`` only, so results are reproducible and threads do not share random state.
    """
    epsilon = check_epsilon(epsilon, max_epsilon)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number; got {step_size!r}")
    if epsilon == 0:
        check_model(model)
        check_images(x)
        return x.detach().clone()
    x = x.detach()
    low, high = (x - epsilon).clamp(min=0.0), (x + epsilon).clamp(max=1.0)
    adversarial = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adversarial = torch.max(torch.min(x + (2 * noise - 1) * epsilon, high), low)
    if target is None and label is None:
        # Fix the attacked class once: re-predicting at every step would chase a moving label.
        _, logits, label = attack_direction(model, x)
    for _ in range(steps):
        direction, _, _ = attack_direction(model, adversarial, label, target)
        adversarial = adversarial + step_size * direction.sign()
        adversarial = torch.max(torch.min(adversarial, high), low)
    return adversarial


def attack(
    model: PixelModel,
    x: Tensor,
    epsilon: float,
    method: str = "fgsm",
    label: ClassSpec = None,
    target: ClassSpec = None,
    steps: int = DEFAULT_STEPS,
    max_epsilon: float = MAX_EPSILON,
) -> Tensor:
    """Run the attack named ``method`` (``"fgsm"`` or ``"ifgsm"``); see :func:`fgsm`."""
    if method == "fgsm":
        return fgsm(model, x, epsilon, label, target, max_epsilon)
    if method == "ifgsm":
        return iterative_fgsm(model, x, epsilon, steps, label=label, target=target,
                              max_epsilon=max_epsilon)
    raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")


def fgsm_levels_logits(
    model: PixelModel,
    x: Tensor,
    levels: Sequence[int],
    label: ClassSpec = None,
    target: ClassSpec = None,
) -> Tensor:
    """Logits of one image under FGSM at each epsilon ``k / 255`` for ``k`` in ``levels``.

    FGSM's direction does not depend on epsilon, so one gradient and one batched forward of
    ``len(levels)`` images give the whole curve. Returns a ``len(levels) x C`` fp32 tensor.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got shape {tuple(x.shape)}")
    levels = [int(k) for k in levels]
    for k in levels:
        check_epsilon(levels_to_epsilon(k))
    direction, _, _ = attack_direction(model, x, label, target)
    epsilons = torch.tensor([levels_to_epsilon(k) for k in levels], device=x.device,
                            dtype=x.dtype).view(-1, 1, 1, 1)
    batch = (x.detach() + epsilons * direction.sign()).clamp_(0.0, 1.0)
    with torch.no_grad():
        return model(batch).logits.float()


def smallest_flipping_epsilon(
    model: PixelModel,
    x: Tensor,
    method: str = "fgsm",
    label: ClassSpec = None,
    target: ClassSpec = None,
    max_levels: int = APP_MAX_LEVELS,
    steps: int = DEFAULT_STEPS,
) -> int | None:
    """The smallest epsilon, in grey levels (``/255`` units), at which the attack succeeds.

    Success means the prediction differs from the clean prediction (untargeted) or equals
    ``target`` (targeted). Returns None when no epsilon up to ``max_levels / 255`` succeeds.

    FGSM success is not monotone in epsilon (a larger step can overshoot back into the clean
    class), so for ``"fgsm"`` every ``k`` in 1..max_levels is tried with one gradient and one
    batched forward (:func:`fgsm_levels_logits`): the answer is exact, every smaller ``k`` fails.
    I-FGSM needs a full attack per epsilon, so ``"ifgsm"`` doubles ``k`` (1, 2, 4, ...) until the
    attack succeeds, then bisects between the last failure and the first success; it returns a
    ``k`` that succeeds while ``k - 1`` fails, which is the smallest one when success is monotone.
    """
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or not 1 <= max_levels <= 255:
        raise ValueError(f"max_levels must be an integer in [1, 255]; got {max_levels!r}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got shape {tuple(x.shape)}")
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")
    _, clean_logits, classes = attack_direction(model, x, label, target)
    clean_prediction = int(clean_logits.argmax(dim=1))
    target_class = int(classes) if target is not None else None
    if target_class is not None and clean_prediction == target_class:
        return 0

    def succeeds(predictions: Tensor) -> Tensor:
        if target_class is not None:
            return predictions == target_class
        return predictions != clean_prediction

    if method == "fgsm":
        levels = list(range(1, max_levels + 1))
        predictions = fgsm_levels_logits(model, x, levels, label, target).argmax(dim=1)
        hits = torch.nonzero(succeeds(predictions)).flatten()
        return levels[int(hits[0])] if hits.numel() else None

    def flips(k: int) -> bool:
        adversarial = iterative_fgsm(model, x, levels_to_epsilon(k), steps, label=label, target=target)
        with torch.no_grad():
            return bool(succeeds(model(adversarial).logits.argmax(dim=1)))

    failing, k = 0, 1  # invariant: epsilon `failing` does not flip (0 never does)
    while not flips(k):
        failing = k
        if k == max_levels:
            return None
        k = min(2 * k, max_levels)
    while k - failing > 1:
        middle = (failing + k) // 2
        if flips(middle):
            k = middle
        else:
            failing = middle
    return k
