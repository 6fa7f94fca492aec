"""The paper's design space: what the registry can build along the axes that tell models apart.

The axes are the backbone, the tapped stages, the head, the compatibility function and the
normalisation of the attention maps (:data:`MODEL_FIELDS`). :func:`design_space` lists every
registered model along them; :class:`ModelChoice` describes one shipped (zoo) model along them.
Given the shipped models, :func:`axis_options`, :func:`requested_axes` and :func:`nearest_model`
say what a user may ask for and which shipped model is the closest to it, and :func:`design_name`
names any point in the paper's notation. The app's model picker is a thin layer over this module;
nothing here needs the app.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ltpa.layers.attention import NORMALISATIONS, normalisation_names
from ltpa.registry import get_spec, list_models

# The axes that tell models apart, in the order a picker asks for them: the paper's design space
# (backbone, the tapped stages, head, compatibility), then how the attention maps are normalised,
# where the zoo also ships a deviation from the paper.
MODEL_FIELDS = ("backbone", "attention_kind", "head", "compatibility", "normalisation")
# The axes only attention models have (None for the baselines).
ATTENTION_FIELDS = ("head", "compatibility", "normalisation")
# The paper's normalisation: its reported errors are for models with it.
PAPER_NORMALISATION = "softmax"
# The normalisations always offered: the paper's and the deviation the zoo trains. The layers know
# others (sigmoid, a popular port's): one is offered only when a shipped model has it, so a picker
# does not advertise variants nobody trained here.
OFFERED_NORMALISATIONS = ("softmax", "sigmoid_sum")
# How the backbones are written in names of values (``design_name``) and in the app's notices.
BACKBONE_LABELS = {"vgg": "VGG", "resnet": "ResNet"}


def attention_kind_of(attention: bool, levels: int, gap: bool) -> str:
    """The tapped stages of a model as one value.

    Args:
        attention: whether the model has attention estimators.
        levels: how many stages are tapped (0 for baselines).
        gap: whether a baseline ends in global average pooling (VGG-GAP).

    Returns:
        ``attN`` for an attention model with N tapped stages, ``gap`` for a global-average-pooling
        baseline, ``none`` for a plain baseline.
    """
    return f"att{levels}" if attention else ("gap" if gap else "none")


def with_normalisation(name: str, normalisation: str | None) -> str:
    """A model's paper name, with its normalisation named when it is not the paper's softmax.

    Args:
        name: the paper name, e.g. ``(VGG-att3)-concat-pc``.
        normalisation: the model's normalisation (None for baselines).

    Returns:
        ``name``, or e.g. ``(VGG-att3)-concat-pc, sigmoid_sum normalisation``; one per tapped
        layer (``"softmax,softmax,sigmoid_sum"``) reads ``softmax / softmax / sigmoid_sum
        normalisation``; a name that already says its normalisation is not named twice.
    """
    if normalisation is None or normalisation in name:
        return name
    stages = normalisation_names(normalisation)
    if all(stage == PAPER_NORMALISATION for stage in stages):
        return name
    return f"{name}, {' / '.join(stages)} normalisation"


def short_value(field: str, value: str | None) -> str:
    """A value of an axis as names and notices write it (``att3``, ``VGG``, ``pc``).

    Args:
        field: one of ``MODEL_FIELDS``.
        value: its value.

    Returns:
        The value in words: backbones capitalised, the baselines' tapped stages spelt out.
    """
    if field == "backbone":
        return BACKBONE_LABELS.get(str(value), str(value))
    if field == "attention_kind" and value in ("none", "gap"):
        return "none (baseline)" if value == "none" else "global average pooling (VGG-GAP)"
    return str(value)


@dataclass(frozen=True)
class ModelChoice:
    """A zoo model described by the choices that tell models apart."""

    id: str
    paper_name: str
    backbone: str  # "vgg" or "resnet"
    attention: bool
    levels: int  # number of attention stages (0 for baselines)
    head: str | None  # "concat" / "indep", None for baselines
    compatibility: str | None  # "pc" / "dp", None for baselines
    normalisation: str | None  # "softmax" (the paper's), "sigmoid_sum", ...; None for baselines
    gap: bool  # global-average-pooling baseline (has CAM)
    test_error: float | None

    @property
    def attention_kind(self) -> str:
        """The tapped stages as one value: ``attN``, ``gap`` (VGG-GAP) or ``none``."""
        return attention_kind_of(self.attention, self.levels, self.gap)

    @property
    def label(self) -> str:
        """The paper name, naming the normalisation when it deviates from the paper's."""
        return with_normalisation(self.paper_name, self.normalisation)

    def axes(self) -> dict[str, str | None]:
        """The model's value of every axis of ``MODEL_FIELDS``."""
        return {field: getattr(self, field) for field in MODEL_FIELDS}


