"""Attention against its baseline: every attention run set beside the plain run of the same
backbone and recipe (every training setting that changes what is learnt, and the storage
precision), seed by seed.

The paper's central claim is that attention beats the plain network trained the same way. One
seed per model cannot show that when seeds of one recipe differ by a few tenths of a point, so the
comparison pools every run whose card we have: the shipped zoo and the repeats and ablations kept
under ``reproduction/`` beside it (cards only; their weights are not shipped).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from ltpa.checkpoint import upgrade_model_kwargs
from ltpa.maintainer.docs import markdown_table
from ltpa.maintainer.recipes import recipe_config
from ltpa.registry import default_arguments, get_spec, list_models
from ltpa.training import TrainConfig
from ltpa.zoo import read_manifest, zoo_dir

REPRODUCTION_DIR_NAME = "reproduction"
# The plain network each backbone's attention models are compared with.
BASELINE_OF_BACKBONE = {"vgg": "vgg", "resnet": "resnet164"}
# Model arguments that make a run a different variant from the registry default, with their labels.
VARIANT_LABELS = {
    ("tap_features", "residual"): "residual taps",
    ("dp_scale", "none"): "unscaled dp",
    ("normalisation", "sigmoid"): "sigmoid",
    # The deviation from the paper the zoo trains, in the words the app names such a model by.
    ("normalisation", "sigmoid_sum"): "sigmoid_sum normalisation",
    ("match", "project_g"): "g projected",
    # The deep supervision of the fast recipe (ltpa.recipe): a classifier on every stage.
    ("stage_classifiers", True): "stage classifiers",
}
# The TrainConfig settings that change what a run learns (not where, how fast or from which seed),
# with how a recipe label shows each; a run's recipe is these plus its storage precision.
RECIPE_SETTINGS = {
    "width": "width {:g}", "epochs": "{} epochs", "batch_size": "batch {}", "lr": "lr {:g}",
    "momentum": "momentum {:g}", "nesterov": "nesterov {}", "weight_decay": "weight decay {:g}",
    "label_smoothing": "label smoothing {:g}", "warmup": "warm-up {:g}",
    "final_lr_fraction": "final lr fraction {:g}", "pad": "pad {}", "cutout": "cutout {}",
    "qat": "QAT {}", "qat_epochs": "{} QAT epochs", "amp": "bf16 {}", "precision": "{}",
}
ZOO_RECIPE_LABEL = "zoo recipe"
Recipe = tuple[tuple[str, Any], ...]  # sorted (setting, value) pairs: hashable, comparable


@dataclass(frozen=True)
class Run:
    """One trained model's measured error and what it was trained as."""

    id: str
    registry_name: str
    variant: str  # "" for the registry default, else e.g. "residual taps"
    recipe: Recipe
    seed: int
    error: float
    # The variant of its backbone's baseline built with the same shared arguments (a depth-56
    # RN-att2 is set beside a depth-56 ResNet, dropout 0.3 beside dropout 0.3); "" for baselines.
    baseline_variant: str = ""


@dataclass(frozen=True)
class BaselineGap:
    """An attention model beside its baseline trained with the same recipe."""

    attention: str  # registry name
    variant: str
    baseline: str  # registry name
    recipe: Recipe
    attention_errors: dict[int, float]  # by seed
    baseline_errors: dict[int, float]  # by seed
    baseline_variant: str = ""

    @property
    def settings(self) -> dict[str, Any]:
        """The recipe as a dict of settings (width, epochs, batch_size, lr, ..., precision)."""
        return dict(self.recipe)

    @property
    def recipe_label(self) -> str:
        """How the recipe differs from the zoo recipe of the baseline ("zoo recipe": not at all)."""
        return recipe_label(self.recipe, self.baseline)

    @property
    def mean_gap(self) -> float | None:
        """Mean attention error minus mean baseline error (negative: attention is better)."""
        if not self.attention_errors or not self.baseline_errors:
            return None
        return statistics.fmean(self.attention_errors.values()) - statistics.fmean(
            self.baseline_errors.values())

    @property
    def seed_gaps(self) -> dict[int, float]:
        """Attention minus baseline error for every seed both were trained with."""
        return {seed: self.attention_errors[seed] - self.baseline_errors[seed]
                for seed in sorted(self.attention_errors) if seed in self.baseline_errors}

    @property
    def baseline_spread(self) -> float | None:
        """Largest minus smallest baseline error over its seeds (None with one seed)."""
        values = list(self.baseline_errors.values())
        return max(values) - min(values) if len(values) > 1 else None


