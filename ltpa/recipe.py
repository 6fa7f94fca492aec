"""The fast training recipe ``ltpa train`` uses by default, per backbone family.

A recipe is a set of :class:`~ltpa.training.TrainConfig` fields. ``recipe_for(model)`` gives the
settings a run of ``model`` starts from; ``ltpa train`` then applies the flags given on the command
line on top (``--recipe none`` starts from ``TrainConfig``'s plain defaults instead).

What the recipe holds, and why (measurements in docs/attention_levers.md):
- Short schedules at batch 512 with a one-cycle learning rate (lr 0.2, 15% warm-up), label
  smoothing and cutout, scored with mirror-image test-time augmentation.
- The 3x3 filters take orthogonalised steps (``optimizer="muon"``, relative step 0.02 at the
  peak; ``ltpa.optim``). VGGs: on the validation split it was ahead of plain SGD at every point
  of a 30-epoch schedule from epoch 10 on (2 seeds; relative steps 0.02, 0.05, 0.1 tried, 0.02
  best). ResNets, at the same 0.02 over their 40 epochs: RN-att2 8.68 and 8.24% validation error
  (flip) against 9.56 and 9.62% with SGD (2 seeds each), ResNet-164 9.22 and 8.96% against 9.78%
  (one SGD seed, without flip). Inside the captured step it costs little: a whole RN-att2 run
  alone had a median epoch of 2.838 s against 2.827 s with SGD (two machines).
- VGGs at width 0.5: at a fixed wall time more epochs of a narrower VGG beat fewer epochs of the
  0.7-wide one (30 epochs cost 0.1-0.2 points of validation error at 0.5 against 0.7, and each
  epoch costs half as much).
- The attention levers for attention models: per-stage classifiers (deep supervision) and an
  entropy term, weights 0.5 and 0.05. Together they are the only levers tried that made the first
  tapped stage (layer 7) point inside the object and brought every stage's entropy under 0.95.
  VGGs take half of those weights (0.25 and 0.025): on the validation split that was 0.14 points
  ahead (2 seeds, within the seed spread) with every stage's entropy still under 0.95; the same
  weights falling to zero over the run were not. ResNets keep the first weights: on RN-att2 the
  half weights with a ``sigmoid_sum`` last stage were level on the validation split (8.39%
  against 8.46% with flip, 2 seeds) and made its 16x16 map point inside the object less often.
  Baselines have no attention, so no levers. Twice the ResNets' deep supervision was level on
  validation, and no levers or half the weights were behind (3, 2 and 1 seeds).
- No model drops any of its descriptors (``dropout=0`` wherever the model has the setting; the
  models' default is the authors' 0.5), as ResNet-164 drops none of its pooled features. RN-att2:
  8.06% validation error with flip against 8.53% (3 seeds each, every seed ahead), at the price of
  its 16x16 map pointing inside the object less often (47-68% of the horses against 75-82%).
  VGG-att3: 6.29% with the recipe's scoring against 6.57% (3 seeds each, every seed ahead; 6.33%
  over six runs with an earlier call's), the VGG baseline 6.45% against 6.57%
  (docs/attention_levers.md Q).
- VGG attention models normalise their last tapped layer's map with ``sigmoid_sum`` (the earlier
  layers keep the paper's softmax; ``last_stage_sigmoid_sum``): under the entropy term that last
  8x8 softmax map had collapsed onto a few positions (entropy about 0.2); with ``sigmoid_sum`` it
  covers the object (entropy 0.5-0.6) at no cost in validation error (2 seeds, VGG-att3).
- Every model is scored with flip-and-translate test-time augmentation (``tta_translate=1``),
  after the last epoch only. VGGs: 0.04-0.42 points (mean 0.21) ahead of flip alone on the
  validation split in each of six 45-60-epoch runs. ResNets: ahead in eight of nine runs (RN-att2
  mean 0.13 points over seven, ResNet-164 0.28 and 0.34), for 1.5 s of a 170 s RN-att2 run.
- On CUDA each whole step (forward, backward, SGD update) is captured once as a CUDA graph and
  replayed (``step_graph``, ``ltpa.step_graph``): at these widths launching a step's kernels one
  by one leaves the GPU waiting. VGGs are also compiled (``torch.compile``, default mode: its fused
  kernels made the epoch 40% shorter than eager kernels); ResNets compile each residual block on
  its own (``compile_scope="blocks"``), since compiling the whole ResNet-164 takes two minutes.
  Both compile in a side process while their first epochs train eagerly (``compile_ahead``,
  ``ltpa.compiling``): a whole VGG-att3 run 109 s against 115 s on one freshly started H200,
  RN-att2 175 s against 185 s on another (both with SGD, before the ResNets took the
  filter step; with it, 161 s and 170 s on two more).
- Validation every 5 epochs and the run folder written at most every 30 s (plus the first and
  last epochs): at about a second an epoch, scoring and writing every epoch cost a tenth of a run.
  The translated views are scored after the last epoch only (``ltpa.training``).
- No compilation and no graphs on the CPU (they slow the start and gain little there).
"""
from __future__ import annotations

