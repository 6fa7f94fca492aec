"""Robustness results files: the JSON format, its check, CSV rows, merging and writing.

``write_results`` writes JSON + CSV, and an HTML figure (``ltpa.viz.robustness_figure``) where
Plotly is importable (the GPU machine has none); ``load_results`` reads them back.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ltpa.attacks import levels_to_epsilon
from ltpa.zoo import ASSETS_DIR

RESULTS_FORMAT = "ltpa-robustness/1"
# The shipped curves: assets/robustness in a clone, the package data in an installed ltpa.
SHIPPED_DIR = ASSETS_DIR / "robustness"
RESULTS_JSON = "robustness.json"
RESULTS_CSV = "robustness.csv"
RESULTS_HTML = "robustness.html"
DEFINITIONS = {
    "accuracy": "share of all test images whose prediction on the attacked image is the true label",
    "fooling_rate": (
        "among the test images classified correctly without attack, the share whose prediction "
        "on the attacked image differs from that clean (= true) prediction"
    ),
    "epsilon": "L-inf bound of the perturbation in grey levels: k means k/255 in pixel space [0, 1]",
}
# The attention shift thresholds each map by keeping its top quarter of positions (masks' default
# for the ``top`` rule): same-size masks, so their IoU measures only where attention sits.


def results_csv(results: dict[str, Any]) -> str:
    """One CSV row per model and epsilon.

    Args:
        results: a robustness results dict.

    Returns:
        The CSV text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "paper_name", "attention", "attack", "epsilon_255", "epsilon",
                     "accuracy", "fooling_rate", "correct", "fooled", "n_images", "n_clean_correct"])
    for model in results["models"]:
        for index, k in enumerate(results["levels"]):
            writer.writerow([
                model["id"], model.get("paper_name", ""), model.get("attention", ""),
                results["attack"], k, f"{levels_to_epsilon(k):.6f}",
                f"{model['accuracy'][index]:.4f}", f"{model['fooling_rate'][index]:.4f}",
                model["correct"][index], model["fooled"][index], model["n_images"],
                model["n_clean_correct"],
            ])
    return buffer.getvalue()


def check_results(results: Any) -> dict[str, Any]:
    """Check that a value looks like a robustness results dict.

    Args:
        results: the parsed JSON.

    Returns:
        ``results`` unchanged.

    Raises:
        ValueError: saying what is missing or inconsistent.
    """
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"not an ltpa robustness results file (expected format {RESULTS_FORMAT!r})")
    levels = results.get("levels")
    if not isinstance(levels, list) or not isinstance(results.get("models"), list):
        raise ValueError("robustness results need 'levels' and 'models' lists")
    for model in results["models"]:
        for key in ("accuracy", "fooling_rate"):
            if len(model.get(key, [])) != len(levels):
                raise ValueError(f"model {model.get('id')!r}: {key} has not one value per epsilon")
    return results


# What two results files must share for their curves to sit in one table.
_COMPARABLE = ("format", "attack", "steps", "label", "levels", "batch_size")


def differences(base: dict[str, Any], other: dict[str, Any], same_source: bool = True) -> list[str]:
    """What keeps the curves of two results files out of one table (empty: nothing).

    Args:
        base: results.
        other: results to set beside them.
        same_source: whether the image folder's path must match too (off when the same images
            were unpacked elsewhere, e.g. on another machine).

    Returns:
        The settings and dataset fields that differ.
    """
    differing = [key for key in _COMPARABLE if base.get(key) != other.get(key)]
    for key in ("source", "n_images", "limit", "class_names"):
        if (key != "source" or same_source) and base["dataset"].get(key) != other["dataset"].get(key):
            differing.append(f"dataset {key}")
    return differing


def curve_from(base: dict[str, Any], results: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """A curve of ``results`` as it sits among ``base``'s: a device, precision or image folder other
    than ``base``'s is named in the curve itself."""
    model = dict(model)
    # A curve may already name its own (from an earlier merge); else it is its file's.
    own = {key: model.get(key, results.get(key)) for key in ("device", "precision")}
    own["source"] = model.get("source", results["dataset"].get("source"))
    header = {"device": base.get("device"), "precision": base.get("precision"),
              "source": base["dataset"].get("source")}
    for key, value in own.items():
        if value != header[key]:
            model[key] = value
        else:
            model.pop(key, None)
    return model


def merge_results(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the curves of ``update`` added, a model measured in both taking ``update``'s
    (e.g. after retraining it).

    Both must attack the same images the same way; a curve measured on another device or in
    another precision than ``base`` says so in its own ``device`` and ``precision``.

    Args:
        base: the results already there.
        update: the new results.

    Returns:
        The merged results dict.

    Raises:
        ValueError: naming what differs between the two.
    """
    check_results(base)
    check_results(update)
    differing = differences(base, update)
    if differing:
        raise ValueError(f"these results cannot share a table: they differ in {', '.join(differing)}")
    curves = {model["id"]: model for model in base["models"]}
    for model in update["models"]:
        curves[model["id"]] = curve_from(base, update, model)
    return {**base, "models": list(curves.values())}


def write_results(results: dict[str, Any], out_dir: str | Path, figure: bool = True) -> dict[str, Path | str]:
    """Write ``robustness.json`` and ``robustness.csv``, and ``robustness.html`` when Plotly is
    importable and ``figure`` is set.

    Args:
        results: a robustness results dict.
        out_dir: the folder (created).
        figure: whether to write the HTML figure.

    Returns:
        The paths by kind (``json``, ``csv``, ``html``), plus a ``note`` when the figure was skipped.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | str] = {}
    written["json"] = out / RESULTS_JSON
    written["json"].write_text(json.dumps(results, indent=1) + "\n")
    written["csv"] = out / RESULTS_CSV
    written["csv"].write_text(results_csv(results))
    if figure:
        try:
            from ltpa.viz import robustness_figure

            fig = robustness_figure(results)
        except ImportError:
            written["note"] = "plotly is not installed here: the HTML figure was skipped (JSON/CSV written)"
        else:
            written["html"] = out / RESULTS_HTML
            fig.write_html(str(written["html"]), include_plotlyjs="cdn")
    return written


def load_results(path: str | Path | None = None) -> dict[str, Any] | None:
    """Robustness results from a JSON file or a folder holding ``robustness.json``.

    Args:
        path: the file or folder (default: the shipped ``assets/robustness``).

    Returns:
        The results dict, or None when there is no file.

    Raises:
        ValueError: the file is not valid JSON or not a results file.
    """
    path = Path(path) if path is not None else SHIPPED_DIR
    if path.is_dir():
        path = path / RESULTS_JSON
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    return check_results(results)

