"""Weakly supervised segmentation: attention (and post-hoc saliency) masks scored against ground
truth over a folder of images, as ``ltpa segment-eval`` runs it.

Flow: ``pair_folders`` matches images and masks by file stem; ``load_samples`` decodes them and
prepares the model inputs (resized to each model's input size); ``native_maps`` runs batched
forward passes; ``evaluate`` upsamples every map to its mask's size, binarises it by every rule at
a **fixed** threshold (``ltpa.masks.DEFAULT_THRESHOLDS`` unless overridden, the same for every
image), scores it and accumulates a Jaccard-versus-threshold sweep from which the best fixed
threshold per method is read (tuned on the evaluated set, reported separately). Bad input (a mask
without image and the reverse, unreadable files, empty or all-foreground masks, another aspect
ratio) is recorded as a ``Skip`` and the rest goes on.

Comparison methods go through the same code: CAM of the GAP model, Grad-CAM of the baseline VGG,
each for the model's predicted class unless a class is given, and a centre prior (a Gaussian blob,
``ltpa.saliency.centre_prior``) drawn directly at the mask's size.
"""
from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ltpa import masks
from ltpa.images import load_image
from ltpa.preprocess import image_to_input
from ltpa.saliency import cam, centre_prior, grad_cam
from ltpa.device import get_device
from ltpa.zoo import LoadedModel, get_entry, list_zoo, load_zoo_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
METHODS = ("attention", "cam", "grad_cam", "centre_prior")
COMPARISONS = ("cam", "grad_cam", "centre_prior")
METHOD_LABELS = {"attention": "attention", "cam": "CAM", "grad_cam": "Grad-CAM",
                 "centre_prior": "centre prior"}
DEFAULT_CAM_MODEL = "vgg_gap"
DEFAULT_GRAD_CAM_MODEL = "vgg"
COMBINED = "combined"
SKIP_REASONS = {
    "mask_without_image": "mask with no matching image",
    "image_without_mask": "image with no matching mask",
    "not_an_image": "not an image file",
    "duplicate_stem": "several files share one stem",
    "unreadable_image": "image could not be read",
    "unreadable_mask": "mask could not be read",
    "empty_mask": "mask has no foreground",
    "full_mask": "mask is all foreground",
    "aspect_ratio": "mask and image differ in aspect ratio",
}


@dataclass(frozen=True)
class Skip:
    """One file (or pair) left out of the evaluation, and why."""

    name: str
    reason: str  # a key of SKIP_REASONS
    detail: str = ""


@dataclass(frozen=True)
class Pair:
    stem: str
    image: Path
    mask: Path


@dataclass
class Sample:
    """A usable image/mask pair: the mask at its own size and the model inputs."""

    stem: str
    mask: np.ndarray  # H x W bool, the evaluation size
    image_size: tuple[int, int]
    inputs: dict[int, torch.Tensor]  # input size -> 3 x S x S float in [0, 1]


@dataclass(frozen=True)
class MapSource:
    """Where a map comes from: a method, the zoo model (none for the prior) and the stage."""

    method: str
    model: str
    stage: str

    @property
    def label(self) -> str:
        if self.method == "attention":
            return f"{self.model} / {self.stage}"
        if self.method == "centre_prior":
            return METHOD_LABELS[self.method]
        return f"{METHOD_LABELS[self.method]} ({self.model})"


# --------------------------------------------------------------------------------------- input
def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _index_folder(folder: Path, kind: str, suffix: str, skips: list[Skip]) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no {kind} folder at {folder}")
    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name.startswith("."):
            continue  # .DS_Store and friends: not data
        if not _is_image_name(path):
            skips.append(Skip(f"{kind}s/{path.name}", "not_an_image", f"extension {path.suffix or '(none)'!r}"))
            continue
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                skips.append(Skip(f"{kind}s/{path.name}", "mask_without_image",
                                  f"name does not end with the mask suffix {suffix!r}"))
                continue
            stem = stem[: -len(suffix)]
        found[stem].append(path)
    index = {}
    for stem, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            skips.append(Skip(f"{kind}s/{stem}", "duplicate_stem", f"{names}: ambiguous, all skipped"))
            continue
        index[stem] = paths[0]
    return index