from typing import Any

from ltpa.registry import get_spec

RECIPE_NAMES = ("fast", "none")

_SHARED: dict[str, Any] = {"batch_size": 512, "lr": 0.2, "warmup": 0.15, "final_lr_fraction": 0.0,
                           "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                           "validation": 0.1, "validation_seed": 0, "flip": True, "tta_translate": 1,
                           "compile_mode": "default", "eval_every": 5, "save_interval_s": 30.0}
FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "vgg": {**_SHARED, "width": 0.5, "epochs": 60, "label_smoothing": 0.1, "cutout": 12,
            "optimizer": "muon", "filter_lr": 0.02},
    "resnet": {**_SHARED, "width": 1.0, "epochs": 40, "label_smoothing": 0.0, "cutout": 16,
               "optimizer": "muon", "filter_lr": 0.02, "compile_scope": "blocks"},
}
# The attention levers of the recipe (ltpa.training.training_loss); stage classifiers are a model
# setting of concat heads (an indep head has per-stage classifiers already).
ATTENTION_LEVERS: dict[str, dict[str, Any]] = {
    "vgg": {"aux_weight": 0.25, "entropy_weight": 0.025},
    "resnet": {"aux_weight": 0.5, "entropy_weight": 0.05},
}
# Families whose attention models normalise the last tapped layer with sigmoid_sum.
LAST_STAGE_SIGMOID_SUM = ("vgg",)
# Model settings the recipe gives every model that has them (``ModelSpec.overridable``): no dropout
# of the descriptors (the models' default is 0.5), as ResNet-164's classifier on the pooled
# features has none; without it RN-att2, VGG-att3 and VGG were ahead on validation
# (docs/attention_levers.md P, Q).
MODEL_OVERRIDES: dict[str, Any] = {"dropout": 0.0}


def last_stage_sigmoid_sum(stages: int) -> str:
    """The normalisation setting that gives the last of ``stages`` tapped layers ``sigmoid_sum``
    and the others the paper's softmax, e.g. ``"softmax,softmax,sigmoid_sum"`` for three."""
    return ",".join(["softmax"] * (stages - 1) + ["sigmoid_sum"])


def recipe_for(model: str, cuda: bool = True) -> dict[str, Any]:
    """The fast recipe's settings for a registered model.

    Args:
        model: a registered model name (see ``ltpa.registry.list_models``).
        cuda: whether the run is on CUDA (the recipe compiles the model and captures the step
            as a CUDA graph there only).

    Returns:
        ``TrainConfig`` fields, including ``overrides`` (model settings such as
        ``stage_classifiers``).

    Raises:
        ValueError: an unknown model name (the message lists the valid ones).
    """
    spec = get_spec(model)
    settings: dict[str, Any] = {**FAMILY_RECIPES[spec.backbone], "compile": cuda,
                              "compile_ahead": cuda, "step_graph": cuda, "overrides": {}}
    if spec.attention:
        settings.update(ATTENTION_LEVERS[spec.backbone])
        if spec.fixed.get("head") == "concat":
            settings["overrides"]["stage_classifiers"] = True
        if spec.backbone in LAST_STAGE_SIGMOID_SUM and "normalisation" not in spec.fixed:
            settings["overrides"]["normalisation"] = last_stage_sigmoid_sum(len(spec.fixed["taps"]))
    settings["overrides"].update({key: value for key, value in MODEL_OVERRIDES.items()
                                  if key in spec.overridable})
    return settings
