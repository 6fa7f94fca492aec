"""The training logs of every run we have cards for: the zoo's and those in reproduction/ beside
it, one row each (epochs, last and lowest test error, the stored file's error, the lowest
attention entropy reached and the training time). ``ltpa zoo runs`` prints them; the app's
Models page draws their curves.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ltpa.maintainer.baselines import recipe_label, run_cards, run_of
from ltpa.maintainer.docs import markdown_table
from ltpa.registry import get_spec
from ltpa.training import error_percent


@dataclass(frozen=True)
class RunLog:
    """A run whose training log we have, with what it was trained as, in words."""

    id: str
    registry_name: str
    description: str  # e.g. "(RN-att2)-concat-pc · label smoothing 0" or "VGG · zoo recipe · seed 1"
    path: Path
    error: float  # the card's: measured on the stored file


def run_logs(zoo: Path | None = None) -> list[RunLog]:
    """The runs (shipped, then reproduction) whose card names a training log that exists inside
    the card's folder; a card without a measured error or a known model is left out, and a run id
    listed twice keeps its first card."""
    logs: dict[str, RunLog] = {}
    for card, folder in run_cards(zoo):
        run, log = run_of(card), card.get("log")
        if run is None or run.id in logs or not isinstance(log, str):
            continue
        path = (folder / log).resolve()
        # A card's log path is data: never follow it out of the card's own folder.
        if not path.is_relative_to(folder.resolve()) or not path.is_file():
            continue
        words = [get_spec(run.registry_name).paper_name + (f" ({run.variant})" if run.variant else ""),
                 recipe_label(run.recipe, run.registry_name)]
        if run.seed:
            words.append(f"seed {run.seed}")
        logs[run.id] = RunLog(run.id, run.registry_name, " · ".join(words), path, run.error)
    return list(logs.values())




def read_log_epochs(path: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a training log (``log.json`` as ``ltpa train`` writes it, or gzipped); raises
    ValueError naming the file when it cannot be read or is not such a log."""
    try:
        data = Path(path).read_bytes()
        if Path(path).name.endswith(".gz"):  # how the zoo keeps its logs (ltpa.maintainer.shipping)
            data = gzip.decompress(data)
        epochs = json.loads(data)["epochs"]
    except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
        raise ValueError(f"{path}: not a training log ({error})") from None
    if not isinstance(epochs, list) or not all(isinstance(row, dict) for row in epochs):
        raise ValueError(f"{path}: not a training log (epochs is not a list of rows)")
    return epochs


def run_summary(run: RunLog) -> dict[str, Any]:
    """A run's training log in one row: epochs, last and lowest logged test error, the stored
    file's error, the lowest attention entropy any stage reached (a collapse shows as a value
    near 0) and the training time. Raises ValueError for a log that is not one."""
    epochs = read_log_epochs(run.path)
    try:
        tested = [(row["epoch"], error_percent(row["test_acc"])) for row in epochs
                  if row.get("test_acc") is not None]
        entropies = [(value, stage, row["epoch"]) for row in epochs
                     for stage, value in (row.get("entropy") or {}).items()]
        seconds = sum(float(row.get("epoch_time_s") or 0.0) for row in epochs)
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{run.path}: not a training log ({error})") from None
    lowest_error = min(tested, key=lambda pair: pair[1]) if tested else None
    lowest = min(entropies) if entropies else None
    return {
        "id": run.id,
        "run": run.description,
        "epochs": len(epochs),
        "last test error %": tested[-1][1] if tested else None,
        "lowest test error %": None if lowest_error is None
        else f"{lowest_error[1]:.2f} (epoch {lowest_error[0]})",
        "stored file error %": run.error,
        "lowest attention entropy": None if lowest is None
        else f"{lowest[0]:.2f} ({lowest[1]}, epoch {lowest[2]})",
        "training min": seconds / 60.0,
    }


def runs_markdown(runs: Iterable[RunLog]) -> str:
    """One row per run (:func:`run_summary`) as a Markdown table; an unreadable log is a row that
    says so."""
    rows = []
    for run in runs:
        try:
            rows.append(run_summary(run))
        except ValueError as error:
            rows.append({"id": run.id, "run": f"{run.description} (unreadable log: {error})",
                         "epochs": None, "last test error %": None, "lowest test error %": None,
                         "stored file error %": run.error, "lowest attention entropy": None,
                         "training min": None})
    if not rows:
        return "No run with a training log."
    return markdown_table(rows, numeric=("epochs", "last test error %", "stored file error %",
                                         "training min"),
                          formats={"last test error %": "{:.2f}", "stored file error %": "{:.2f}",
                                   "training min": "{:.1f}"})
