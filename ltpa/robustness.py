"""Robustness to adversarial perturbations: dataset curves, one image's attack, attention shift.

Curves (``sweep_model``, ``run_robustness``, the ``ltpa robustness`` command)
    For each epsilon ``k / 255`` every test image is attacked (FGSM by default, untargeted on its
    true label) and classified again.

    * **accuracy** at epsilon: share of all images whose adversarial prediction is their true
      label (at epsilon 0, the clean accuracy);
    * **fooling rate** at epsilon: among the images the model classifies correctly *without*
      attack, the share whose adversarial prediction differs from that clean (= true) prediction.
      Images wrong from the start are left out, so the fooling rate measures only what the attack
      broke; it is 0 at epsilon 0 by definition.

    The data are decoded once into a uint8 tensor kept on the device. FGSM's direction does not
    depend on epsilon, so each batch costs one forward-backward plus one forward per epsilon. The
    attack gradient is always computed in fp32; ``amp=True`` runs only the evaluation forwards
    under bf16 autocast (CUDA only).

One image (``attack_report``, ``confidence_curves``)
    Everything the Adversarial page shows: the adversarial image, probabilities before and after,
    every stage's attention before and after and how far it moved (``attention_shift``).

Results files: ``write_results`` (JSON + CSV, and an HTML figure when Plotly is importable; the
GPU machine has no Plotly), ``load_results``, ``results_markdown`` (the README tables).
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ltpa.attacks import (
    APP_MAX_LEVELS,
    ATTACK_NAMES,
    ATTACKS,
    DEFAULT_STEPS,
    attack,
    attack_direction,
    check_model,
    fgsm_from_direction,
    fgsm_levels_logits,
    iterative_fgsm,
    levels_to_epsilon,
)
from ltpa.masks import jaccard, make_mask
from ltpa.preprocess import PixelModel

RESULTS_FORMAT = "ltpa-robustness/1"
DEFAULT_LEVELS = (0, 1, 2, 4, 8, 16)
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "robustness"
RESULTS_JSON = "robustness.json"
RESULTS_CSV = "robustness.csv"
RESULTS_HTML = "robustness.html"
LABEL_MODES = ("true", "predicted")
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
SHIFT_RULE, SHIFT_VALUE = "top", 25.0


# --------------------------------------------------------------------------------------- levels
def parse_levels(text: str | Sequence[int]) -> list[int]:
    """Epsilons in grey levels from ``"0,1,2,4"`` (or a sequence): integers in [0, 255], sorted,
    without repeats; a ValueError says what is wrong."""
    items = text.split(",") if isinstance(text, str) else list(text)
    levels = []
    for item in items:
        try:
            value = float(str(item).strip())
        except ValueError:
            raise ValueError(f"epsilons are integers k (meaning k/255); got {str(item).strip()!r}") from None
        if not value.is_integer() or not 0 <= value <= 255:
            raise ValueError(f"epsilons are integers k in [0, 255] (meaning k/255); got {item}")
        levels.append(int(value))
    if not levels:
        raise ValueError("give at least one epsilon, e.g. --eps 0,1,2,4,8,16")
    return sorted(set(levels))


def check_levels(levels: int, max_levels: int = APP_MAX_LEVELS) -> int:
    """One epsilon in grey levels for the app: an integer in [0, max_levels]."""
    try:
        whole = not isinstance(levels, bool) and float(levels).is_integer()
    except (TypeError, ValueError):
        whole = False
    if not whole or not 0 <= levels <= max_levels:
        raise ValueError(f"epsilon must be a whole number of grey levels from 0 to {max_levels} "
                         f"(0/255 to {max_levels}/255); got {levels}")
    return int(levels)


# --------------------------------------------------------------------------------------- curves
@dataclass
class ModelCurve:
    """Accuracy and fooling rate of one model at each epsilon."""

    model_id: str
    levels: list[int]
    correct: list[int]  # images right at each epsilon
    fooled: list[int]  # clean-correct images whose prediction changed at each epsilon
    n_images: int
    n_clean_correct: int
    sweep_time_s: float
    info: dict[str, Any] = field(default_factory=dict)  # paper name, attention, test error...

    @property
    def accuracy(self) -> list[float]:
        return [c / self.n_images for c in self.correct]

    @property
    def fooling_rate(self) -> list[float]:
        if self.n_clean_correct == 0:
            return [float("nan")] * len(self.levels)
        return [f / self.n_clean_correct for f in self.fooled]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.model_id, **self.info,
            "accuracy": self.accuracy, "fooling_rate": self.fooling_rate,
            "correct": self.correct, "fooled": self.fooled,
            "n_images": self.n_images, "n_clean_correct": self.n_clean_correct,
            "sweep_time_s": round(self.sweep_time_s, 4),
            "images_per_s": round(self.n_images / self.sweep_time_s, 1) if self.sweep_time_s else None,
        }


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sweep_model(
    model: PixelModel,
    images: Tensor,
    labels: Tensor,
    levels: Sequence[int] = DEFAULT_LEVELS,
    batch_size: int = 500,
    method: str = "fgsm",
    steps: int = DEFAULT_STEPS,
    label_mode: str = "true",
    amp: bool = False,
    channels_last: bool = False,
    model_id: str = "",
) -> ModelCurve:
    """Accuracy and fooling rate of ``model`` under an attack at each epsilon ``k / 255``.

    ``images`` is uint8 N x 3 x H x W and ``labels`` int64 N, both on the model's device (see
    the module docstring for the definitions). ``label_mode`` ``"true"`` attacks the true label,
    ``"predicted"`` the clean prediction. The model is only read, never changed.
    """
    check_model(model)
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"unknown label mode {label_mode!r}; valid choices: {', '.join(LABEL_MODES)}")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images N x 3 x H x W; got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"expected one label per image ({images.shape[0]}); got shape {tuple(labels.shape)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer; got {batch_size!r}")
    if images.shape[0] == 0:
        raise ValueError("no images to attack")
    levels = parse_levels(levels)
    device = images.device
    use_amp = amp and device.type == "cuda"
    correct = torch.zeros(len(levels), dtype=torch.long, device=device)
    fooled = torch.zeros(len(levels), dtype=torch.long, device=device)
    clean_correct = torch.zeros((), dtype=torch.long, device=device)
    _synchronise(device)
    start_time = time.perf_counter()
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = labels[start:start + batch_size]
        attacked = y if label_mode == "true" else None
        clean_logits = None
        if method == "fgsm" and any(levels):
            # One fp32 gradient serves every epsilon (outside autocast on purpose).
            direction, clean_logits, _ = attack_direction(model, x, label=attacked)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            # The gradient pass already classified the clean images in fp32; under amp they are
            # classified again in bf16 so clean and attacked predictions share one precision.
            if clean_logits is None or use_amp:
                clean_logits = model(x).logits
            clean_prediction = clean_logits.argmax(dim=1)
            right = clean_prediction == y
            clean_correct += right.sum()
            for index, k in enumerate(levels):
                if k == 0:
                    prediction = clean_prediction
                else:
                    if method == "fgsm":
                        adversarial = fgsm_from_direction(x, direction, levels_to_epsilon(k))
                    else:
                        with torch.autocast("cuda", enabled=False):
                            adversarial = iterative_fgsm(model, x, levels_to_epsilon(k), steps,
                                                         label=attacked)
                    prediction = model(adversarial).logits.argmax(dim=1)
                correct[index] += (prediction == y).sum()
                fooled[index] += (right & (prediction != clean_prediction)).sum()
    _synchronise(device)
    elapsed = time.perf_counter() - start_time
    return ModelCurve(model_id, levels, correct.tolist(), fooled.tolist(), int(images.shape[0]),
                      int(clean_correct), elapsed)


def _model_info(loaded: Any) -> dict[str, Any]:
    """Card fields worth keeping next to a curve (whatever the card has)."""
    from ltpa.registry import get_spec

    card = loaded.entry.card
    info: dict[str, Any] = {"registry_name": card.get("registry_name")}
    try:
        spec = get_spec(card["registry_name"])
        info["paper_name"] = card.get("paper_name") or spec.paper_name
        info["attention"] = spec.attention
    except (KeyError, ValueError):
        info["paper_name"] = card.get("paper_name", loaded.entry.id)
        info["attention"] = bool(card.get("stages"))
    info["test_error"] = card.get("test_error")
    info["sha256"] = card.get("sha256")
    return info


def subset(images: Tensor, labels: Tensor, limit: int | None, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A reproducible random subset of ``limit`` images (all of them when None), so a quick run
    still covers every class."""
    if limit is None or limit >= images.shape[0]:
        return images, labels
    if limit < 1:
        raise ValueError(f"--limit must be a positive number of images; got {limit}")
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:limit]
    order = order.sort().values
    return images[order], labels[order]


