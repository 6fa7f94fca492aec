"""Markdown tables of robustness results (the README and docs tables, ``ltpa robustness --markdown``)."""
from __future__ import annotations

import math
from typing import Any

from ltpa.report import markdown_table
from ltpa.robustness.results import DEFINITIONS, check_results


def _percent(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def measured_on(results: dict[str, Any]) -> str:
    """Where the curves were measured.

    Args:
        results: a robustness results dict.

    Returns:
        The results' device, then any curves merged in from another device, precision or image
        folder, e.g. "NVIDIA H200; `resnet164` on cpu; `vgg` from /data/cifar10/test".
    """
    elsewhere: dict[str, list[str]] = {}
    for model in results["models"]:
        if model.get("device") or model.get("precision") or model.get("source"):
            where = ", ".join(str(model[k]) for k in ("device", "precision") if model.get(k))
            if model.get("source"):  # the same images, unpacked elsewhere
                where = " ".join(filter(None, [where and f"on {where},", f"from {model['source']}"]))
            else:
                where = f"on {where}"
            elsewhere.setdefault(where, []).append(f"`{model['id']}`")
    return str(results.get("device", "?")) + "".join(
        f"; {', '.join(ids)} {where}" for where, ids in elsewhere.items())


def results_markdown(results: dict[str, Any]) -> str:
    """Markdown tables (accuracy, then fooling rate, in %) of a results dict, for the README.

    Args:
        results: a robustness results dict.

    Returns:
        A sentence saying what was measured where, the two tables and the fooling rate's
        definition.
    """
    check_results(results)
    levels = results["levels"]
    columns = ["model", "attention"] + [f"{k}/255" for k in levels]
    dataset = results["dataset"]
    lines = [
        f"{results.get('attack_name', results['attack'])} ({results['label']} label) on "
        f"{dataset['n_images']} images of {dataset['source']}, {measured_on(results)}.",
        "",
    ]
    for key, title in (("accuracy", "Accuracy (%)"), ("fooling_rate", "Fooling rate (%)")):
        rows = []
        for model in results["models"]:
            name = model.get("paper_name") or model["id"]
            row = {"model": f"{name} (`{model['id']}`)",
                   "attention": "yes" if model.get("attention") else "no"}
            row.update({column: _percent(v) for column, v in zip(columns[2:], model[key])})
            rows.append(row)
        lines += [f"**{title}** against epsilon", "",
                  markdown_table(rows, numeric=columns[2:], columns=columns), ""]
    lines.append(f"Fooling rate: {DEFINITIONS['fooling_rate']}.")
    return "\n".join(lines) + "\n"