def pair_folders(images_dir: Path, masks_dir: Path, mask_suffix: str = "") -> tuple[list[Pair], list[Skip]]:
    """Match images and masks by file stem (a mask may carry ``mask_suffix``, e.g. ``_mask``).

    Only files directly in each folder count (sub-folders such as Object Discovery's
    ``GroundTruth`` are ignored). Unmatched and non-image files come back as skips.
    """
    skips: list[Skip] = []
    images = _index_folder(Path(images_dir), "image", "", skips)
    masks_found = _index_folder(Path(masks_dir), "mask", mask_suffix, skips)
    pairs = [Pair(stem, images[stem], masks_found[stem]) for stem in sorted(images) if stem in masks_found]
    skips += [Skip(f"masks/{masks_found[s].name}", "mask_without_image") for s in sorted(masks_found)
              if s not in images]
    skips += [Skip(f"images/{images[s].name}", "image_without_mask") for s in sorted(images)
              if s not in masks_found]
    return pairs, skips


def load_samples(
    pairs: Sequence[Pair], input_sizes: Iterable[int] = (32,), aspect_tolerance: float = 0.03
) -> tuple[list[Sample], list[Skip]]:
    """Decode each pair, check the mask, and resize the image to every model input size.

    The evaluation happens at the mask's size; the image only feeds the model (the maps are
    upsampled to the mask), so a photo larger than its mask with the same aspect is fine.
    """
    sizes = sorted(set(int(s) for s in input_sizes))
    samples, skips = [], []
    for pair in pairs:
        try:
            image = load_image(pair.image.read_bytes()).array
        except (ValueError, OSError) as error:
            skips.append(Skip(pair.image.name, "unreadable_image", str(error)))
            continue
        try:
            truth = masks.load_mask(pair.mask)
        except (ValueError, OSError) as error:
            skips.append(Skip(pair.mask.name, "unreadable_mask", str(error)))
            continue
        image_size = (int(image.shape[0]), int(image.shape[1]))
        mask_size = (int(truth.shape[0]), int(truth.shape[1]))
        if masks.aspect_mismatch(image_size, mask_size, aspect_tolerance):
            skips.append(Skip(pair.stem, "aspect_ratio",
                              f"image {image_size[1]}x{image_size[0]}, mask {mask_size[1]}x{mask_size[0]}"))
            continue
        if not truth.any():
            skips.append(Skip(pair.mask.name, "empty_mask"))
            continue
        if truth.all():
            skips.append(Skip(pair.mask.name, "full_mask"))
            continue
        inputs = {s: image_to_input(image, s)[0] for s in sizes}
        samples.append(Sample(pair.stem, truth, image_size, inputs))
    return samples, skips


# --------------------------------------------------------------------------------------- maps
def _device_of(loaded: LoadedModel) -> torch.device:
    return next(loaded.model.parameters()).device


def native_maps(
    loaded: LoadedModel,
    method: str,
    inputs: torch.Tensor,
    batch_size: int = 64,
    class_index: int | None = None,
) -> dict[str, np.ndarray]:
    """Maps of a batch of pixel-space inputs (N x 3 x S x S) at the model's resolution.

    ``attention`` gives every stage (stage name -> N x h x w); ``cam`` / ``grad_cam`` give one
    map under the method's name, for the predicted class unless ``class_index`` is set. Batched
    forward passes; the model is not modified.
    """
    if method not in ("attention", "cam", "grad_cam"):
        raise ValueError(f"unknown map method {method!r}; valid choices: attention, cam, grad_cam")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1; got {batch_size}")
    device = _device_of(loaded)
    chunks: dict[str, list[np.ndarray]] = defaultdict(list)
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start: start + batch_size].to(device)
        if method == "attention":
            with torch.no_grad():
                out = loaded.model(x)
            if not out.maps:
                raise ValueError(f"model {loaded.entry.id!r} has no attention maps")
            for stage, attention in zip(out.stages, out.maps):
                chunks[stage].append(attention[:, 0].float().cpu().numpy())
        else:
            compute = cam if method == "cam" else grad_cam
            chunks[method].append(compute(loaded.model, x, class_index)[:, 0].float().cpu().numpy())
    return {stage: np.concatenate(parts) for stage, parts in chunks.items()}


