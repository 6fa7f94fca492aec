"""Adversarial attacks in pixel space: FGSM, iterative FGSM (I-FGSM / PGD) and the smallest
flipping epsilon of an image.

Every attack takes a :class:`ltpa.preprocess.PixelModel` (input in pixel space [0, 1],
normalisation inside the model), so the step ``epsilon * sign(gradient)`` is taken in pixel units
and the result is clamped to [0, 1] before the model re-normalises it (mixing pixel and
normalised space is a classic FGSM bug).
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
from typing import Callable, NamedTuple, Sequence, Union

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
#: Called with the share of a sweep done so far (0 to 1); an exception it raises stops the sweep
#: and propagates (the app uses that to stop work nobody waits for any more).
Progress = Callable[[float], None]
#: Levels one refinement pass of the I-FGSM smallest-epsilon search tries at once.
SEARCH_WIDTH = 3


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


def _one_image(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got shape {tuple(x.shape)}")


def _checked_levels(levels: Sequence[int]) -> list[int]:
    checked = []
    for k in levels:
        if isinstance(k, bool) or int(k) != k:
            raise ValueError(f"levels must be whole grey levels (k in k/255); got {k!r}")
        check_epsilon(levels_to_epsilon(int(k)))
        checked.append(int(k))
    return checked


def iterative_fgsm_levels(
    model: PixelModel,
    x: Tensor,
    levels: Sequence[int],
    steps: int = DEFAULT_STEPS,
    label: ClassSpec = None,
    target: ClassSpec = None,
    progress: Progress | None = None,
) -> Tensor:
    """I-FGSM of one image at several epsilons ``k / 255`` at once, as one batch.

    Row ``i`` equals ``iterative_fgsm(model, x, levels[i] / 255, steps, label=label,
    target=target)`` (the same step size ``2.5 * epsilon / steps``, projection and attacked
    class) up to floating-point rounding: a batched convolution may round differently, and where
    a gradient component is near zero its sign, hence one step of that pixel, can differ. The
    batch costs the same arithmetic as the loop, but each step is one model call.

    Args:
        model: pixel-space model in eval mode.
        x: one image, 1 x 3 x H x W in [0, 1].
        levels: epsilons in grey levels (0 gives ``x`` itself, without a model call).
        steps: signed-gradient steps per attack.
        label: class to push away from (the clean prediction when None).
        target: class to pull towards (targeted attack).
        progress: called with the share of steps done after each step.

    Returns:
        ``len(levels) x 3 x H x W`` adversarial images.
    """
    _one_image(x)
    levels = _checked_levels(levels)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    check_model(model)
    check_images(x)
    x = x.detach()
    result = x.expand(len(levels), -1, -1, -1).clone()
    moving = [i for i, k in enumerate(levels) if k > 0]
    if not moving:
        return result
    shape = (-1, 1, 1, 1)
    # Epsilons and step sizes are computed in Python floats, as iterative_fgsm does, so each row
    # is the same arithmetic as the single attack.
    epsilons = torch.tensor([levels_to_epsilon(levels[i]) for i in moving], dtype=x.dtype, device=x.device)
    step_sizes = torch.tensor([2.5 * levels_to_epsilon(levels[i]) / steps for i in moving],
                              dtype=x.dtype, device=x.device).view(shape)
    start = x.expand(len(moving), -1, -1, -1)
    low = (start - epsilons.view(shape)).clamp(min=0.0)
    high = (start + epsilons.view(shape)).clamp(max=1.0)
    if target is None and label is None:
        _, _, label = attack_direction(model, x)  # fixed once, as in iterative_fgsm
    adversarial = start.clone()
    for step in range(steps):
        direction, _, _ = attack_direction(model, adversarial, label, target)
        adversarial = torch.max(torch.min(adversarial + step_sizes * direction.sign(), high), low)
        if progress is not None:
            progress((step + 1) / steps)
    result[moving] = adversarial
    return result


def levels_logits(
    model: PixelModel,
    x: Tensor,
    levels: Sequence[int],
    method: str = "fgsm",
    label: ClassSpec = None,
    target: ClassSpec = None,
    steps: int = DEFAULT_STEPS,
    progress: Progress | None = None,
) -> Tensor:
    """Logits of one image attacked at each epsilon ``k / 255`` of ``levels``, in one batch.

    Args:
        model: pixel-space model in eval mode.
        x: one image, 1 x 3 x H x W in [0, 1].
        levels: epsilons in grey levels.
        method: ``"fgsm"`` (one gradient for all levels) or ``"ifgsm"``
            (:func:`iterative_fgsm_levels`).
        label: class to push away from (the clean prediction when None).
        target: class to pull towards.
        steps: I-FGSM steps.
        progress: called with the share done (I-FGSM: after each step).

    Returns:
        ``len(levels) x C`` fp32 logits.
    """
    if method == "fgsm":
        logits = fgsm_levels_logits(model, x, levels, label, target)
        if progress is not None:
            progress(1.0)
        return logits
    if method != "ifgsm":
        raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")
    batch = iterative_fgsm_levels(model, x, levels, steps, label, target, progress)
    with torch.no_grad():
        return model(batch).logits.float()


class LevelSweep(NamedTuple):
    """One image attacked at a range of epsilons: its curve and its smallest flipping epsilon."""

    method: str
    levels: tuple[int, ...]  # ascending grey levels, 0 first
    probabilities: Tensor  # len(levels) x C softmax probabilities (fp32, CPU)
    clean_prediction: int
    attacked_class: int  # the class pushed away from, or the target
    targeted: bool
    smallest: int | None  # smallest flipping epsilon in grey levels; None: none up to max_levels

    @property
    def predictions(self) -> Tensor:
        """The predicted class at each level."""
        return self.probabilities.argmax(dim=1)

    def probability_of(self, class_index: int) -> Tensor:
        """The probability of one class at each level."""
        return self.probabilities[:, class_index]


def doubling_levels(max_levels: int) -> list[int]:
    """``1, 2, 4, ...`` up to and including ``max_levels``."""
    levels, k = [], 1
    while k < max_levels:
        levels.append(k)
        k *= 2
    return levels + [max_levels]


def _refinement(failing: int, succeeding: int, width: int) -> list[int]:
    """Up to ``width`` levels strictly between ``failing`` and ``succeeding``, evenly spread."""
    inside = list(range(failing + 1, succeeding))
    if len(inside) <= width:
        return inside
    span = succeeding - failing
    return sorted({failing + round(j * span / (width + 1)) for j in range(1, width + 1)})


def sweep_levels(
    model: PixelModel,
    x: Tensor,
    method: str = "fgsm",
    label: ClassSpec = None,
    target: ClassSpec = None,
    max_levels: int = APP_MAX_LEVELS,
    steps: int = DEFAULT_STEPS,
    progress: Progress | None = None,
) -> LevelSweep:
    """The attack on one image at every epsilon the app shows, and its smallest flipping epsilon.

    Success means the prediction differs from the clean prediction (untargeted) or equals
    ``target`` (targeted).

    FGSM: every ``k`` in 0..max_levels from one gradient and one batched forward; FGSM success is
    not monotone in epsilon (a larger step can overshoot back into the clean class), so the
    smallest ``k`` is read off all of them and is exact. I-FGSM needs a full attack per epsilon:
    one batch at ``0, 1, 2, 4, ...`` brackets the answer between a failing and a succeeding
    level, then batches of up to ``SEARCH_WIDTH`` levels inside the bracket narrow it to a ``k``
    that succeeds while ``k - 1`` fails (the smallest one when success is monotone). The levels
    of every pass are kept in the curve.

    Args:
        model: pixel-space model in eval mode.
        x: one image, 1 x 3 x H x W in [0, 1].
        method: ``"fgsm"`` or ``"ifgsm"``.
        label: class to push away from (the clean prediction when None).
        target: class to pull towards.
        max_levels: largest epsilon tried, in grey levels (1 to 255).
        steps: I-FGSM steps.
        progress: called with the share done (roughly: the number of refinement passes is
            known only after the first).

    Returns:
        A :class:`LevelSweep`.
    """
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or not 1 <= max_levels <= 255:
        raise ValueError(f"max_levels must be an integer in [1, 255]; got {max_levels!r}")
    _one_image(x)
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")
    _, clean_logits, classes = attack_direction(model, x, label, target)
    clean_prediction = int(clean_logits.argmax(dim=1))
    attacked = int(classes[0])
    targeted = target is not None

    def succeeds(logits: Tensor) -> Tensor:
        predictions = logits.argmax(dim=1)
        return predictions == attacked if targeted else predictions != clean_prediction

    first = [0] + (list(range(1, max_levels + 1)) if method == "fgsm" else doubling_levels(max_levels))
    passes = 1 if method == "fgsm" else 3
    done = 0

    def report(share: float) -> None:
        if progress is not None:
            progress(min(1.0, (done + share) / passes))

    # The attacked class is passed on explicitly so later passes attack the same class.
    fixed_label = None if targeted else attacked
    logits = {k: row for k, row in zip(first, levels_logits(model, x, first, method, fixed_label,
                                                              target, steps, report))}
    done = 1
    success = {k: bool(s) for k, s in zip(logits, succeeds(torch.stack(list(logits.values()))))}
    if targeted and clean_prediction == attacked:
        smallest: int | None = 0
    else:
        hits = [k for k in first if k > 0 and success[k]]
        smallest = hits[0] if hits else None
        if method == "ifgsm" and smallest is not None:
            failing = max(k for k in first if k < smallest)
            passes = 1 + max(1, math.ceil(math.log(max(2, smallest - failing), SEARCH_WIDTH + 1)))
            while smallest - failing > 1:
                tried = _refinement(failing, smallest, SEARCH_WIDTH)
                rows = levels_logits(model, x, tried, method, fixed_label, target, steps, report)
                done += 1
                for k, row, hit in zip(tried, rows, succeeds(rows)):
                    logits[k], success[k] = row, bool(hit)
                hits = [k for k in tried if success[k]]
                if hits:
                    smallest = hits[0]
                failing = max(k for k in tried + [failing] if k < smallest and not success[k])
    if progress is not None:
        progress(1.0)
    levels = tuple(sorted(logits))
    probabilities = torch.softmax(torch.stack([logits[k] for k in levels]).float(), dim=1).cpu()
    return LevelSweep(method, levels, probabilities, clean_prediction, attacked, targeted, smallest)


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
    FGSM's answer is exact; I-FGSM's succeeds while ``k - 1`` fails (see :func:`sweep_levels`,
    which computes it in batched passes).
    """
    return sweep_levels(model, x, method, label, target, max_levels, steps).smallest
