"""The paper table: the shipped zoo against the paper's Table 1 (CIFAR-10 top-1 error), each
shipped model's file beside its seed mean and spread over every card of the same model and recipe.

One row per model the paper reports (:data:`ltpa.zoo.PAPER_CIFAR10_ERROR`, in the paper's order).
A shipped model is pooled with every card we have of the same model, variant and recipe (the
settings that change what is learnt, and the storage precision, as :mod:`ltpa.maintainer.baselines`
reads them from the card's training configuration), one error per seed: the shipped card plus the
repeats kept in ``reproduction/`` beside the zoo. A paper model the zoo does not ship is a row that
says so. A shipped card of a paper network that deviates from the paper's normalisation (softmax)
is a row of its own right after that network's, named as a deviation and with no paper figure.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltpa.design_space import with_normalisation
from ltpa.maintainer.baselines import Recipe, recipe_label, run_cards, run_of
from ltpa.maintainer.selection import SELECTION_KEY
from ltpa.registry import get_spec
from ltpa.zoo import PAPER_CIFAR10_ERROR, paper_cifar10_error, read_manifest, zoo_dir

NOT_SHIPPED = "not shipped"
NOT_IN_PAPER = "not in the paper"


@dataclass(frozen=True)
class PaperRow:
    """One model of the paper's Table 1 beside the zoo's equivalent (if the zoo ships one), or a
    shipped deviation from one of them (``deviation``), which has no paper figure."""

    registry_name: str
    paper_name: str  # a deviation's names its normalisation, e.g. "..., sigmoid_sum normalisation"
    paper_error: float | None  # None for a deviation: the paper reports no figure for it
    shipped_id: str | None = None  # None: the zoo does not ship this model
    shipped_error: float | None = None  # the shipped file's error (None: not measured)
    shipped_seed: int | None = None
    variant: str = ""  # model arguments that differ from the registry default ("" for none)
    recipe: Recipe = ()
    selection: str = ""  # how the shipped seed was chosen, from the manifest
    seed_errors: dict[int, float] = field(default_factory=dict)  # by seed, the shipped one included
    seed_cards: dict[int, str] = field(default_factory=dict)  # by seed, the id of the card it is from
    deviation: str = ""  # how the shipped model deviates from the paper's ("" for none)

    @property
    def shipped(self) -> bool:
        """Whether the zoo ships an equivalent of this paper model."""
        return self.shipped_id is not None

    @property
    def seeds(self) -> int:
        """How many seeds of the shipped model and recipe have a card with a measured error."""
        return len(self.seed_errors)

    @property
    def mean_error(self) -> float | None:
        """Mean test error over the seeds (None with none)."""
        return statistics.fmean(self.seed_errors.values()) if self.seed_errors else None

    @property
    def spread(self) -> float | None:
        """Largest minus smallest test error over the seeds (None with fewer than two)."""
        values = list(self.seed_errors.values())
        return max(values) - min(values) if len(values) > 1 else None

    @property
    def mean_minus_paper(self) -> float | None:
        """Our seed mean minus the paper's error, in points (negative: ours is lower); None
        without seeds or for a deviation (no paper figure)."""
        mean = self.mean_error
        return None if mean is None or self.paper_error is None else mean - self.paper_error

    @property
    def recipe_label(self) -> str:
        """How the shipped model's recipe differs from the zoo's ("zoo recipe": not at all)."""
        return recipe_label(self.recipe, self.registry_name) if self.recipe else ""


def _identity(card: dict[str, Any]) -> tuple[str, str, Recipe, int] | None:
    """Model, variant, recipe and seed of a card's run (None for a card no model matches); a card
    without a measured error still has one."""
    measured = isinstance(card.get("test_error"), (int, float))
    run = run_of(card if measured else {**card, "test_error": 0.0})
    return None if run is None else (run.registry_name, run.variant, run.recipe, run.seed)


def selection_of(card: dict[str, Any]) -> str:
    """How a shipped card's seed was chosen, in the manifest's words.

    Args:
        card: a shipped model card.

    Returns:
        Its selection rule (``ltpa.maintainer.selection``) or else its ``promotion_note``, after
        the run it was ``trained_as``; or that the manifest records no note.
    """
    note, run = card.get("promotion_note"), card.get("trained_as")
    source = f"run {run}: " if run else ""
    record = card.get(SELECTION_KEY)
    if isinstance(record, dict) and record.get("rule_text"):
        return (f"{source}{record['rule_text']}, on the validation split, among "
                f"{len(record.get('candidates') or {})} seeds")
    return f"{source}{note}" if note else f"{source}no note in the manifest on how it was chosen"


def paper_comparison(zoo: Path | None = None) -> list[PaperRow]:
    """The zoo against the paper's Table 1: one row per model the paper reports a CIFAR-10 error for.

    Args:
        zoo: the zoo folder (default: the shipped zoo, or ``$LTPA_ZOO``); its manifest's cards and
            the cards in ``reproduction/`` beside it are read.

    Returns:
        In the paper's order, one row per shipped card of each paper model (a registry name the
        zoo ships twice, as two variants, gives two rows), or one "not shipped" row for a paper
        model the zoo lacks; then one row per shipped card of that network with a normalisation
        other than the paper's softmax (``deviation`` set, ``paper_error`` None: never compared
        with the paper's figure). A shipped row's ``seed_errors`` pools every card of the same
        model, variant and recipe, one error per seed; the shipped card's error counts for its seed.

    Raises:
        ZooError: when the zoo is missing, empty or its manifest cannot be read.
    """
    cards = run_cards(zoo)
    pooled: dict[tuple[str, str, Recipe], dict[int, tuple[float, str]]] = {}
    for card, _ in cards:  # shipped cards first: their error is the one a duplicate seed keeps
        identity, error = _identity(card), card.get("test_error")
        if identity is None or not isinstance(error, (int, float)):
            continue
        # The variant names every model argument off the registry default, the normalisation
        # included: a deviation's seeds never pool with the paper model's.
        name, variant, recipe, seed = identity
        pooled.setdefault((name, variant, recipe), {}).setdefault(seed, (float(error), str(card.get("id"))))
    shipped = read_manifest(zoo or zoo_dir())["models"]
    rows = []
    for name, paper_error in PAPER_CIFAR10_ERROR.items():
        paper_name = get_spec(name).paper_name
        matches = [card for card in shipped if card.get("registry_name") == name]
        # The paper's figure is for its softmax model. A researcher reads each row as ours against
        # the model that figure is for, so a card with another normalisation never fills (or is
        # set against) the paper's row: that row says "not shipped" when only a deviation is.
        # The deviation is still a shipped model of this network, so rather than vanish from the
        # table it follows as a row of its own, named as a deviation, with no paper figure.
        ours: list[dict[str, Any]] = []
        deviations: list[dict[str, Any]] = []
        for card in matches:
            (ours if paper_cifar10_error(name, card.get("kwargs")) is not None else deviations).append(card)
        if not ours:
            rows.append(PaperRow(name, paper_name, paper_error))
        rows += [_shipped_row(card, name, paper_name, paper_error, pooled) for card in ours]
        for card in deviations:
            normalisation = str(card["kwargs"].get("normalisation"))  # a mapping: a deviation has one
            rows.append(_shipped_row(card, name, with_normalisation(paper_name, normalisation), None, pooled,
                                     deviation=f"{normalisation} normalisation"))
    return rows


def _shipped_row(card: dict[str, Any], name: str, paper_name: str, paper_error: float | None,
                 pooled: dict[tuple[str, str, Recipe], dict[int, tuple[float, str]]],
                 deviation: str = "") -> PaperRow:
    """The row of a shipped card, its seeds pooled by model, variant and recipe."""
    # A damaged card (a list where the seed belongs, say) is shown unpooled.
    _, variant, recipe, seed = _identity(card) or (name, "", (), None)
    seeds = dict(sorted(pooled.get((name, variant, recipe), {}).items())) if recipe else {}
    error = card.get("test_error")
    return PaperRow(
        registry_name=name, paper_name=paper_name, paper_error=paper_error,
        shipped_id=str(card["id"]),
        shipped_error=float(error) if isinstance(error, (int, float)) else None,
        shipped_seed=seed, variant=variant, recipe=recipe, selection=selection_of(card),
        seed_errors={s: e for s, (e, _) in seeds.items()},
        seed_cards={s: i for s, (_, i) in seeds.items()},
        deviation=deviation,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def paper_table_rows(rows: list[PaperRow]) -> list[dict[str, Any]]:
    """One display row per paper row (None where there is nothing to show), for the app and docs."""
    table = []
    for row in rows:
        settings = dict(row.recipe)
        table.append({
            "paper model": row.paper_name + (f" ({NOT_IN_PAPER})" if row.deviation else ""),
            "paper error %": row.paper_error,
            "shipped as": row.shipped_id or NOT_SHIPPED,
            "our build": (f"width {settings.get('width', 1.0):g}, {settings.get('precision') or 'fp32'}"
                          + (f", {row.variant}" if row.variant else "")) if row.shipped else None,
            "shipped file error %": row.shipped_error,
            "seed mean error %": _rounded(row.mean_error),
            "seed spread (max − min)": _rounded(row.spread),
            "seeds": row.seeds,
            "seed mean − paper": _rounded(row.mean_minus_paper),
            "errors by seed": ", ".join(f"{e:.2f} (seed {s})" for s, e in row.seed_errors.items())
            or (None if not row.shipped else "—"),
            "shipped seed": row.shipped_seed,
            "how the shipped seed was chosen": row.selection or None,
        })
    return table