def stage_unit_maps(
    native: dict[str, np.ndarray], size: tuple[int, int], stages: Sequence[str] | None = None,
    combine: str = "mean",
) -> dict[str, np.ndarray]:
    """One image's maps (stage -> h x w) as unit maps at ``size``, plus ``combined`` when the model
    has several stages (all of them, whichever are requested) and ``stages`` asks for it."""
    units = {stage: masks.unit_map(m, size) for stage, m in native.items()}
    wanted = list(native) if stages is None else [s for s in native if s in stages]
    out = {stage: units[stage] for stage in wanted}
    if len(native) > 1 and (stages is None or COMBINED in stages):
        out[COMBINED] = masks.combine_maps(list(units.values()), combine)
    return out


# --------------------------------------------------------------------------------------- evaluation
@dataclass
class EvalSettings:
    """Everything that fixes how maps become masks (recorded in the summary)."""

    rules: tuple[str, ...] = masks.RULES
    thresholds: dict[str, float | None] = field(default_factory=lambda: dict(masks.DEFAULT_THRESHOLDS))
    combine: str = "mean"
    opening: int = 0
    largest_component: bool = False
    prior_sigma: float = 0.25
    class_index: int | None = None

    def check(self) -> None:
        bad = [r for r in self.rules if r not in masks.RULES]
        if bad or not self.rules:
            raise ValueError(f"unknown mask rule(s) {bad or '(none given)'}; valid choices: {', '.join(masks.RULES)}")
        for rule in self.rules:
            self.thresholds[rule] = masks.check_threshold(rule, self.thresholds.get(rule))
        if self.combine not in masks.COMBINE_MODES:
            raise ValueError(f"unknown combination {self.combine!r}; valid choices: {', '.join(masks.COMBINE_MODES)}")
        if self.opening < 0:
            raise ValueError(f"the opening kernel size must be >= 0 pixels; got {self.opening}")
        if self.prior_sigma <= 0:
            raise ValueError(f"the centre prior's sigma must be positive; got {self.prior_sigma}")

    @property
    def cleans(self) -> bool:
        return self.opening > 0 or self.largest_component


