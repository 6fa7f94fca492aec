"""Which seed of a recipe the zoo ships: chosen on the validation split by a rule the card records.

The earlier zoo shipped the best seed on the test set (its cards say so in ``promotion_note``),
which makes the shipped error optimistic. A card shipped under a rule carries ``selection``:

    {"rule": "lowest_validation_error", "metric": "...", "chosen": RUN_ID,
     "candidates": {RUN_ID: validation error in %, ...}}

``RUN_ID`` are the runs' names (``trained_as`` of the shipped card; the other seeds' cards are kept
in the reproduction folder under those ids), so anyone can check that the rule, applied to the
recorded errors, picks the shipped run, and that every candidate's card still says the same.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

SELECTION_KEY = "selection"
# rule -> what it does, in words (kept on the card beside the rule's name)
SELECTION_RULES: dict[str, str] = {
    "lowest_validation_error": "the seed with the lowest validation error (ties: the lower seed)",
    "median_validation_error": "the seed with the median validation error (an even count: the lower "
                               "of the two middle ones; ties: the lower seed)",
}
METRIC = ("error on the fixed validation split of the training images, in %, with mirror-image "
          "test-time augmentation where the run logged it")


def validation_error(record: Mapping[str, Any]) -> float | None:
    """A run's final validation error in % (with flip TTA where logged), from its card
    (``validation_error_flip`` / ``validation_error``, or ``metrics`` as checkpoints hold them) or
    its log (the last epoch's ``val_acc_flip`` / ``val_acc``); None when it has none."""
    sources = [record, record.get("metrics") or {}]
    for source in sources:
        for key in ("validation_error_flip", "validation_error"):
            value = source.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
    epochs = record.get("epochs") or []
    last = epochs[-1] if epochs else {}
    for key in ("val_acc_flip", "val_acc"):
        value = last.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return round(100.0 * (1.0 - float(value)), 4)
    return None


def _seed_order(run_id: str) -> tuple[float, str]:
    # Order among equal errors: the run's seed (recorded in its id as ..._seedN; none is seed 0).
    tail = run_id.rsplit("_seed", 1)
    return (float(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0.0, run_id)


def choose(errors: Mapping[str, float | None], rule: str) -> str:
    """The run ``rule`` ships among ``errors`` (run id -> validation error in %).

    Args:
        errors: every candidate seed's validation error.
        rule: a key of ``SELECTION_RULES``.

    Returns:
        The chosen run id.

    Raises:
        ValueError: an unknown rule, no candidates, or a candidate without a validation error
            (the rule could not be checked), each named.
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; rules: {', '.join(SELECTION_RULES)}")
    if not errors:
        raise ValueError("no runs to choose from")
    missing = [run for run, error in errors.items() if error is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} record{'s' if len(missing) == 1 else ''} no validation "
                         "error: the rule cannot be checked (train with --validation)")
    ordered = sorted(errors, key=lambda run: (errors[run], *_seed_order(run)))
    return ordered[0] if rule == "lowest_validation_error" else ordered[(len(ordered) - 1) // 2]


def selection_record(errors: Mapping[str, float | None], rule: str) -> dict[str, Any]:
    """The ``selection`` section of the card of the run ``rule`` chooses (see the module doc)."""
    chosen = choose(errors, rule)
    return {"rule": rule, "rule_text": SELECTION_RULES[rule], "metric": METRIC, "chosen": chosen,
            "candidates": {run: round(float(error), 4) for run, error in errors.items()}}


def selection_problems(card: Mapping[str, Any], kept: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why a shipped card's recorded selection cannot be confirmed (empty when it can, or when
    the card records none: cards shipped before rules existed say in ``promotion_note`` how
    they were chosen).

    Args:
        card: a shipped zoo card.
        kept: the reproduction folder's cards (the other seeds are looked up there by id).

    Returns:
        One line per problem, naming the card.
    """
    record = card.get(SELECTION_KEY)
    if record is None:
        return []
    name = f"zoo card {card.get('id')!r}"
    if not isinstance(record, Mapping) or not isinstance(record.get("candidates"), Mapping):
        return [f"{name}: its selection record is malformed (it needs a rule and candidates)"]
    rule, candidates = record.get("rule"), dict(record["candidates"])
    if rule not in SELECTION_RULES:
        return [f"{name}: unknown selection rule {rule!r} (rules: {', '.join(SELECTION_RULES)})"]
    problems = []
    shipped_run = card.get("trained_as") or card.get("id")
    by_id = {c.get("id"): c for c in kept}
    for run, recorded in candidates.items():
        source = card if run == shipped_run else by_id.get(run)
        if source is None:
            problems.append(f"{name}: the card of seed run {run!r}, a candidate of its selection, is missing "
                            "from the reproduction folder")
            continue
        actual = validation_error(source)
        if actual is None:
            problems.append(f"{name}: {run!r} records no validation error, so its selection cannot be checked")
        elif not isinstance(recorded, (int, float)) or abs(actual - float(recorded)) > 1e-3:
            problems.append(f"{name}: {run!r} has validation error {actual:g}% in its card, "
                            f"{recorded!r} in the selection")
    if shipped_run not in candidates:
        problems.append(f"{name}: the shipped run {shipped_run!r} is not among its selection's candidates")
    if problems:
        return problems
    chosen = choose(candidates, rule)
    if chosen != shipped_run or record.get("chosen") != shipped_run:
        problems.append(f"{name}: its rule ({rule}) picks {chosen!r}, but {shipped_run!r} is shipped")
    return problems
