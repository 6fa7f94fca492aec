"""The model registry: every model has a stable name; ``create_model`` builds it by name.

Names follow the paper's notation: ``vgg_att3_concat_pc`` is (VGG-att3)-concat-pc,
``resnet_att2_indep_dp`` is (RN-att2)-indep-dp; ``vgg``, ``vgg_gap`` and ``resnet164`` are the
baselines without attention. Keyword overrides (``width``, ``normalisation``, ``match``,
``dropout``, ``dp_scale`` for dp models, ``depth`` for ResNets and ``tap_features`` for RN-att)
change the built model and are stored in checkpoints.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ltpa.layers.attention import COMPATIBILITIES, DEFAULT_DP_SCALE
from ltpa.models.heads import HEADS
from ltpa.models.resnet import DEFAULT_TAP_FEATURES, ResNetAtt
from ltpa.models.vgg import VGGAtt
from ltpa.choices import check_choice

BACKBONES = ("vgg", "resnet")
VGG_LEVELS = {1: (13,), 2: (10, 13), 3: (7, 10, 13)}
RESNET_LEVELS = {2: (2, 3)}


@dataclass(frozen=True)
class ModelSpec:
    """What a registered name means: its family, fixed arguments and the paper's notation."""

    name: str
    paper_name: str
    backbone: str
    builder: Callable[..., nn.Module]
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def attention(self) -> bool:
        return bool(self.fixed.get("taps"))

    @property
    def cam_applies(self) -> bool:
        """Whether CAM applies: the model ends in global average pooling and one linear layer
        (VGG-GAP, and the plain ResNet-164)."""
        return bool(self.fixed.get("gap")) or (self.backbone == "resnet" and not self.attention)

    @property
    def overridable(self) -> tuple[str, ...]:
        params = inspect.signature(self.builder).parameters
        skip = {"num_classes", "gap", "taps", *self.fixed}
        if not self.attention:
            skip |= {"head", "compatibility", "normalisation", "match", "temperature",
                     "stage_classifiers"}
            if self.fixed.get("gap") or self.backbone == "resnet":
                skip.add("dropout")  # GAP heads have no dropout layer to configure
        # A recorded argument exists only for the models it applies to (dp_scale: dot product).
        skip |= {d.argument for d in RECORDED_DEFAULTS if not d.applies(self)}
        return tuple(p for p in params if p not in skip)


@dataclass(frozen=True)
class RecordedDefault:
    """A model argument whose default changed: ``create_model`` records the current default in
    every model it builds, so a checkpoint keeps its behaviour if the default changes again, and a
    file written before the argument existed is read with ``legacy``, what it was built with."""

    argument: str
    current: str
    legacy: str
    applies: Callable[[ModelSpec], bool]


RECORDED_DEFAULTS = (
    # The scaled dot product (see ltpa.layers.attention); the paper's form is unscaled.
    RecordedDefault("dp_scale", DEFAULT_DP_SCALE, "none",
                    lambda spec: spec.fixed.get("compatibility") == "dp"),
    # What RN-att taps attend over (see ltpa.models.resnet).
    RecordedDefault("tap_features", DEFAULT_TAP_FEATURES, "residual",
                    lambda spec: spec.attention and spec.backbone == "resnet"),
)


def recorded_defaults(name: str, legacy: bool = False) -> dict[str, str]:
    """The recorded arguments of model ``name`` with their current (or, with ``legacy``, their
    pre-existence) values."""
    spec = get_spec(name)
    return {d.argument: d.legacy if legacy else d.current for d in RECORDED_DEFAULTS if d.applies(spec)}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(attention: bool | None = None, backbone: str | None = None) -> list[str]:
    """Registered model names, optionally only those with (or without) attention or one backbone."""
    return [
        name
        for name, spec in _REGISTRY.items()
        if (attention is None or spec.attention == attention)
        and (backbone is None or spec.backbone == backbone)
    ]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name, or a ValueError listing the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None