@dataclass
class EvalResult:
    """Per-image rows, accumulated sweeps, skips and counts of one evaluation."""

    settings: EvalSettings
    rows: list[dict] = field(default_factory=list)
    sweep_sums: dict[tuple[MapSource, str], np.ndarray] = field(default_factory=dict)
    sweep_counts: Counter = field(default_factory=Counter)
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_pairs: int = 0
    n_evaluated: int = 0
    seconds: float = 0.0

    def summary(self) -> list[dict]:
        """Means per method x model x stage x rule, in evaluation order."""
        groups: dict[tuple, list[dict]] = {}
        for row in self.rows:
            groups.setdefault((row["method"], row["model"], row["stage"], row["rule"]), []).append(row)
        out = []
        for (method, model, stage, rule), rows in groups.items():
            jaccards = np.array([r["jaccard"] for r in rows])
            out.append({
                "method": method, "model": model, "stage": stage, "rule": rule,
                "threshold": rows[0]["threshold"], "images": len(rows),
                "mean_jaccard": float(jaccards.mean()),
                "sd_jaccard": float(jaccards.std(ddof=1)) if len(rows) > 1 else 0.0,
                "mean_precision": float(np.mean([r["precision"] for r in rows])),
                "mean_recall": float(np.mean([r["recall"] for r in rows])),
                "mean_f1": float(np.mean([r["f1"] for r in rows])),
                "pointing_game": float(np.mean([r["pointing_hit"] for r in rows])),
                "mean_mask_fraction": float(np.mean([r["mask_fraction"] for r in rows])),
                "blank_maps": int(sum(r["blank_map"] for r in rows)),
            })
        return out

    def sweep_rows(self) -> list[dict]:
        """Mean Jaccard at every threshold of every rule's grid, per map source."""
        out = []
        for (source, rule), total in self.sweep_sums.items():
            count = self.sweep_counts[(source, rule)]
            grid = masks.SWEEP_GRIDS[rule] or ("auto",)
            for threshold, value in zip(grid, total / max(count, 1)):
                out.append({"method": source.method, "model": source.model, "stage": source.stage,
                            "rule": rule, "threshold": threshold, "images": count,
                            "mean_jaccard": float(value)})
        return out

    def best_thresholds(self) -> list[dict]:
        """Per map source and rule: the fixed threshold with the best mean Jaccard on this set
        (tuned on the evaluated images, so optimistic) next to the fixed default's score."""
        defaults = {(s["method"], s["model"], s["stage"], s["rule"]): s for s in self.summary()}
        out = []
        for (source, rule), total in self.sweep_sums.items():
            means = total / max(self.sweep_counts[(source, rule)], 1)
            best = int(np.argmax(means))
            grid = masks.SWEEP_GRIDS[rule] or ("auto",)
            default = defaults.get((source.method, source.model, source.stage, rule))
            out.append({"method": source.method, "model": source.model, "stage": source.stage,
                        "rule": rule, "best_threshold": grid[best],
                        "best_mean_jaccard": float(means[best]),
                        "default_threshold": default["threshold"] if default else "",
                        "default_mean_jaccard": default["mean_jaccard"] if default else float("nan")})
        return out

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skips))


def _display_threshold(rule: str, value: float | None) -> str:
    return "auto" if value is None else f"{value:g}"


def score_sources(
    result: EvalResult, sample: Sample, units: dict[MapSource, np.ndarray]
) -> None:
    """Binarise and score one image's unit maps under every rule; add to rows and sweeps."""
    settings = result.settings
    truth = sample.mask
    for source, unit in units.items():
        hit = bool(truth[masks.peak_position(unit)])
        blank = int(float(unit.max()) <= 0)  # no positive value: an empty mask under every rule
        ranked = masks.RankedMap(unit)  # one sort serves every rule and the sweep
        for rule in settings.rules:
            value = settings.thresholds[rule]
            pred = masks.clean_mask(masks.binarise(ranked, rule, value), settings.opening,
                                    settings.largest_component)
            scores = masks.score_mask(pred, truth)
            result.rows.append({
                "image": sample.stem, "method": source.method, "model": source.model,
                "stage": source.stage, "rule": rule, "threshold": _display_threshold(rule, value),
                "jaccard": scores.jaccard, "precision": scores.precision, "recall": scores.recall,
                "f1": scores.f1, "pointing_hit": int(hit), "mask_fraction": float(pred.mean()),
                "truth_fraction": float(truth.mean()), "blank_map": blank,
            })
            curve = masks.threshold_curve(ranked, truth, rule, None, settings.opening,
                                          settings.largest_component).jaccard
            key = (source, rule)
            result.sweep_sums[key] = result.sweep_sums.get(key, 0.0) + curve
            result.sweep_counts[key] += 1


def attention_model_ids() -> list[str]:
    """Every shipped model that has attention stages, in manifest order."""
    return [e.id for e in list_zoo() if e.card.get("stages")]