def load_eval_images(data: str, class_names: Sequence[str], image_size: int,
                     data_root: str | None = None) -> tuple[Tensor, Tensor, str]:
    """The evaluation images as (uint8 N x 3 x S x S, labels, description).

    ``data`` is a dataset name known to ``ltpa.data`` (its test split), an ImageFolder tree with a
    ``test/`` folder, or a folder of class sub-folders itself. Class folders must match the
    model's classes (same names, same order).
    """
    from ltpa.data import TORCHVISION_DATASETS, load_dataset, load_image_folder

    if data.lower() in TORCHVISION_DATASETS:
        _, test = load_dataset(data, data_root=data_root, image_size=image_size)
        source = f"{data.lower()} test split (torchvision)"
        if list(test.class_names) != list(class_names):
            raise ValueError(f"{data} classes {test.class_names} differ from the model's {list(class_names)}")
    else:
        folder = Path(data)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{data!r} is neither a dataset name ({', '.join(TORCHVISION_DATASETS)}) nor a folder"
            )
        if (folder / "test").is_dir():
            folder = folder / "test"
        test = load_image_folder(folder, class_names=list(class_names), image_size=image_size)
        source = str(folder)
    return test.images, test.labels, source


def run_robustness(
    model_ids: Sequence[str],
    data: str,
    levels: Sequence[int] = DEFAULT_LEVELS,
    batch_size: int = 500,
    device: str | None = None,
    limit: int | None = None,
    method: str = "fgsm",
    steps: int = DEFAULT_STEPS,
    label_mode: str = "true",
    amp: bool = False,
    data_root: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Curves for several zoo models on one dataset, as the results dict written to JSON.

    Each model is loaded fresh (its own copy, so channels_last on CUDA is safe), the images are
    decoded once and kept on the device.
    """
    from ltpa.device import get_device
    from ltpa.zoo import get_entry, load_zoo_model

    if not model_ids:
        raise ValueError("give at least one model id (see `ltpa models` or assets/models/manifest.json)")
    levels = parse_levels(levels)
    entries = [get_entry(model_id) for model_id in model_ids]  # fail early on a bad id
    target = get_device(device)
    first = entries[0].card
    load_start = time.perf_counter()
    images, labels, source = load_eval_images(data, first["class_names"], int(first["input_size"]), data_root)
    images, labels = subset(images, labels, limit)
    images, labels = images.to(target), labels.to(target)
    load_time = time.perf_counter() - load_start
    if log:
        log(f"loaded {images.shape[0]} images from {source} in {load_time:.1f} s")
    channels_last = target.type == "cuda"
    curves = []
    for entry in entries:
        if entry.card["class_names"] != first["class_names"]:
            raise ValueError(f"model {entry.id} has other classes than {entries[0].id}")
        loaded = load_zoo_model(entry.id, device=target)
        if channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        if target.type == "cuda":  # untimed warm-up batch: lazy CUDA init and cuDNN kernel choice
            sweep_model(loaded.model, images[:batch_size], labels[:batch_size], levels, batch_size,
                        method, steps, label_mode, amp, channels_last)
        curve = sweep_model(loaded.model, images, labels, levels, batch_size, method, steps,
                            label_mode, amp, channels_last, model_id=entry.id)
        curve.info = _model_info(loaded)
        curves.append(curve)
        if log:
            log(f"{entry.id}: accuracy " + " ".join(f"{a:.3f}" for a in curve.accuracy)
                + f"; {curve.sweep_time_s:.2f} s ({curve.n_images / curve.sweep_time_s:.0f} images/s)")
        del loaded
    return {
        "format": RESULTS_FORMAT,
        "attack": method,
        "attack_name": ATTACK_NAMES[method],
        "steps": steps if method == "ifgsm" else None,
        "label": label_mode,
        "levels": levels,
        "epsilons": [levels_to_epsilon(k) for k in levels],
        "dataset": {"source": source, "n_images": int(images.shape[0]), "limit": limit,
                    "class_names": list(first["class_names"])},
        "device": torch.cuda.get_device_name(target) if target.type == "cuda" else str(target),
        "precision": "fp32 gradient, bf16 evaluation" if amp and target.type == "cuda" else "fp32",
        "torch": torch.__version__.split("+")[0],
        "batch_size": batch_size,
        "load_time_s": round(load_time, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "definitions": DEFINITIONS,
        "models": [curve.as_dict() for curve in curves],
    }


# --------------------------------------------------------------------------------------- files
def results_csv(results: dict[str, Any]) -> str:
    """One CSV row per model and epsilon."""
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
    """``results`` if it looks like a robustness results dict, else a ValueError saying why."""
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


def merge_results(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the curves of ``update`` added, a model measured in both taking ``update``'s
    (e.g. after retraining it). Both must attack the same images the same way; a curve measured on
    another device or in another precision than ``base`` says so in its own ``device`` and
    ``precision``. Raises ValueError naming what differs."""
    check_results(base)
    check_results(update)
    differing = [key for key in _COMPARABLE if base.get(key) != update.get(key)]
    for key in ("source", "n_images", "limit", "class_names"):
        if base["dataset"].get(key) != update["dataset"].get(key):
            differing.append(f"dataset {key}")
    if differing:
        raise ValueError(f"these results cannot share a table: they differ in {', '.join(differing)}")
    curves = {model["id"]: model for model in base["models"]}
    for model in update["models"]:
        model = dict(model)
        for key in ("device", "precision"):
            if update.get(key) != base.get(key):
                model[key] = update.get(key)
            else:
                model.pop(key, None)
        curves[model["id"]] = model
    return {**base, "models": list(curves.values())}


def write_results(results: dict[str, Any], out_dir: str | Path, figure: bool = True) -> dict[str, Path | str]:
    """Write ``robustness.json`` and ``robustness.csv`` (and ``robustness.html`` when Plotly is
    importable and ``figure``); returns the paths, plus a ``note`` when the figure was skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | str] = {}
    written["json"] = out / RESULTS_JSON
    written["json"].write_text(json.dumps(results, indent=1) + "\n")
    written["csv"] = out / RESULTS_CSV
    written["csv"].write_text(results_csv(results))
    if figure:
        try:
            fig = robustness_figure(results)
        except ImportError:
            written["note"] = "plotly is not installed here: the HTML figure was skipped (JSON/CSV written)"
        else:
            written["html"] = out / RESULTS_HTML
            fig.write_html(str(written["html"]), include_plotlyjs="cdn")
    return written


def load_results(path: str | Path | None = None) -> dict[str, Any] | None:
    """Results from a JSON file or a folder holding ``robustness.json`` (default: the shipped
    ``assets/robustness``); None when there is no file. A malformed file gives a ValueError."""
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


def _percent(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def measured_on(results: dict[str, Any]) -> str:
    """Where the curves were measured: the results' device, then any curves merged in from another
    device or precision, e.g. "NVIDIA H200; `resnet164` on cpu"."""
    elsewhere: dict[str, list[str]] = {}
    for model in results["models"]:
        if model.get("device") or model.get("precision"):
            where = ", ".join(str(model[k]) for k in ("device", "precision") if model.get(k))
            elsewhere.setdefault(where, []).append(f"`{model['id']}`")
    return str(results.get("device", "?")) + "".join(
        f"; {', '.join(ids)} on {where}" for where, ids in elsewhere.items())


def results_markdown(results: dict[str, Any]) -> str:
    """Markdown tables (accuracy, then fooling rate, in %) of a results dict, for the README."""
    check_results(results)
    levels = results["levels"]
    header = "| model | attention | " + " | ".join(f"{k}/255" for k in levels) + " |"
    rule = "|---|---|" + "---:|" * len(levels)
    dataset = results["dataset"]
    lines = [
        f"{results.get('attack_name', results['attack'])} ({results['label']} label) on "
        f"{dataset['n_images']} images of {dataset['source']}, {measured_on(results)}.",
        "",
    ]
    for key, title in (("accuracy", "Accuracy (%)"), ("fooling_rate", "Fooling rate (%)")):
        lines += [f"**{title}** against epsilon", "", header, rule]
        for model in results["models"]:
            name = model.get("paper_name") or model["id"]
            attention = "yes" if model.get("attention") else "no"
            cells = " | ".join(_percent(v) for v in model[key])
            lines.append(f"| {name} (`{model['id']}`) | {attention} | {cells} |")
        lines.append("")
    lines.append(f"Fooling rate: {DEFINITIONS['fooling_rate']}.")
    return "\n".join(lines) + "\n"


def robustness_figure(results: dict[str, Any]):  # -> plotly Figure (Plotly imported lazily)
    """Accuracy and fooling rate against epsilon, one line per model; attention models solid,
    baselines dashed. Raises ImportError where Plotly is missing (the GPU machine)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    check_results(results)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Accuracy", "Fooling rate"))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    for index, model in enumerate(results["models"]):
        name = model.get("paper_name") or model["id"]
        style = dict(color=palette[index % len(palette)], dash="solid" if model.get("attention") else "dash")
        for col, key in ((1, "accuracy"), (2, "fooling_rate")):
            fig.add_trace(go.Scatter(
                x=results["levels"], y=[100 * v for v in model[key]], mode="lines+markers",
                name=name, legendgroup=model["id"], showlegend=col == 1, line=style,
                hovertemplate=f"{name}<br>epsilon %{{x}}/255<br>{key.replace('_', ' ')} %{{y:.1f}}%<extra></extra>",
            ), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="epsilon (k/255)", row=1, col=col)
        fig.update_yaxes(title_text="%", range=[0, 100], row=1, col=col)
    dataset = results["dataset"]
    fig.update_layout(
        title=f"{results.get('attack_name', results['attack'])} on {dataset['n_images']} test images "
              "(solid: attention, dashed: baseline)",
        height=420, margin=dict(t=70, b=40), legend=dict(orientation="h", y=-0.2),
    )
    return fig


# --------------------------------------------------------------------------------------- attention shift
class AttentionShift(NamedTuple):
    """How far one stage's attention moved between the clean and the adversarial image."""

    iou: float  # IoU of the two thresholded masks (top 25% of positions each)
    moved_mass: float  # total-variation distance of the two maps as distributions, in [0, 1]
    spearman: float  # rank correlation of the two maps over positions (nan if a map is flat)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two same-size arrays (nan when one of them is constant)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in size: {a.size} vs {b.size}")
    rank_a, rank_b = average_ranks(a), average_ranks(b)
    rank_a -= rank_a.mean()
    rank_b -= rank_b.mean()
    denominator = math.sqrt(float((rank_a**2).sum()) * float((rank_b**2).sum()))
    return float((rank_a * rank_b).sum() / denominator) if denominator > 0 else float("nan")


def moved_mass(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """Share of attention that moved: total-variation distance ``0.5 * sum |p - q|`` between the
    two maps normalised to sum to 1 (0: identical, 1: disjoint)."""
    p = np.clip(np.asarray(clean, dtype=np.float64).ravel(), 0, None)
    q = np.clip(np.asarray(adversarial, dtype=np.float64).ravel(), 0, None)
    if p.shape != q.shape:
        raise ValueError(f"maps differ in size: {p.size} vs {q.size}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("a map with no positive attention cannot be compared")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def attention_shift(clean: np.ndarray, adversarial: np.ndarray) -> AttentionShift:
    """IoU of the thresholded masks, moved mass and rank correlation of two same-size maps."""
    clean = np.asarray(clean, dtype=np.float32).squeeze()
    adversarial = np.asarray(adversarial, dtype=np.float32).squeeze()
    if clean.shape != adversarial.shape or clean.ndim != 2:
        raise ValueError(f"expected two 2-D maps of one size; got {clean.shape} and {adversarial.shape}")
    masks = [make_mask(m, None, SHIFT_RULE, SHIFT_VALUE) for m in (clean, adversarial)]
    return AttentionShift(jaccard(masks[0], masks[1]), moved_mass(clean, adversarial),
                          spearman(clean, adversarial))


# --------------------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class AttackReport:
    """One image under one attack: what the Adversarial page shows."""

    method: str
    levels: int  # epsilon in grey levels (k/255)
    attacked_class: int  # the class pushed away from (untargeted) or towards (targeted)
    targeted: bool
    clean: np.ndarray  # H x W x 3 float32 in [0, 1]
    adversarial: np.ndarray  # H x W x 3 float32 in [0, 1]
    clean_probabilities: np.ndarray  # (C,)
    adversarial_probabilities: np.ndarray  # (C,)
    stages: tuple[str, ...]
    clean_maps: tuple[np.ndarray, ...]  # native resolution, each sums to 1
    adversarial_maps: tuple[np.ndarray, ...]
    shifts: tuple[AttentionShift, ...]

    @property
    def perturbation(self) -> np.ndarray:
        """adversarial - clean (H x W x 3), within [-epsilon, epsilon]."""
        return self.adversarial - self.clean

    @property
    def linf(self) -> float:
        """Largest absolute change of any channel of any pixel, in grey levels."""
        return float(np.abs(self.perturbation).max() * 255) if self.perturbation.size else 0.0

    @property
    def clean_prediction(self) -> int:
        return int(np.argmax(self.clean_probabilities))

    @property
    def adversarial_prediction(self) -> int:
        return int(np.argmax(self.adversarial_probabilities))

    @property
    def flipped(self) -> bool:
        """Untargeted: the prediction changed; targeted: the target is now predicted."""
        if self.targeted:
            return self.adversarial_prediction == self.attacked_class
        return self.adversarial_prediction != self.clean_prediction


def perturbation_image(perturbation: np.ndarray, gain: float) -> np.ndarray:
    """The perturbation made visible: ``0.5 + gain * delta`` clipped to [0, 1] (grey = no change)."""
    if not (isinstance(gain, (int, float)) and math.isfinite(gain) and gain > 0):
        raise ValueError(f"gain must be a positive number; got {gain!r}")
    return np.clip(0.5 + gain * np.asarray(perturbation, dtype=np.float32), 0.0, 1.0)


def attack_report(
    model: PixelModel,
    x: Tensor,
    levels: int,
    method: str = "fgsm",
    label: int | None = None,
    target: int | None = None,
    steps: int = DEFAULT_STEPS,
    max_levels: int = APP_MAX_LEVELS,
) -> AttackReport:
    """Attack one pixel-space image (1 x 3 x H x W) at ``levels / 255`` and compare the model's
    view of the clean and the adversarial image, stage by stage.

    ``label`` None attacks the model's own prediction; ``target`` makes the attack targeted.
    Epsilon is limited to ``max_levels`` (32 for the app).
    """
    levels = check_levels(levels, max_levels)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, 3, H, W); got shape {tuple(x.shape)}")
    adversarial = attack(model, x, levels_to_epsilon(levels), method, label, target, steps)
    with torch.no_grad():
        out = model(torch.cat([x.detach(), adversarial]))
    probabilities = torch.softmax(out.logits.float(), dim=1).cpu().numpy()
    maps = [m.float().cpu().numpy()[:, 0] for m in out.maps]
    if target is not None:
        attacked = int(target)
    elif label is not None:
        attacked = int(label)
    else:
        attacked = int(np.argmax(probabilities[0]))
    clean_maps = tuple(m[0] for m in maps)
    adversarial_maps = tuple(m[1] for m in maps)
    return AttackReport(
        method=method, levels=levels, attacked_class=attacked, targeted=target is not None,
        clean=x[0].detach().permute(1, 2, 0).cpu().numpy().astype(np.float32),
        adversarial=adversarial[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        clean_probabilities=probabilities[0], adversarial_probabilities=probabilities[1],
        stages=tuple(out.stages), clean_maps=clean_maps, adversarial_maps=adversarial_maps,
        shifts=tuple(attention_shift(c, a) for c, a in zip(clean_maps, adversarial_maps)),
    )


#: Epsilons of the I-FGSM confidence curve: a full attack each, so fewer than FGSM's 0..32.
IFGSM_CURVE_LEVELS = (0, 1, 2, 4, 8, 16, 32)


def confidence_curve(
    model: PixelModel,
    x: Tensor,
    class_index: int | None = None,
    method: str = "fgsm",
    label: int | None = None,
    target: int | None = None,
    levels: Sequence[int] | None = None,
    steps: int = DEFAULT_STEPS,
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """This image's probability of ``class_index`` under the attack at each epsilon.

    ``class_index`` None follows the attacked class: the target (targeted), the label, or the
    clean prediction. FGSM: every ``k`` in 0..32 from one gradient; I-FGSM: ``IFGSM_CURVE_LEVELS``.
    Returns ``(levels, probability of class_index, predicted class)`` per epsilon.
    """
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}; valid choices: {', '.join(ATTACKS)}")
    if levels is None:
        levels = range(APP_MAX_LEVELS + 1) if method == "fgsm" else IFGSM_CURVE_LEVELS
    levels = [check_levels(k) for k in levels]
    if method == "fgsm":
        logits = fgsm_levels_logits(model, x, levels, label, target)
    else:
        batch = torch.cat([
            iterative_fgsm(model, x, levels_to_epsilon(k), steps, label=label, target=target)
            for k in levels
        ])
        with torch.no_grad():
            logits = model(batch).logits.float()
    probabilities = torch.softmax(logits, dim=1)
    if class_index is None:
        if target is not None or label is not None:
            class_index = int(target if target is not None else label)
        else:
            with torch.no_grad():
                class_index = int(model(x).logits.argmax(dim=1)[0])
    if not 0 <= class_index < probabilities.shape[1]:
        raise ValueError(f"class {class_index} does not exist: the model has {probabilities.shape[1]} classes")
    return levels, probabilities[:, class_index].cpu().numpy(), probabilities.argmax(dim=1).cpu().numpy()


def confidence_figure(curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str,
                      current_levels: int | None = None):  # -> plotly Figure (lazy import)
    """Probability against epsilon, one line per model (``{name: (levels, probabilities)}``);
    a dotted vertical line marks the epsilon chosen on the page."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, (levels, probability) in curves.items():
        fig.add_trace(go.Scatter(
            x=list(levels), y=[float(p) for p in probability], mode="lines+markers", name=name,
            hovertemplate=f"{name}<br>epsilon %{{x}}/255<br>probability %{{y:.1%}}<extra></extra>",
        ))
    if current_levels is not None:
        fig.add_vline(x=current_levels, line_dash="dot", line_color="grey")
    fig.update_layout(title=title, height=360, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title_text="epsilon (k/255)", range=[0, APP_MAX_LEVELS + 0.5])
    fig.update_yaxes(title_text="probability", range=[0, 1.02], tickformat=".0%")
    return fig