def create_model(name: str, num_classes: int = 10, **overrides: Any) -> nn.Module:
    """Build a registered model; the result carries ``ltpa_config`` so checkpoints can rebuild it."""
    spec = get_spec(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer of at least 2; got {num_classes!r}")
    unknown = sorted(set(overrides) - set(spec.overridable))
    if unknown:
        raise ValueError(
            f"model {name!r} does not accept {', '.join(unknown)}; "
            f"it accepts: {', '.join(spec.overridable)}"
        )
    overrides = {**recorded_defaults(name), **overrides}
    model = spec.builder(num_classes=num_classes, **spec.fixed, **overrides)
    model.ltpa_config = {"name": name, "kwargs": {"num_classes": num_classes, **overrides}}
    return model


def default_arguments(name: str) -> dict[str, Any]:
    """The value ``create_model(name)`` gives every argument it accepts (``overridable``) when
    none is passed: the builder's default, or the recorded current default."""
    spec = get_spec(name)
    params = inspect.signature(spec.builder).parameters
    defaults = {key: params[key].default for key in spec.overridable}
    return {**defaults, **recorded_defaults(name)}


def read_argument_value(text: str) -> Any:
    """A model argument's value as written on a command line: JSON (numbers, true/false, lists)
    where it parses, else the text itself (``residual``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def write_argument_value(value: Any) -> str:
    """The command-line text that :func:`read_argument_value` reads back as ``value``."""
    if isinstance(value, str) and read_argument_value(value) == value:
        return value
    return json.dumps(value)


def model_name(backbone: str, levels: int = 0, head: str = "concat", compatibility: str = "pc") -> str:
    """The registered name for a backbone/levels/head/compatibility choice (levels 0: baseline)."""
    check_choice("backbone", backbone, BACKBONES)
    if levels == 0:
        return "vgg" if backbone == "vgg" else "resnet164"
    allowed = VGG_LEVELS if backbone == "vgg" else RESNET_LEVELS
    if levels not in allowed:
        raise ValueError(
            f"{backbone} supports attention levels {sorted(allowed)} only; got att{levels}"
        )
    check_choice("head", head, HEADS)
    check_choice("compatibility", compatibility, COMPATIBILITIES)
    return f"{backbone}_att{levels}_{head}_{compatibility}"


def _register_all() -> None:
    for levels, taps in VGG_LEVELS.items():
        for head in HEADS:
            for compat in COMPATIBILITIES:
                register_model(ModelSpec(
                    name=model_name("vgg", levels, head, compat),
                    paper_name=f"(VGG-att{levels})-{head}-{compat}",
                    backbone="vgg",
                    builder=VGGAtt,
                    fixed={"taps": taps, "head": head, "compatibility": compat},
                    description=(
                        f"VGG with attention at layer{'s' if len(taps) > 1 else ''} "
                        f"{'+'.join(map(str, taps))}"
                    ),
                ))
    for head in HEADS:
        for compat in COMPATIBILITIES:
            register_model(ModelSpec(
                name=model_name("resnet", 2, head, compat),
                paper_name=f"(RN-att2)-{head}-{compat}",
                backbone="resnet",
                builder=ResNetAtt,
                fixed={"taps": (2, 3), "head": head, "compatibility": compat},
                description="pre-activation ResNet-164 with attention at stages 2+3",
            ))
    register_model(ModelSpec(
        "vgg", "VGG", "vgg", VGGAtt, {"taps": ()},
        "baseline: the same VGG trunk, classifier on g, no attention",
    ))
    register_model(ModelSpec(
        "vgg_gap", "VGG-GAP", "vgg", VGGAtt, {"taps": (), "gap": True},
        "baseline: layers 1-13, global average pooling, linear (CAM)",
    ))
    register_model(ModelSpec(
        "resnet164", "ResNet-164", "resnet", ResNetAtt, {"taps": ()},
        "baseline: pre-activation ResNet-164, global average pooling, linear",
    ))


_register_all()
