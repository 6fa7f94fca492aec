"""The faithfulness scorecard over a dataset: the ``ltpa faithfulness`` command's library half.

``score_dataset`` scores every method of one model on uint8 images kept on the device (one batch
of maps, then one forward pass per chunk of perturbed images); ``run_faithfulness`` does it for
several models (zoo ids, checkpoint files or run folders) on one dataset; ``write_results`` writes
``faithfulness.json``, ``faithfulness.csv`` (one row per model and method),
``faithfulness_curves.csv``, ``faithfulness.md`` and, where Plotly is importable,
``faithfulness.html`` (the GPU machine has no Plotly: ``write_figure`` rebuilds it later from the
JSON). Metric definitions are in ``ltpa.faithfulness``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ltpa.faithfulness import (
    DEFAULT_CASCADE_STEPS,
    DEFAULT_REPLACEMENT,
    DEFAULT_STEPS,
    METRICS,
    REPLACEMENTS,
    check_metrics,
    check_replacement,
    method_maps,
    randomisation_check,
    removed_counts,
    resolve_methods,
    score_maps,
    trapezoid_area,
)

RESULTS_FORMAT = "ltpa-faithfulness/1"
RESULTS_JSON = "faithfulness.json"
RESULTS_CSV = "faithfulness.csv"
CURVES_CSV = "faithfulness_curves.csv"
RESULTS_MD = "faithfulness.md"
RESULTS_HTML = "faithfulness.html"
DEFAULT_RANDOMISATION_IMAGES = 500
FLOORS = ("random", "centre")


# ----------------------------------------------------------------------------- data
def load_flat_folder(folder: Path, image_size: int) -> Tensor:
    """Every image file directly inside ``folder``, decoded and resized as the app does
    (``ltpa.images.load_image``, ``ltpa.preprocess.image_to_input``): uint8 N x 3 x S x S."""
    from ltpa.data import IMAGE_SUFFIXES, DatasetError
    from ltpa.images import load_image
    from ltpa.preprocess import image_to_input

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{folder} has no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} "
                           "files, or class sub-folders holding them)")
    arrays = []
    for path in files:
        try:
            image = load_image(path.read_bytes()).array
        except ValueError as error:
            raise DatasetError(f"cannot read {path}: {error}") from None
        arrays.append((image_to_input(image, image_size)[0] * 255).round().to(torch.uint8))
    return torch.stack(arrays)


def load_images(data: str, class_names: Sequence[str], image_size: int,
                data_root: str | None = None) -> tuple[Tensor, str]:
    """The images to score (uint8 N x 3 x S x S) and where they came from.

    Args:
        data: a torchvision dataset name (its test split), an ImageFolder tree with ``test/``, a
            folder of class folders (some or all of the model's classes), or any folder of images.
        class_names: the model's classes.
        image_size: the model's input side.
        data_root: folder of the torchvision files.

    Returns:
        (images, description of the source).
    """
    from ltpa.data import TORCHVISION_DATASETS, DatasetError, load_test_split

    folder = Path(data)
    if data.lower() not in TORCHVISION_DATASETS and folder.is_dir() and not (folder / "test").is_dir():
        has_class_folders = any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
        if not has_class_folders:
            return load_flat_folder(folder, image_size), str(folder)
    if data.lower() not in TORCHVISION_DATASETS and not folder.exists():
        raise DatasetError(f"{data!r} is neither a dataset name ({', '.join(TORCHVISION_DATASETS)}) "
                           "nor an existing folder")
    test, source = load_test_split(data, list(class_names), image_size, data_root, allow_subset=True)
    return test.images, source


def fixed_subset(n_images: int, subset: int | None, seed: int = 0) -> list[int]:
    """Indices of a reproducible random subset of ``subset`` images (sorted; all when None)."""
    if subset is None or subset >= n_images:
        return list(range(n_images))
    if isinstance(subset, bool) or subset < 1:
        raise ValueError(f"--subset must be a positive number of images; got {subset}")
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(seed))[:subset]
    return sorted(order.tolist())


# ----------------------------------------------------------------------------- one model
class _Sums:
    """Running sums of per-image values, kept on the device (no sync per batch)."""

    def __init__(self) -> None:
        self.values: dict[str, Tensor] = {}
        self.squares: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}

    def add(self, key: str, values: Tensor) -> None:
        """Add a batch (B or B x K) of values, NaNs skipped."""
        finite = torch.isfinite(values)
        clean = torch.where(finite, values, torch.zeros_like(values)).double()
        for store, item in ((self.values, clean.sum(0)), (self.squares, clean.pow(2).sum(0)),
                            (self.counts, finite.sum(0))):
            store[key] = store[key] + item if key in store else item

    def mean(self, key: str) -> list[float] | float:
        count = self.counts[key].double()
        mean = (self.values[key] / count.clamp_min(1)).masked_fill(count == 0, float("nan"))
        return mean.tolist()

    def sem(self, key: str) -> float:
        """Standard error of the mean of a scalar quantity."""
        count = float(self.counts[key])
        if count < 2:
            return float("nan")
        mean = float(self.values[key]) / count
        variance = max(float(self.squares[key]) / count - mean * mean, 0.0) * count / (count - 1)
        return math.sqrt(variance / count)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_dataset(
    model: torch.nn.Module, images: Tensor, methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None, steps: int = DEFAULT_STEPS,
    replacement: str = DEFAULT_REPLACEMENT, batch_size: int = 100, forward_batch: int = 2048,
    amp: bool = False, seed: int = 0, randomisation_images: int = DEFAULT_RANDOMISATION_IMAGES,
    cascade_steps: int = DEFAULT_CASCADE_STEPS, image_indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The scorecard of one model on ``images`` (uint8 N x 3 x H x W on the model's device).

    Args:
        model: a pixel-space ltpa model in eval mode (only read, never changed).
        images: the images, uint8, on the model's device.
        methods: method names (``ltpa.faithfulness.METHODS`` or stage names); None: all that apply.
        metrics: ``ltpa.faithfulness.METRICS`` names; None: all.
        steps: points of each curve beyond the clean image.
        replacement: what removed pixels become.
        batch_size: images per batch of maps.
        forward_batch: perturbed images per forward pass.
        amp: bf16 forwards of the perturbed images on CUDA (maps stay fp32).
        seed: fixes random maps, tie order, noise and re-initialisation.
        randomisation_images: how many of the images (the first ones) the randomisation check uses.
        cascade_steps: steps of the cascading re-initialisation.
        image_indices: dataset index of each image (default 0..N-1), for per-image seeds.

    Returns:
        Per method: mean curves, areas, confidence change and rank correlations; timing.
    """
    metrics = check_metrics(metrics)
    check_replacement(replacement)
    names = resolve_methods(model, methods)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"expected uint8 images N x 3 x H x W (N > 0); got {images.dtype} {tuple(images.shape)}")
    for label, value in (("batch size", batch_size), ("forward batch", forward_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"the {label} must be a positive integer; got {value!r}")
    indices = list(range(images.shape[0])) if image_indices is None else list(image_indices)
    device = images.device
    sums = _Sums()
    _synchronise(device)
    start = time.perf_counter()
    curve_metrics = [m for m in metrics if m != "randomisation"]
    if curve_metrics:
        for first in range(0, images.shape[0], batch_size):
            x = images[first:first + batch_size].float().div_(255)
            batch_indices = indices[first:first + batch_size]
            found = method_maps(model, x, names, image_indices=batch_indices, seed=seed)
            scores = score_maps(model, x, found.maps, found.classes, curve_metrics, steps, replacement,
                                forward_batch, amp, seed, batch_indices)
            for name in names:
                if name in scores.deletion:
                    sums.add(f"{name}.deletion", scores.deletion[name])
                    sums.add(f"{name}.deletion_auc", trapezoid_area(scores.deletion[name]))
                if name in scores.lerf:
                    sums.add(f"{name}.insertion", scores.insertion(name))
                    sums.add(f"{name}.insertion_auc", trapezoid_area(scores.lerf[name]))
                if name in scores.explanation_probability:
                    sums.add(f"{name}.average_drop", 100 * scores.average_drop(name))
                    sums.add(f"{name}.increase", 100 * scores.increase(name))
            sums.add("clean_probability", scores.clean_probability)
    _synchronise(device)
    curve_time = time.perf_counter() - start
    randomisation: dict[str, Any] | None = None
    if "randomisation" in metrics:
        count = min(randomisation_images, images.shape[0])
        start = time.perf_counter()
        for first in range(0, count, batch_size):
            x = images[first:min(first + batch_size, count)].float().div_(255)
            check = randomisation_check(model, x, names, cascade_steps=cascade_steps, seed=seed,
                                        image_indices=indices[first:first + x.shape[0]])
            for name in names:
                sums.add(f"{name}.rho", check.rho[name].T)  # B x steps
        _synchronise(device)
        randomisation = {"steps": check.steps, "layers_reset": check.layers_reset,
                         "total_layers": check.total_layers, "n_images": count,
                         "time_s": round(time.perf_counter() - start, 3)}
    result: dict[str, Any] = {
        "n_images": int(images.shape[0]), "methods": {}, "curve_time_s": round(curve_time, 3),
        "images_per_s": round(images.shape[0] / curve_time, 2) if curve_metrics and curve_time > 0 else None,
        "randomisation": randomisation,
    }
    if curve_metrics:
        result["mean_clean_probability"] = sums.mean("clean_probability")
    for name in names:
        entry: dict[str, Any] = {}
        for key in ("deletion", "insertion"):
            if f"{name}.{key}" in sums.values:
                entry[f"{key}_curve"] = sums.mean(f"{name}.{key}")
                entry[f"{key}_auc"] = sums.mean(f"{name}.{key}_auc")
                entry[f"{key}_auc_sem"] = sums.sem(f"{name}.{key}_auc")
        for key in ("average_drop", "increase"):
            if f"{name}.{key}" in sums.values:
                entry[key] = sums.mean(f"{name}.{key}")
        if f"{name}.rho" in sums.values:
            entry["rho"] = sums.mean(f"{name}.rho")
            # Correlations left out because a map was flat (all zeros after ReLU, say).
            expected = randomisation["n_images"] * len(randomisation["steps"])
            entry["rho_flat_maps"] = int(expected - int(sums.counts[f"{name}.rho"].sum()))
        result["methods"][name] = entry
    return result


def _model_info(loaded: Any) -> dict[str, Any]:
    from ltpa.registry import get_spec

    card = loaded.entry.card
    info: dict[str, Any] = {"registry_name": card.get("registry_name"), "sha256": card.get("sha256"),
                            "test_error": card.get("test_error")}
    try:
        spec = get_spec(card["registry_name"])
        info["paper_name"] = card.get("paper_name") or spec.paper_name
        info["attention"] = bool(spec.attention)
    except (KeyError, ValueError):
        info["paper_name"] = card.get("paper_name", loaded.entry.id)
        info["attention"] = bool(card.get("stages"))
    return info


def run_faithfulness(
    models: Sequence[str], data: str, methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None, subset: int | None = None, device: str | None = None,
    steps: int = DEFAULT_STEPS, replacement: str = DEFAULT_REPLACEMENT, batch_size: int = 100,
    forward_batch: int | None = None, amp: bool = False, seed: int = 0,
    randomisation_images: int = DEFAULT_RANDOMISATION_IMAGES,
    cascade_steps: int = DEFAULT_CASCADE_STEPS, data_root: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The scorecard of several models on one dataset, as the dict written to JSON.

    Args:
        models: zoo ids, checkpoint files or run folders (all must share classes and input size).
        data: see ``load_images``.
        methods, metrics, steps, replacement, batch_size, amp, seed, randomisation_images,
            cascade_steps: see ``score_dataset``.
        subset: score a fixed random subset of this many images (seeded by ``seed``).
        device: ``auto``, ``cuda``, ``cpu``... (``ltpa.device.get_device``).
        forward_batch: perturbed images per forward (default 4096 on CUDA, 512 elsewhere).
        data_root: folder of the torchvision files.
        log: called with one line per finished model.

    Returns:
        The results dict (``RESULTS_FORMAT``).
    """
    from ltpa.device import get_device
    from ltpa.inference import load_model_source

    if not models:
        raise ValueError("give at least one model (a zoo id, checkpoint file or run folder)")
    metrics = check_metrics(metrics)
    check_replacement(replacement)
    removed_counts(1, steps)  # checks steps
    target = get_device(device)
    forward_batch = forward_batch or (4096 if target.type == "cuda" else 512)
    loaded_models = [load_model_source(spec, device=target) for spec in models]  # fail early
    for loaded in loaded_models:  # and on methods that do not apply
        resolve_methods(loaded.model, methods)
    first = loaded_models[0]
    for loaded in loaded_models[1:]:
        if loaded.input_size != first.input_size:
            raise ValueError(f"{loaded.entry.id} takes {loaded.input_size}-pixel images, "
                             f"{first.entry.id} {first.input_size}: score them separately")
    load_start = time.perf_counter()
    images, source = load_images(data, first.class_names, first.input_size, data_root)
    indices = fixed_subset(images.shape[0], subset, seed)
    images = images[indices].to(target)
    load_time = time.perf_counter() - load_start
    if log:
        log(f"loaded {images.shape[0]} images from {source} in {load_time:.1f} s")
    scored = []
    for loaded in loaded_models:
        if target.type == "cuda":  # this process's own copy, so changing its layout is safe
            loaded.model.to(memory_format=torch.channels_last)
        if target.type == "cuda":  # untimed warm-up: lazy CUDA init and cuDNN kernel choice
            score_dataset(loaded.model, images[:batch_size], methods, [m for m in metrics if m != "randomisation"] or None,
                          steps, replacement, batch_size, forward_batch, amp, seed, 0, cascade_steps)
        result = score_dataset(loaded.model, images, methods, metrics, steps, replacement, batch_size,
                               forward_batch, amp, seed, randomisation_images, cascade_steps, indices)
        scored.append({"id": loaded.entry.id, **_model_info(loaded), **result})
        if log:
            speed = f"{result['images_per_s']:.0f} images/s" if result["images_per_s"] else "no curves"
            log(f"{loaded.entry.id}: {len(result['methods'])} methods, {speed}"
                + (f", randomisation {result['randomisation']['time_s']:.1f} s" if result["randomisation"] else ""))
    return {
        "format": RESULTS_FORMAT,
        "dataset": {"source": source, "n_images": int(images.shape[0]), "subset": subset, "seed": seed},
        "metrics": metrics, "steps": steps, "fractions": [k / steps for k in range(steps + 1)],
        "replacement": replacement, "replacement_description": REPLACEMENTS[replacement],
        "definitions": {m: METRICS[m] for m in metrics},
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else str(target),
        "precision": "fp32 maps, bf16 perturbed forwards" if amp and target.type == "cuda" else "fp32",
        "torch": torch.__version__.split("+")[0], "batch_size": batch_size,
        "forward_batch": forward_batch, "load_time_s": round(load_time, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": scored,
    }


# ----------------------------------------------------------------------------- files
def check_results(results: Any) -> dict[str, Any]:
    """``results`` if it looks like a faithfulness results dict, else a ValueError."""
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise ValueError(f"not a faithfulness results file (expected format {RESULTS_FORMAT!r})")
    if not isinstance(results.get("models"), list) or not isinstance(results.get("fractions"), list):
        raise ValueError("faithfulness results lack their models or curve fractions")
    return results


def load_results(path: str | Path) -> dict[str, Any]:
    """Results from a JSON file or a folder holding ``faithfulness.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no faithfulness results at {path}")
    try:
        return check_results(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


SCALAR_COLUMNS = ("deletion_auc", "insertion_auc", "average_drop", "increase")


def _rho_columns(model: dict[str, Any], entry: dict[str, Any]) -> dict[str, float | None]:
    rho = entry.get("rho")
    if not rho:
        return {"rho_top_layer": None, "rho_all_layers": None}
    return {"rho_top_layer": rho[0], "rho_all_layers": rho[-1]}


def results_csv(results: dict[str, Any]) -> str:
    """One row per model and method with every scalar metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["model", "method", *SCALAR_COLUMNS, "insertion_minus_deletion", "rho_top_layer", "rho_all_layers"]
    writer.writerow(header)
    for model in check_results(results)["models"]:
        for method, entry in model["methods"].items():
            gap = (entry["insertion_auc"] - entry["deletion_auc"]
                   if "insertion_auc" in entry and "deletion_auc" in entry else None)
            row = [model["id"], method, *(entry.get(c) for c in SCALAR_COLUMNS), gap,
                   *_rho_columns(model, entry).values()]
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buffer.getvalue()


def curves_csv(results: dict[str, Any]) -> str:
    """One row per model, method, curve and fraction."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "method", "curve", "fraction", "probability"])
    for model in check_results(results)["models"]:
        for method, entry in model["methods"].items():
            for curve in ("deletion", "insertion"):
                for fraction, value in zip(results["fractions"], entry.get(f"{curve}_curve", [])):
                    writer.writerow([model["id"], method, curve, f"{fraction:.6g}", f"{value:.6g}"])
    return buffer.getvalue()


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The Markdown tables of a results dict (one per model), for docs/faithfulness.md."""
    check_results(results)
    dataset = results["dataset"]
    lines = [
        f"{dataset['n_images']:,} images of {dataset['source']}, {results['steps']} steps per curve, "
        f"removed pixels replaced by {results['replacement']} ({results['replacement_description']}); "
        f"{results['device']}, {results['precision']}.",
        "",
    ]
    randomised = next((m["randomisation"] for m in results["models"] if m.get("randomisation")), None)
    header = ("| method | deletion AUC (lower better) | insertion AUC (higher better) | insertion − "
              "deletion | average drop % (lower) | increase % (higher) | ρ top layer re-init | "
              "ρ all layers re-init |")
    for model in results["models"]:
        name = model.get("paper_name") or model["id"]
        lines += [f"**{name}** (`{model['id']}`), mean target probability on the clean images "
                  f"{_cell(model.get('mean_clean_probability'))}", "", header,
                  "|---|" + "---:|" * 7]
        for method, entry in model["methods"].items():
            gap = (entry["insertion_auc"] - entry["deletion_auc"]
                   if "insertion_auc" in entry and "deletion_auc" in entry else None)
            rho = _rho_columns(model, entry)
            label = f"{method} (floor)" if method in FLOORS else method
            lines.append(
                f"| {label} | {_cell(entry.get('deletion_auc'))} | {_cell(entry.get('insertion_auc'))} | "
                f"{_cell(gap)} | {_cell(entry.get('average_drop'), 1)} | {_cell(entry.get('increase'), 1)} | "
                f"{_cell(rho['rho_top_layer'])} | {_cell(rho['rho_all_layers'])} |")
        lines.append("")
    if randomised:
        lines.append(f"Randomisation on the first {randomised['n_images']:,} images: ρ is Spearman's "
                     "rank correlation of each map with the same map after re-initialising the "
                     "top layer only, and after re-initialising every layer (cascading from the top).")
    return "\n".join(lines) + "\n"


def curves_figure(results: dict[str, Any]):  # -> plotly Figure (Plotly imported lazily)
    """Mean deletion and insertion curves, one row per model, one line per method (floors
    dotted). Raises ImportError where Plotly is missing (the GPU machine)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check_results(results)
    models = results["models"]
    titles = [f"{m.get('paper_name') or m['id']}: {curve}" for m in models for curve in ("deletion", "insertion")]
    fig = make_subplots(rows=len(models), cols=2, subplot_titles=titles, vertical_spacing=0.3 / max(1, len(models)))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    method_names = list(dict.fromkeys(name for m in models for name in m["methods"]))
    colours = {name: ("#7f7f7f" if name in FLOORS else palette[i % len(palette)]) for i, name in enumerate(method_names)}
    x = results["fractions"]
    for row, model in enumerate(models, start=1):
        for method, entry in model["methods"].items():
            for col, curve in ((1, "deletion"), (2, "insertion")):
                if f"{curve}_curve" not in entry:
                    continue
                area = entry[f"{curve}_auc"]
                fig.add_trace(go.Scatter(
                    x=x, y=entry[f"{curve}_curve"], mode="lines", name=method, legendgroup=method,
                    showlegend=row == 1 and col == 1,
                    line=dict(color=colours[method], dash="dot" if method in FLOORS else "solid"),
                    hovertemplate=f"{method}<br>fraction %{{x:.2f}}<br>probability %{{y:.3f}}<br>area {area:.3f}<extra></extra>",
                ), row=row, col=col)
            fig.update_xaxes(title_text="fraction removed" if col == 1 else "fraction revealed", row=row, col=col)
        fig.update_yaxes(title_text="target probability", range=[0, 1], row=row, col=1)
        fig.update_yaxes(range=[0, 1], row=row, col=2)
    fig.update_layout(
        title=f"Deletion and insertion on {results['dataset']['n_images']:,} images "
              f"(replacement: {results['replacement']}; dotted: floors)",
        height=320 * len(models) + 80, margin=dict(t=80, b=40), legend=dict(orientation="h", y=1.02 + 0.1 / len(models)),
    )
    return fig


def write_figure(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``faithfulness.html`` (Plotly must be installed); returns its path."""
    path = Path(out_dir) / RESULTS_HTML
    curves_figure(results).write_html(str(path), include_plotlyjs="cdn")
    return path


def write_results(results: dict[str, Any], out_dir: str | Path, figure: bool = True) -> dict[str, Path | str]:
    """Write the JSON, both CSVs, the Markdown tables and (where Plotly is importable and
    ``figure``) the HTML figure; returns the paths, plus a ``note`` when the figure was skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | str] = {
        "json": out / RESULTS_JSON, "csv": out / RESULTS_CSV, "curves": out / CURVES_CSV, "markdown": out / RESULTS_MD,
    }
    written["json"].write_text(json.dumps(results, indent=1) + "\n")
    written["csv"].write_text(results_csv(results))
    written["curves"].write_text(curves_csv(results))
    written["markdown"].write_text(results_markdown(results))
    if figure:
        try:
            written["html"] = write_figure(results, out)
        except ImportError:
            written["note"] = ("plotly is not installed here: the HTML figure was skipped (JSON, CSV and "
                               f"Markdown written); rebuild it elsewhere with `ltpa faithfulness --figure-from {written['json']}`")
    return written


# ----------------------------------------------------------------------------- one image
def image_scorecard(
    model: torch.nn.Module, x: Tensor, methods: Sequence[str], steps: int = DEFAULT_STEPS,
    replacement: str = DEFAULT_REPLACEMENT, cascade_steps: int = DEFAULT_CASCADE_STEPS, seed: int = 0,
) -> dict[str, Any]:
    """Everything the Faithfulness page shows for one image (``x``: 1 x 3 x H x W in [0, 1]).

    Args:
        model: a pixel-space ltpa model in eval mode (only read; the randomisation check works on
            a private copy).
        x: the image.
        methods: method names valid for the model (``ltpa.faithfulness.resolve_methods``).
        steps, replacement, cascade_steps, seed: as for ``score_dataset``.

    Returns:
        ``fractions``, the target ``class_index`` and its clean ``probability``; per method its
        ``map`` (H x W), ``deletion`` / ``insertion`` curves and areas, ``average_drop`` (%),
        ``increased``; and ``randomisation``: the re-initialised ``steps``, and per method the
        ``maps`` after each step and their Spearman ``rho`` with the trained map.
    """
    import numpy as np

    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got {tuple(x.shape)}")
    names = resolve_methods(model, methods)
    found = method_maps(model, x, names, seed=seed)
    scores = score_maps(model, x, found.maps, found.classes, ["deletion", "insertion", "confidence"],
                        steps, replacement, seed=seed)
    check = randomisation_check(model, x, names, found.classes, cascade_steps, seed, keep_maps=True)
    per_method: dict[str, Any] = {}
    for name in names:
        per_method[name] = {
            "map": found.maps[name][0].cpu().numpy().astype(np.float32),
            "deletion": scores.deletion[name][0].tolist(),
            "insertion": scores.insertion(name)[0].tolist(),
            "deletion_auc": float(trapezoid_area(scores.deletion[name])[0]),
            "insertion_auc": float(trapezoid_area(scores.lerf[name])[0]),
            "average_drop": float(100 * scores.average_drop(name)[0]),
            "increased": bool(scores.increase(name)[0] > 0),
            "randomised_maps": [m[0].cpu().numpy().astype(np.float32) for m in check.maps[name]],
            "rho": check.rho[name][:, 0].tolist(),
        }
    return {
        "fractions": [k / steps for k in range(steps + 1)], "class_index": int(found.classes[0]),
        "probability": float(scores.clean_probability[0]), "replacement": replacement,
        "methods": per_method, "randomisation_steps": check.steps,
        "layers_reset": check.layers_reset, "total_layers": check.total_layers,
    }


def image_curves_figure(card: dict[str, Any], methods: Sequence[str], curve: str, title: str):
    """One image's ``deletion`` or ``insertion`` curves of ``methods`` (Plotly, imported lazily)."""
    import plotly.graph_objects as go

    if curve not in ("deletion", "insertion"):
        raise ValueError(f"unknown curve {curve!r}; valid choices: deletion, insertion")
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for index, method in enumerate(methods):
        entry = card["methods"][method]
        fig.add_trace(go.Scatter(
            x=card["fractions"], y=entry[curve], mode="lines+markers",
            name=f"{method} (area {entry[f'{curve}_auc']:.3f})",
            line=dict(color="#7f7f7f" if method in FLOORS else palette[index % len(palette)],
                      dash="dot" if method in FLOORS else "solid"),
        ))
    fig.update_layout(title=title, height=320, margin=dict(t=50, b=40, l=50, r=10),
                      xaxis_title="fraction removed" if curve == "deletion" else "fraction revealed",
                      yaxis=dict(title="probability of the predicted class", range=[0, 1.02]),
                      legend=dict(orientation="h", y=-0.3))
    return fig
