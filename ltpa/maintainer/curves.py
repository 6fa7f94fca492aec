"""The shipped FGSM curves, gathered by file from curves measured before the files were promoted.

Curves are cheapest to measure on the GPU right after training, on every seed's file under its run
name; which seed ships is decided later (ltpa.maintainer.selection). A curve belongs to a file, so
it is found by the file's sha256 and renamed to the id the file ships as (``ltpa zoo curves``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ltpa.robustness.results import check_results, curve_from, differences
from ltpa.zoo import read_manifest


def shipped_curves(zoo: Path, measured: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One curve per shipped file, in manifest order, from results measured under any name.

    Args:
        zoo: the zoo folder (its manifest names the files and their sha256).
        measured: robustness results (``ltpa robustness`` output); a file measured in several
            takes the curve of the last one. The first sets the table's header; the others must
            attack the same images the same way (their image folder may be elsewhere: a curve
            from another folder, device or precision names it).

    Returns:
        The results dict of the shipped zoo.

    Raises:
        ValueError: when the results cannot share a table, or a shipped file has no curve.
    """
    measured = [check_results(results) for results in measured]
    if not measured:
        raise ValueError("no robustness results given")
    base = measured[0]
    by_file: dict[str, dict[str, Any]] = {}
    for results in measured:
        differing = differences(base, results, same_source=False)
        if differing:
            raise ValueError(f"these results cannot share a table: they differ in {', '.join(differing)}")
        for model in results["models"]:
            by_file[model.get("sha256")] = curve_from(base, results, model)
    cards = read_manifest(zoo)["models"]
    missing = [card["id"] for card in cards if card["sha256"] not in by_file]
    if missing:
        raise ValueError(f"no curve measured on the shipped file of {', '.join(missing)} "
                         f"(curves are matched by sha256)")
    curves = [{**by_file[card["sha256"]], "id": card["id"], "registry_name": card["registry_name"],
               "paper_name": card["paper_name"], "test_error": card["test_error"]} for card in cards]
    return {**base, "models": curves}