def evaluate(
    samples: Sequence[Sample],
    attention_models: Sequence[LoadedModel],
    cam_model: LoadedModel | None = None,
    grad_cam_model: LoadedModel | None = None,
    centre: bool = True,
    stages: Sequence[str] | None = None,
    settings: EvalSettings | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = lambda message: None,
) -> EvalResult:
    """Score every map source on every sample (see the module docstring)."""
    settings = settings or EvalSettings()
    settings.check()
    result = EvalResult(settings)
    started = time.perf_counter()
    jobs: list[tuple[str, LoadedModel]] = [("attention", m) for m in attention_models]
    jobs += [(name, m) for name, m in (("cam", cam_model), ("grad_cam", grad_cam_model)) if m is not None]
    # Forward passes first, batched per model: small native maps for every image.
    computed: list[tuple[str, str, dict[str, np.ndarray]]] = []
    for method, loaded in jobs:
        tick = time.perf_counter()
        size = loaded.input_size
        batch = torch.stack([s.inputs[size] for s in samples]) if samples else torch.zeros(0, 3, size, size)
        maps = native_maps(loaded, method, batch, batch_size, settings.class_index) if samples else {}
        if method == "attention" and stages is not None and maps:
            usable = [s for s in maps if s in stages] + ([COMBINED] if COMBINED in stages and len(maps) > 1 else [])
            if not usable:
                result.notes.append(f"{loaded.entry.id}: none of the stages {list(stages)} "
                                    f"(it has {', '.join(maps)}{', combined' if len(maps) > 1 else ''}); skipped")
                continue
        computed.append((method, loaded.entry.id, maps))
        log(f"{METHOD_LABELS[method]} {loaded.entry.id}: {len(samples)} images in "
            f"{time.perf_counter() - tick:.1f} s")
    # Then per image: upsample to the mask, threshold, score.
    for index, sample in enumerate(samples):
        size = sample.mask.shape
        units: dict[MapSource, np.ndarray] = {}
        for method, model_id, maps in computed:
            native = {stage: values[index] for stage, values in maps.items()}
            if method == "attention":
                for stage, unit in stage_unit_maps(native, size, stages, settings.combine).items():
                    units[MapSource(method, model_id, stage)] = unit
            else:
                units[MapSource(method, model_id, method)] = masks.unit_map(native[method], size)
        if centre:
            units[MapSource("centre_prior", "", "centre_prior")] = masks.unit_map(
                centre_prior(size[0], size[1], settings.prior_sigma))
        score_sources(result, sample, units)
    result.n_evaluated = len(samples)
    result.seconds = time.perf_counter() - started
    return result


# --------------------------------------------------------------------------------------- output
def _write_csv(path: Path, rows: list[dict], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else []))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


def _source_label(row: dict) -> str:
    return MapSource(row["method"], row["model"], row["stage"]).label