def model_choice(model_id: str, registry_name: str, kwargs: Mapping[str, Any] | None = None,
                 paper_name: str | None = None, test_error: float | None = None) -> ModelChoice:
    """The description of a zoo model along the axes, from the fields of its card.

    Args:
        model_id: the card's id.
        registry_name: the card's ``registry_name`` (a registered model).
        kwargs: the card's model arguments; its ``normalisation`` (default: the paper's softmax)
            is the normalisation axis of an attention model.
        paper_name: the card's own paper name; empty or None takes the registry's.
        test_error: the card's measured test error (%), None when not measured.

    Returns:
        The choice; baselines have no head, compatibility or normalisation (None).

    Raises:
        ValueError: for a registry name the registry does not know.
    """
    spec = get_spec(registry_name)
    kwargs = kwargs or {}
    return ModelChoice(
        id=model_id,
        paper_name=str(paper_name or spec.paper_name),
        backbone=spec.backbone,
        attention=spec.attention,
        levels=len(spec.fixed.get("taps", ())),
        head=spec.fixed.get("head") if spec.attention else None,
        compatibility=spec.fixed.get("compatibility") if spec.attention else None,
        normalisation=str(kwargs.get("normalisation", PAPER_NORMALISATION)) if spec.attention else None,
        gap=bool(spec.fixed.get("gap", False)),
        test_error=float(test_error) if test_error is not None else None,
    )


@dataclass(frozen=True)
class DesignPoint:
    """One registered model along the axes. Normalisation is not part of it: every attention model
    can be built with any normalisation (a ``create_model`` argument)."""

    registry_name: str
    paper_name: str
    backbone: str
    attention_kind: str
    head: str | None
    compatibility: str | None
    taps: tuple[int, ...]  # VGG layer numbers or ResNet stage numbers; empty for baselines


@functools.cache  # the registry is fixed at import, so the design space never changes
def design_space() -> tuple[DesignPoint, ...]:
    """Every model the registry can build.

    Returns:
        One point per registered model, in registry order.
    """
    points = []
    for name in list_models():
        spec = get_spec(name)
        taps = tuple(spec.fixed.get("taps", ()))
        points.append(DesignPoint(
            registry_name=name, paper_name=spec.paper_name, backbone=spec.backbone,
            attention_kind=attention_kind_of(spec.attention, len(taps), bool(spec.fixed.get("gap"))),
            head=spec.fixed.get("head") if spec.attention else None,
            compatibility=spec.fixed.get("compatibility") if spec.attention else None,
            taps=taps,
        ))
    return tuple(points)


def shipped_normalisations(choices: Iterable[ModelChoice]) -> set[str]:
    """The normalisations the shipped models have (baselines have none).

    Args:
        choices: the shipped models.

    Returns:
        Their normalisations, as a set.
    """
    return {c.normalisation for c in choices if c.normalisation}


def axis_options(field: str, axes: Mapping[str, str | None], shipped_normalisations: Iterable[str] = (),
                 attention_only: bool = False) -> list[str]:
    """The values of ``field`` the registry can build together with the axes asked before it.

    Args:
        field: one of ``MODEL_FIELDS``.
        axes: the chosen value of (at least) every axis before ``field``.
        shipped_normalisations: normalisations of shipped models, offered besides
            ``OFFERED_NORMALISATIONS``.
        attention_only: leave the baselines out.

    Returns:
        The values in registry order (normalisations in ``NORMALISATIONS`` order); empty when the
        axis does not apply (a baseline has no head, compatibility or normalisation).
    """
    above = MODEL_FIELDS[:MODEL_FIELDS.index(field)]
    points = [p for p in design_space()
              if all(getattr(p, f) == axes.get(f) for f in above) and (p.taps or not attention_only)]
    if field == "normalisation":
        if not any(p.taps for p in points):
            return []
        shipped = set(shipped_normalisations)
        return [n for n in NORMALISATIONS if n in OFFERED_NORMALISATIONS or n in shipped]
    return list(dict.fromkeys(getattr(p, field) for p in points if getattr(p, field) is not None))


def _stage_count(kind: str | None) -> int:
    return int(kind[3:]) if kind and kind.startswith("att") else 0