def reproduction_dir(zoo: Path | None = None) -> Path:
    """Cards of runs that are not shipped: ``reproduction/`` beside the zoo folder (by default
    the shipped zoo, or $LTPA_ZOO)."""
    return (zoo or zoo_dir()).parent / REPRODUCTION_DIR_NAME


def read_cards(folder: Path) -> list[dict[str, Any]]:
    """The model cards in ``folder/cards/*.json`` (none when the folder does not exist); a card
    that is not valid JSON is skipped, so one damaged file does not hide the rest."""
    cards = []
    for path in sorted((folder / "cards").glob("*.json")):
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(card, dict):
            cards.append(card)
    return cards


def variant_of(registry_name: str, kwargs: dict[str, Any]) -> str:
    """A short label for the model arguments that differ from the registry default ("" for none):
    every one of them, so runs of different models are never pooled. Width is not one: it belongs
    to the recipe."""
    explicit = upgrade_model_kwargs(registry_name, kwargs)
    labels = []
    for key, default in default_arguments(registry_name).items():
        value = explicit.get(key, default)
        if key != "width" and value != default:
            labels.append(VARIANT_LABELS.get((key, value)) or f"{key} {value}")
    return ", ".join(labels)


def recipe_of(config: dict[str, Any], precision: str) -> Recipe:
    """The recipe of a run from its training configuration (settings a card written before they
    existed take their defaults, which are what those runs did) and its storage precision."""
    defaults = asdict(TrainConfig())
    values = {key: config.get(key, defaults.get(key)) for key in RECIPE_SETTINGS if key != "precision"}
    values["precision"] = precision
    return tuple(sorted(values.items()))


def zoo_recipe(model_id: str) -> Recipe | None:
    """The recipe the zoo trains ``model_id`` with (None when the zoo has no such recipe)."""
    try:
        config, precision = recipe_config(model_id, "", "")
    except KeyError:
        return None
    return recipe_of(asdict(config), precision)


def recipe_label(recipe: Recipe, model_id: str) -> str:
    """The settings in which ``recipe`` differs from the zoo's recipe for ``model_id``, in words."""
    reference = dict(zoo_recipe(model_id) or ())
    values = dict(recipe)
    differences = [_describe(key, values[key]) for key in RECIPE_SETTINGS
                   if key in values and values[key] != reference.get(key)
                   and not (key == "qat_epochs" and not values.get("qat"))]
    return ", ".join(differences) or ZOO_RECIPE_LABEL


def _describe(key: str, value: Any) -> str:
    try:
        return RECIPE_SETTINGS[key].format("none" if value == "" else value)
    except (TypeError, ValueError):  # a value of an unexpected type in a hand-edited card
        return f"{key} {value!r}"


def run_of(card: dict[str, Any]) -> Run | None:
    """The run a card describes, or None when it has no measured error or no known model."""
    name, error = card.get("registry_name"), card.get("test_error")
    if not isinstance(error, (int, float)):
        return None
    try:
        spec = get_spec(str(name))
    except ValueError:
        return None
    training = card.get("training") or {}
    kwargs = card.get("kwargs") or {}
    config = {"width": kwargs.get("width", 1.0), "epochs": training.get("epochs", 0),
              **(training.get("config") or {})}
    recipe = recipe_of(config, str(card.get("precision", "")))
    try:
        hash(recipe)
        seed = int(config.get("seed", 0))
    except (TypeError, ValueError):  # a damaged card: a list where a number belongs, say
        return None
    baseline = BASELINE_OF_BACKBONE[spec.backbone] if spec.attention else ""
    explicit = upgrade_model_kwargs(str(name), kwargs)
    shared = {key: explicit[key] for key in default_arguments(baseline) if key in explicit} \
        if baseline else {}
    return Run(
        id=str(card.get("id", name)),
        registry_name=str(name),
        variant=variant_of(str(name), kwargs),
        recipe=recipe,
        seed=seed,
        error=float(error),
        baseline_variant=variant_of(baseline, shared) if baseline else "",
    )