def markdown_table(result: EvalResult) -> str:
    """Mean Jaccard per map source (rows) and rule (columns) at the fixed thresholds, plus the
    pointing game and, separately labelled, the best fixed threshold tuned on this set."""
    settings = result.settings
    summary = result.summary()
    if not summary:
        return "(nothing evaluated)\n"
    by_source: dict[str, dict[str, dict]] = {}
    for row in summary:
        by_source.setdefault(_source_label(row), {})[row["rule"]] = row
    best = {(_source_label(r), r["rule"]): r for r in result.best_thresholds()}
    rules = list(settings.rules)
    headers = ["map"] + [f"{rule} {_display_threshold(rule, settings.thresholds[rule])}" for rule in rules]
    headers += ["pointing game"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for label, per_rule in by_source.items():
        cells = [label] + [f"{per_rule[r]['mean_jaccard']:.3f}" if r in per_rule else "" for r in rules]
        cells.append(f"{next(iter(per_rule.values()))['pointing_game']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    tuned_rules = [r for r in rules if masks.SWEEP_GRIDS[r]]
    out = "\n".join(lines) + "\n"
    blanks = [(label, next(iter(per_rule.values()))) for label, per_rule in by_source.items()]
    blanks = [f"{label}: {row['blank_maps']} of {row['images']}" for label, row in blanks if row["blank_maps"]]
    if blanks:
        out += ("\nMaps with no positive value (an empty mask under every rule, Jaccard 0): "
                + "; ".join(blanks) + ".\n")
    if tuned_rules:
        headers = ["map"] + [f"{rule}: best t (J)" for rule in tuned_rules]
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        for label in by_source:
            cells = [label]
            for rule in tuned_rules:
                b = best.get((label, rule))
                cells.append(f"{b['best_threshold']:g} ({b['best_mean_jaccard']:.3f})" if b else "")
            lines.append("| " + " | ".join(cells) + " |")
        out += ("\nBest fixed threshold per map and rule, **tuned on this set** (optimistic; "
                "one threshold for all images):\n\n" + "\n".join(lines) + "\n")
    return out


def settings_text(result: EvalResult) -> str:
    """The threshold rule in words, for the report."""
    s = result.settings
    parts = []
    for rule in s.rules:
        value = s.thresholds[rule]
        if rule == "fraction":
            text = f"fraction: pixels >= {value:g} x the map's maximum"
        elif rule == "top":
            text = f"top: the {value:g} % highest pixels"
        elif rule == "mass":
            text = f"mass: the fewest highest pixels holding {value:g} % of the attention mass"
        else:
            text = "otsu: Otsu's threshold on the 8-bit map"
        parts.append(text)
    clean = []
    if s.opening:
        clean.append(f"opening with a {s.opening}-pixel ellipse")
    if s.largest_component:
        clean.append("largest connected component")
    return ("Maps upsampled (bilinear) to each mask's size and divided by their maximum; one fixed "
            "threshold per rule for every image and map (chosen before evaluation, not tuned): "
            + "; ".join(parts) + f". Stages combined by the {s.combine} of max-normalised maps. "
            + (f"Clean-up: {', '.join(clean)}." if clean else "No clean-up."))


def write_results(result: EvalResult, out_dir: Path) -> dict[str, Path]:
    """Write per_image.csv, summary.csv, sweep.csv, best_thresholds.csv, skipped.csv,
    summary.json and results.md into ``out_dir``; returns the paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_image": _write_csv(out_dir / "per_image.csv", result.rows, [
            "image", "method", "model", "stage", "rule", "threshold", "jaccard", "precision",
            "recall", "f1", "pointing_hit", "mask_fraction", "truth_fraction", "blank_map"]),
        "summary": _write_csv(out_dir / "summary.csv", result.summary(), [
            "method", "model", "stage", "rule", "threshold", "images", "mean_jaccard", "sd_jaccard",
            "mean_precision", "mean_recall", "mean_f1", "pointing_game", "mean_mask_fraction", "blank_maps"]),
        "sweep": _write_csv(out_dir / "sweep.csv", result.sweep_rows(), [
            "method", "model", "stage", "rule", "threshold", "images", "mean_jaccard"]),
        "best_thresholds": _write_csv(out_dir / "best_thresholds.csv", result.best_thresholds(), [
            "method", "model", "stage", "rule", "best_threshold", "best_mean_jaccard",
            "default_threshold", "default_mean_jaccard"]),
        "skipped": _write_csv(out_dir / "skipped.csv",
                              [{"name": s.name, "reason": s.reason, "explanation": SKIP_REASONS[s.reason],
                                "detail": s.detail} for s in result.skips],
                              ["name", "reason", "explanation", "detail"]),
    }
    s = result.settings
    info = {
        "pairs": result.n_pairs, "evaluated": result.n_evaluated,
        "skipped": len(result.skips), "skipped_by_reason": result.skip_counts(),
        "notes": result.notes, "seconds": round(result.seconds, 3),
        "images_per_s": round(result.n_evaluated / result.seconds, 3) if result.seconds > 0 else None,
        "settings": {"rules": list(s.rules), "thresholds": {r: s.thresholds[r] for r in s.rules},
                     "combine": s.combine, "opening": s.opening,
                     "largest_component": s.largest_component, "prior_sigma": s.prior_sigma,
                     "class_index": s.class_index},
        "threshold_rule": settings_text(result),
    }
    paths["summary_json"] = out_dir / "summary.json"
    paths["summary_json"].write_text(json.dumps(info, indent=2, allow_nan=True) + "\n")
    paths["markdown"] = out_dir / "results.md"
    paths["markdown"].write_text(
        f"Images evaluated: {result.n_evaluated} of {result.n_pairs} pairs; skipped: "
        f"{len(result.skips)} {result.skip_counts() or ''}\n\n{settings_text(result)}\n\n"
        f"Mean Jaccard (and pointing-game accuracy):\n\n{markdown_table(result)}")
    return paths



def evaluate_folders(
    images_dir: Path,
    masks_dir: Path,
    model_ids: Sequence[str] | None = None,
    stages: Sequence[str] | None = None,
    settings: EvalSettings | None = None,
    compare: Sequence[str] = COMPARISONS,
    cam_model_id: str = DEFAULT_CAM_MODEL,
    grad_cam_model_id: str = DEFAULT_GRAD_CAM_MODEL,
    mask_suffix: str = "",
    aspect_tolerance: float = 0.03,
    device: str | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = lambda message: None,
) -> EvalResult:
    """Pair, load and evaluate two folders with zoo models (default: every shipped attention
    model; CAM / Grad-CAM when their models are shipped, otherwise a note says they were left out)."""
    settings = settings or EvalSettings()
    settings.check()
    bad = [c for c in compare if c not in COMPARISONS]
    if bad:
        raise ValueError(f"unknown comparison(s) {bad}; valid choices: {', '.join(COMPARISONS)}")
    notes: list[str] = []
    if model_ids is None:
        model_ids = attention_model_ids()
        if not model_ids:
            notes.append("no attention model in the zoo: only the comparison methods were evaluated")
    for model_id in model_ids:
        if not get_entry(model_id).card.get("stages"):
            raise ValueError(f"model {model_id!r} has no attention stages; use it through "
                             "the comparison methods (CAM / Grad-CAM) instead")
    shipped = {e.id for e in list_zoo()}
    posthoc_ids = {}
    for method, model_id in (("cam", cam_model_id), ("grad_cam", grad_cam_model_id)):
        if method in compare:
            if model_id in shipped:
                posthoc_ids[method] = model_id
            else:
                notes.append(f"{METHOD_LABELS[method]} left out: no {model_id!r} in the zoo")
    if stages is not None:
        known = {s for mid in model_ids for s in get_entry(mid).card.get("stages", [])} | {COMBINED}
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; the chosen models have: {', '.join(sorted(known))}")
    torch_device = get_device(device)
    loaded = {mid: load_zoo_model(mid, torch_device) for mid in {*model_ids, *posthoc_ids.values()}}
    started = time.perf_counter()  # decoding, forward passes and scoring; not model loading
    pairs, skips = pair_folders(Path(images_dir), Path(masks_dir), mask_suffix)
    log(f"{len(pairs)} image/mask pairs, {len(skips)} files unmatched or not images")
    samples, load_skips = load_samples(pairs, {m.input_size for m in loaded.values()} or {32},
                                       aspect_tolerance)
    result = evaluate(
        samples,
        [loaded[m] for m in model_ids],
        loaded.get(posthoc_ids.get("cam", "")),
        loaded.get(posthoc_ids.get("grad_cam", "")),
        centre="centre_prior" in compare,
        stages=stages,
        settings=settings,
        batch_size=batch_size,
        log=log,
    )
    result.seconds = time.perf_counter() - started
    result.n_pairs = len(pairs)
    result.skips = skips + load_skips
    result.notes = notes + result.notes
    return result