def _closest_value(field: str, wanted: str | None, options: list[str]) -> str:
    """The option to keep when ``wanted`` cannot be built with the axes above it."""
    if field == "attention_kind" and wanted is not None:
        # Stay an attention model (or a baseline), then keep the number of stages closest:
        # att3 on ResNet becomes att2, VGG-GAP becomes ResNet-164.
        return min(options, key=lambda kind: (kind.startswith("att") != wanted.startswith("att"),
                                              abs(_stage_count(kind) - _stage_count(wanted)), kind != wanted))
    return options[0]  # a baseline turned attention model: the registry's first (concat, pc, softmax)


def requested_axes(current: ModelChoice, field: str, value: str,
                   shipped_normalisations: Iterable[str] = ()) -> dict[str, str | None]:
    """What the user asks for by setting ``field`` to ``value`` on ``current``.

    The current model's other axes are each kept where the registry can build it with the new
    value and moved to the closest value it can build otherwise (att3 becomes att2 on ResNet; a
    baseline turned attention model gets concat, pc and softmax; an attention model turned
    baseline drops head, compatibility and normalisation).

    Args:
        current: the model shown now.
        field: the axis the user changed, one of ``MODEL_FIELDS``.
        value: its new value.
        shipped_normalisations: normalisations of shipped models (see :func:`axis_options`).

    Returns:
        A value (or None where the axis does not apply) for every axis of ``MODEL_FIELDS``.
    """
    axes = current.axes() | {field: value}
    for later in MODEL_FIELDS[MODEL_FIELDS.index(field) + 1:]:
        options = axis_options(later, axes, shipped_normalisations)
        if not options:
            axes[later] = None
        elif axes[later] not in options:
            axes[later] = _closest_value(later, axes[later], options)
    return axes


def nearest_model(choices: list[ModelChoice], current: ModelChoice, field: str, value: str) -> str:
    """The shipped model to show after the user set ``field`` to ``value`` on ``current``.

    Among ``choices``, the one that keeps the axes asked before ``field`` (the earlier the axis,
    the more it counts), then has ``value``, then shares as many of the other axes asked for
    (:func:`requested_axes`) as possible, so pc stays pc when the backbone changes. Remaining ties
    go to the earlier axes, then to ``current``, then to manifest order. When no shipped model has
    ``value`` with the axes above, the result is the nearest model without it (often ``current``).

    Args:
        choices: the shipped models, in manifest order.
        current: the model shown now.
        field: the axis the user changed, one of ``MODEL_FIELDS``.
        value: its new value.

    Returns:
        Its id (``current.id`` when ``choices`` is empty).
    """
    if not choices:
        return current.id
    wanted = requested_axes(current, field, value, shipped_normalisations(choices))
    index = MODEL_FIELDS.index(field)
    above, later = MODEL_FIELDS[:index], MODEL_FIELDS[index + 1:]

    def closeness(choice: ModelChoice) -> tuple:
        shared = tuple(getattr(choice, f) == wanted[f] for f in later)
        return (tuple(getattr(choice, f) == wanted[f] for f in above), getattr(choice, field) == value,
                sum(shared), shared, choice.id == current.id)

    return max(choices, key=closeness).id


def shipped_with(choices: Iterable[ModelChoice], axes: Mapping[str, str | None], field: str, value: str) -> bool:
    """Whether a shipped model has ``value`` of ``field`` together with the axes above it.

    Args:
        choices: the shipped models.
        axes: the chosen value of (at least) every axis before ``field``.
        field: one of ``MODEL_FIELDS``.
        value: the value asked about.

    Returns:
        True when one of ``choices`` has it.
    """
    above = MODEL_FIELDS[:MODEL_FIELDS.index(field)]
    return any(getattr(c, field) == value and all(getattr(c, f) == axes.get(f) for f in above) for c in choices)


def design_name(axes: Mapping[str, str | None]) -> str:
    """The paper's name of a point of the design space.

    Args:
        axes: a value (or None) for the axes of ``MODEL_FIELDS``.

    Returns:
        E.g. ``(VGG-att2)-indep-dp``, with a normalisation other than softmax named after it; for
        axes the registry cannot build, the values themselves joined by `` / ``.
    """
    point = next((p for p in design_space()
                  if all(getattr(p, f) == axes.get(f) for f in MODEL_FIELDS if f != "normalisation")), None)
    if point is None:  # not buildable: name the values themselves
        return " / ".join(short_value(f, v) for f, v in axes.items() if v is not None)
    return with_normalisation(point.paper_name, axes.get("normalisation"))