def baseline_gaps(cards: Iterable[dict[str, Any]]) -> list[BaselineGap]:
    """Each attention model and variant, for each recipe, beside its baseline's runs of that recipe
    built with the same shared model arguments (depth, dropout; attention-only ones such as
    tap_features do not apply to the baseline); ``baseline_errors`` is empty when there are none.
    A run listed twice (same model, variant, recipe and seed) counts once.

    The variant names every model argument off the registry default, the normalisation included,
    so a deviation from the paper's softmax (sigmoid_sum) is a group of its own, never pooled with
    the paper's model of the same registry name; its baseline is the same plain network (which
    has no attention maps to normalise)."""
    groups: dict[tuple[str, str, Recipe], dict[int, float]] = {}
    baseline_variants: dict[tuple[str, str, Recipe], str] = {}
    for run in filter(None, map(run_of, cards)):
        key = (run.registry_name, run.variant, run.recipe)
        groups.setdefault(key, {}).setdefault(run.seed, run.error)
        baseline_variants[key] = run.baseline_variant  # one per group: same model arguments
    gaps = []
    for (name, variant, recipe), errors in groups.items():
        spec = get_spec(name)
        if not spec.attention:
            continue
        baseline = BASELINE_OF_BACKBONE[spec.backbone]
        baseline_variant = baseline_variants[name, variant, recipe]
        baseline_errors = groups.get((baseline, baseline_variant, recipe), {})
        gaps.append(BaselineGap(name, variant, baseline, recipe, dict(sorted(errors.items())),
                                dict(sorted(baseline_errors.items())), baseline_variant))
    # For reading: by backbone (VGG first), the zoo recipe before the others; within one recipe
    # each model in registry order, its default form before its variants.
    backbones, models = list(BASELINE_OF_BACKBONE.values()), list_models()
    return sorted(gaps, key=lambda g: (backbones.index(g.baseline), g.recipe_label != ZOO_RECIPE_LABEL,
                                       g.recipe_label, models.index(g.attention), g.variant))


def _by_seed(values: dict[int, float], signed: bool = False) -> str:
    number = "{:+.2f}" if signed else "{:.2f}"
    return ", ".join(f"{number.format(v)} (seed {s})" for s, v in values.items()) or "—"


def gap_rows(gaps: Iterable[BaselineGap]) -> list[dict[str, Any]]:
    """One table row per gap, in the paper's notation, for display."""
    rows = []
    for gap in gaps:
        mean, spread = gap.mean_gap, gap.baseline_spread
        rows.append({
            "attention model": get_spec(gap.attention).paper_name
            + (f" ({gap.variant})" if gap.variant else ""),
            "baseline": get_spec(gap.baseline).paper_name
            + (f" ({gap.baseline_variant})" if gap.baseline_variant else ""),
            "recipe": gap.recipe_label,
            "attention error %": _by_seed(gap.attention_errors),
            "baseline error %": _by_seed(gap.baseline_errors),
            "mean gap (points)": None if mean is None else round(mean, 2),
            "gap per seed": _by_seed(gap.seed_gaps, signed=True),
            "baseline seed spread": None if spread is None else round(spread, 2),
        })
    return rows


def run_cards(zoo: Path | None = None) -> list[tuple[dict[str, Any], Path]]:
    """Every card we have, each with the folder its relative paths start from: the zoo's shipped
    cards (the zoo folder), then the cards in ``reproduction/`` beside it."""
    zoo = zoo or zoo_dir()
    reproduction = reproduction_dir(zoo)
    return ([(card, zoo) for card in read_manifest(zoo)["models"]]
            + [(card, reproduction) for card in read_cards(reproduction)])


def shipped_seed_errors(zoo: Path | None = None) -> dict[str, dict[int, float]]:
    """Each shipped card's test error by seed, over every card of the same model, variant and
    recipe (the shipped card's own error counts for its seed).

    Args:
        zoo: the zoo folder (default: the shipped zoo); ``reproduction/`` beside it is read too.

    Returns:
        ``{shipped id: {seed: test error}}``; a card without a measured error has none.
    """
    runs = [run for run in (run_of(card) for card, _ in run_cards(zoo)) if run is not None]
    shipped = read_manifest(zoo or zoo_dir())["models"]
    errors: dict[str, dict[int, float]] = {}
    for card in shipped:
        own = run_of(card)
        if own is None:
            continue
        same = [run for run in runs if (run.registry_name, run.variant, run.recipe)
                == (own.registry_name, own.variant, own.recipe)]
        seeds = {own.seed: own.error}
        for run in same:
            seeds.setdefault(run.seed, run.error)
        errors[card["id"]] = dict(sorted(seeds.items()))
    return errors


def zoo_gaps(zoo: Path | None = None) -> list[BaselineGap]:
    """The gaps over a zoo's shipped cards plus the cards in ``reproduction/`` beside it."""
    return baseline_gaps(card for card, _ in run_cards(zoo))


def gaps_markdown(gaps: Iterable[BaselineGap]) -> str:
    """The gap rows as a Markdown table (an empty cell where the page shows None)."""
    rows = gap_rows(gaps)
    if not rows:
        return "No attention model has a measured error beside a baseline."
    return markdown_table(rows, numeric=("mean gap (points)", "baseline seed spread"),
                          formats={"mean gap (points)": "{:+.2f}", "baseline seed spread": "{:.2f}"})
