"""Weakly supervised segmentation: attention (and post-hoc saliency) masks scored against ground
truth over a folder of images, as ``ltpa segment-eval`` runs it.

Models are named as everywhere in ltpa (``ltpa.inference.load_model_source``): a shipped id, a
checkpoint file or a run folder holding ``model.pt``. Trained checkpoints (``checkpoints`` of
``evaluate_folders``) are sorted by what they hold: attention models are scored per stage, a GAP
baseline (``vgg_gap``) by its CAM as the post-hoc comparison. Rows of a file or folder are labelled
by its path and the model name its checkpoint records, e.g. ``runs/a [vgg_att3_concat_pc] / layer13``.

Flow: ``pair_folders`` matches images and masks by file stem; ``load_samples`` decodes them and
prepares the model inputs (``ltpa.preprocess.image_to_input``, the app's image path); ``native_maps`` runs batched
forward passes; ``evaluate`` upsamples every map to its mask's size, binarises it by every rule at
a **fixed** threshold (``ltpa.masks.DEFAULT_THRESHOLDS`` unless overridden, the same for every
image), scores it and accumulates a Jaccard-versus-threshold sweep from which the best fixed
threshold per method is read (tuned on the evaluated set, reported separately). Bad input (a mask
without image and the reverse, unreadable files, empty or all-foreground masks, another aspect
ratio, a "mask" that is a photo rather than a (nearly) binary image) is recorded as a ``Skip``
and the rest goes on; a masks folder in which no mask is binary is refused outright.

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
from ltpa.device import get_device
from ltpa.images import load_image
from ltpa.inference import load_model_source
from ltpa.preprocess import image_to_input
from ltpa.report import markdown_table
from ltpa.saliency import cam, centre_prior, grad_cam, has_cam
from ltpa.zoo import LoadedModel, ZooError, list_zoo
from ltpa.choices import check_choice

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
    "not_a_mask": "not a binary mask (a photo?)",
}
# A ground-truth mask is (nearly) binary: JPEG-compressed masks have a few grey pixels along their
# edges (under 0.1% on the Weizmann horses), photos a fifth or more of their pixels in mid-grey.
MAX_GREY_FRACTION = 0.05
_GREY_BAND = (32, 223)  # 8-bit values that are neither background nor foreground


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
    """Where a map comes from: a method, the model (none for the prior) and the stage; ``name``,
    when known, is the registry name of a model loaded from a checkpoint file or run folder."""

    method: str
    model: str
    stage: str
    name: str = ""

    @property
    def label(self) -> str:
        model = f"{self.model} [{self.name}]" if self.name else self.model
        if self.method == "attention":
            return f"{model} / {self.stage}"
        if self.method == "centre_prior":
            return METHOD_LABELS[self.method]
        return f"{METHOD_LABELS[self.method]} ({model})"


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
    """Match images and masks by file stem.

    Only files directly in each folder count (sub-folders such as Object Discovery's
    ``GroundTruth`` are ignored).

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        mask_suffix: suffix of mask stems, e.g. ``_mask`` for ``horse001_mask.png``.

    Returns:
        (matched pairs in stem order, skips for unmatched, duplicate and non-image files).

    Raises:
        FileNotFoundError: a folder does not exist.
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


def grey_fraction(image: np.ndarray) -> float:
    """Share of an image's pixels that are neither dark nor bright, in its brightest channel.

    Args:
        image: H x W x 3 (or H x W) uint8 array.

    Returns:
        The fraction of pixels with values in ``_GREY_BAND``: near 0 for a mask, large for a photo.
    """
    brightest = image.max(axis=2) if image.ndim == 3 else image
    low, high = _GREY_BAND
    return float(((brightest > low) & (brightest < high)).mean()) if brightest.size else 0.0


def load_samples(
    pairs: Sequence[Pair], input_sizes: Iterable[int] = (32,), aspect_tolerance: float = 0.03
) -> tuple[list[Sample], list[Skip]]:
    """Decode each pair, check the mask, and resize the image to every model input size.

    The evaluation happens at the mask's size; the image only feeds the model (the maps are
    upsampled to the mask), so a photo larger than its mask with the same aspect is fine.

    Args:
        pairs: image/mask pairs from :func:`pair_folders`.
        input_sizes: the input sizes of the models to feed.
        aspect_tolerance: largest relative aspect-ratio difference of image and mask.

    Returns:
        (usable samples, skipped pairs with their reasons).
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
            # Decoded safely first (size limits), and checked to be a mask, not a photo.
            grey = grey_fraction(load_image(pair.mask.read_bytes()).array)
            truth = masks.load_mask(pair.mask) if grey <= MAX_GREY_FRACTION else None
        except (ValueError, OSError) as error:
            skips.append(Skip(pair.mask.name, "unreadable_mask", str(error)))
            continue
        if truth is None:
            skips.append(Skip(pair.mask.name, "not_a_mask",
                              f"{grey:.0%} of its pixels are grey (a mask has under {MAX_GREY_FRACTION:.0%})"))
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


def check_masks_folder(masks_dir: Path, n_pairs: int, skips: Sequence[Skip]) -> None:
    """Refuse a masks folder that holds photos: at least half of the pairs' masks not binary.

    Args:
        masks_dir: the folder, for the message.
        n_pairs: how many image/mask pairs were matched.
        skips: the skips of :func:`load_samples`.

    Raises:
        ValueError: one line naming the folder, an example file and what a mask must be.
    """
    photos = [s for s in skips if s.reason == "not_a_mask"]
    if photos and 2 * len(photos) >= n_pairs:
        raise ValueError(
            f"{masks_dir} does not hold ground-truth masks: {len(photos)} of {n_pairs} are not "
            f"binary (e.g. {photos[0].name}: {photos[0].detail}); --masks needs (nearly) binary "
            "single-channel images, the object white (or 1) on black"
        )


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
    """Maps of a batch of pixel-space inputs at the model's resolution (batched forward passes; the
    model is not modified).

    Args:
        loaded: the model.
        method: ``attention`` (every stage), ``cam`` or ``grad_cam``.
        inputs: N x 3 x S x S in [0, 1].
        batch_size: images per forward pass.
        class_index: the class CAM / Grad-CAM explain (default: each image's prediction).

    Returns:
        Stage name (or the method's name) -> N x h x w maps.

    Raises:
        ValueError: an unknown method, a bad batch size, or attention asked of a model without it.
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
    """One image's maps as unit maps (maximum 1) at ``size``, plus ``combined`` when the model has
    several stages and ``stages`` asks for it.

    Args:
        native: stage -> h x w map.
        size: (height, width) to upsample to.
        stages: the stages wanted (None: all and ``combined``).
        combine: how stages combine (``ltpa.masks.COMBINE_MODES``).

    Returns:
        Stage (or ``combined``) -> H x W unit map.
    """
    units = {stage: masks.unit_map(m, size) for stage, m in native.items()}
    wanted = list(native) if stages is None else [s for s in native if s in stages]
    out = {stage: units[stage] for stage in wanted}
    if len(native) > 1 and (stages is None or COMBINED in stages):
        out[COMBINED] = masks.combine_maps(list(units.values()), combine)
    return out


# --------------------------------------------------------------------------------------- evaluation
@dataclass
class SegmentationSettings:
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
        check_choice("combination", self.combine, masks.COMBINE_MODES)
        if self.opening < 0:
            raise ValueError(f"the opening kernel size must be >= 0 pixels; got {self.opening}")
        if self.prior_sigma <= 0:
            raise ValueError(f"the centre prior's sigma must be positive; got {self.prior_sigma}")

    @property
    def cleans(self) -> bool:
        return self.opening > 0 or self.largest_component


@dataclass
class SegmentationResult:
    """Per-image rows, accumulated sweeps, skips and counts of one evaluation."""

    settings: SegmentationSettings
    rows: list[dict] = field(default_factory=list)
    sweep_sums: dict[tuple[MapSource, str], np.ndarray] = field(default_factory=dict)
    sweep_counts: Counter = field(default_factory=Counter)
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # model id -> registry name, for models loaded from a checkpoint file or run folder (labels)
    model_names: dict[str, str] = field(default_factory=dict)
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
    result: SegmentationResult, sample: Sample, units: dict[MapSource, np.ndarray]
) -> None:
    """Binarise and score one image's unit maps under every rule; add to the rows and sweeps.

    Args:
        result: the result to add to (its settings fix the rules and thresholds).
        sample: the image's sample (its mask is the ground truth).
        units: map source -> unit map at the mask's size.
    """
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
    """Every shipped model that has attention stages, in manifest order (none without a zoo).

    Returns:
        The zoo ids.
    """
    try:
        return [e.id for e in list_zoo() if e.card.get("stages")]
    except ZooError:
        return []


def _is_available(source: str) -> bool:
    """Whether a model source can be loaded: an existing path or a shipped id."""
    if Path(source).exists():
        return True
    try:
        return source in {e.id for e in list_zoo()}
    except ZooError:
        return False


def evaluate(
    samples: Sequence[Sample],
    attention_models: Sequence[LoadedModel],
    cam_model: LoadedModel | Sequence[LoadedModel] | None = None,
    grad_cam_model: LoadedModel | Sequence[LoadedModel] | None = None,
    centre: bool = True,
    stages: Sequence[str] | None = None,
    settings: SegmentationSettings | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = lambda message: None,
) -> SegmentationResult:
    """Score every map source on every sample (see the module docstring).

    Args:
        samples: from :func:`load_samples`.
        attention_models: models whose attention stages are scored.
        cam_model: the GAP model for CAM (or several, one CAM row each), or None.
        grad_cam_model: the model for Grad-CAM (or several, one Grad-CAM row each), or None.
        centre: whether to score the centre prior.
        stages: stage names and/or ``combined`` (None: all).
        settings: how maps become masks.
        batch_size: images per forward pass.
        log: called with progress lines.

    Returns:
        The SegmentationResult.
    """
    settings = settings or SegmentationSettings()
    settings.check()
    result = SegmentationResult(settings)
    started = time.perf_counter()
    jobs: list[tuple[str, LoadedModel]] = [("attention", m) for m in attention_models]
    for method, given in (("cam", cam_model), ("grad_cam", grad_cam_model)):
        jobs += [(method, m) for m in ([] if given is None else [given] if isinstance(given, LoadedModel) else given)]
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


def _source_label(row: dict, names: dict[str, str]) -> str:
    return MapSource(row["method"], row["model"], row["stage"], names.get(row["model"], "")).label


def scores_by_map(result: SegmentationResult) -> dict[str, dict]:
    """The headline numbers per map source: mean Jaccard per rule at the fixed thresholds and
    the pointing game (what ``summary.json`` holds under ``scores``).

    Args:
        result: an evaluation's result.

    Returns:
        ``{label: {"method", "model", "stage", "images", "pointing_game", "jaccard": {rule: mean}}}``
        in evaluation order, e.g. ``"vgg_att3_concat_pc / layer13"``, ``"CAM (vgg_gap)"``,
        ``"runs/a [vgg_att3_concat_pc] / layer13"`` (a run folder), ``"centre prior"``.
    """
    scores: dict[str, dict] = {}
    for row in result.summary():
        entry = scores.setdefault(_source_label(row, result.model_names), {
            "method": row["method"], "model": row["model"], "stage": row["stage"],
            "images": row["images"], "pointing_game": row["pointing_game"], "jaccard": {}})
        entry["jaccard"][row["rule"]] = row["mean_jaccard"]
    return scores


def summary_markdown(result: SegmentationResult) -> str:
    """Mean Jaccard per map source (rows) and rule (columns) at the fixed thresholds, plus the
    pointing game and, separately labelled, the best fixed threshold tuned on this set.

    Args:
        result: an evaluation's result.

    Returns:
        Markdown: the table, a note on blank maps, the tuned-threshold table.
    """
    settings = result.settings
    summary = result.summary()
    if not summary:
        return "(nothing evaluated)\n"
    by_source: dict[str, dict[str, dict]] = {}
    for row in summary:
        by_source.setdefault(_source_label(row, result.model_names), {})[row["rule"]] = row
    best = {(_source_label(r, result.model_names), r["rule"]): r for r in result.best_thresholds()}
    rules = list(settings.rules)
    rule_columns = {rule: f"{rule} {_display_threshold(rule, settings.thresholds[rule])}" for rule in rules}
    columns = ["map", *rule_columns.values(), "pointing game"]
    rows = []
    for label, per_rule in by_source.items():
        row = {"map": label, "pointing game": f"{next(iter(per_rule.values()))['pointing_game']:.2f}"}
        row.update({rule_columns[r]: f"{per_rule[r]['mean_jaccard']:.3f}" for r in rules if r in per_rule})
        rows.append(row)
    out = markdown_table(rows, columns=columns) + "\n"
    blanks = [(label, next(iter(per_rule.values()))) for label, per_rule in by_source.items()]
    blanks = [f"{label}: {row['blank_maps']} of {row['images']}" for label, row in blanks if row["blank_maps"]]
    if blanks:
        out += ("\nMaps with no positive value (an empty mask under every rule, Jaccard 0): "
                + "; ".join(blanks) + ".\n")
    tuned_rules = [r for r in rules if masks.SWEEP_GRIDS[r]]
    if tuned_rules:
        tuned_columns = {rule: f"{rule}: best t (J)" for rule in tuned_rules}
        rows = []
        for label in by_source:
            row = {"map": label}
            for rule in tuned_rules:
                b = best.get((label, rule))
                if b:
                    row[tuned_columns[rule]] = f"{b['best_threshold']:g} ({b['best_mean_jaccard']:.3f})"
            rows.append(row)
        out += ("\nBest fixed threshold per map and rule, **tuned on this set** (optimistic; "
                "one threshold for all images):\n\n"
                + markdown_table(rows, columns=["map", *tuned_columns.values()]) + "\n")
    return out


def settings_text(result: SegmentationResult) -> str:
    """The threshold rules and clean-up in words, for the report.

    Args:
        result: an evaluation's result.

    Returns:
        One paragraph.
    """
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


def write_results(result: SegmentationResult, out_dir: Path) -> dict[str, Path]:
    """Write per_image.csv, summary.csv, sweep.csv, best_thresholds.csv, skipped.csv,
    summary.json (with ``scores``, see :func:`scores_by_map`) and results.md.

    Args:
        result: an evaluation's result.
        out_dir: the folder (created).

    Returns:
        The paths by name.
    """
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
        "scores": scores_by_map(result),
    }
    paths["summary_json"] = out_dir / "summary.json"
    paths["summary_json"].write_text(json.dumps(info, indent=2, allow_nan=True) + "\n")
    paths["markdown"] = out_dir / "results.md"
    paths["markdown"].write_text(
        f"Images evaluated: {result.n_evaluated} of {result.n_pairs} pairs; skipped: "
        f"{len(result.skips)} {result.skip_counts() or ''}\n\n{settings_text(result)}\n\n"
        f"Mean Jaccard (and pointing-game accuracy):\n\n{summary_markdown(result)}")
    return paths



def evaluate_folders(
    images_dir: Path,
    masks_dir: Path,
    model_ids: Sequence[str] | None = None,
    stages: Sequence[str] | None = None,
    settings: SegmentationSettings | None = None,
    compare: Sequence[str] = COMPARISONS,
    cam_model_id: str | Sequence[str] | None = None,
    grad_cam_model_id: str | Sequence[str] = DEFAULT_GRAD_CAM_MODEL,
    mask_suffix: str = "",
    aspect_tolerance: float = 0.03,
    device: str | None = None,
    batch_size: int = 64,
    log: Callable[[str], None] = lambda message: None,
    checkpoints: Sequence[str | Path] = (),
) -> SegmentationResult:
    """Pair, load and evaluate two folders.

    Args:
        images_dir: folder of images.
        masks_dir: folder of ground-truth masks, matched by file stem.
        model_ids: attention models: shipped ids, checkpoint files or run folders (default: every
            shipped attention model, or none when ``checkpoints`` are given).
        stages: stage names and/or ``combined`` to score (default: all).
        settings: how maps become masks.
        compare: comparison methods among ``COMPARISONS``.
        cam_model_id: the GAP model for CAM (id, file or run folder), or several (one CAM row
            each); one that is a shipped id the zoo lacks is left out with a note. Default:
            ``DEFAULT_CAM_MODEL``, unless ``checkpoints`` hold a GAP model (then only theirs).
        grad_cam_model_id: the model (or models) for Grad-CAM, likewise.
        mask_suffix: suffix of mask stems.
        aspect_tolerance: largest relative aspect-ratio difference of image and mask.
        device: auto, cpu, cuda, cuda:N or mps.
        batch_size: forward-pass batch size.
        log: called with progress lines.
        checkpoints: trained models as checkpoint files or run folders of ``ltpa train``: each
            attention model is scored like ``model_ids``, each GAP model by its CAM (whatever
            ``compare`` says).

    Returns:
        The SegmentationResult (rows, sweeps, skips, notes, timings).

    Raises:
        ValueError: unknown comparisons, models or stages, a model without attention among
            ``model_ids``, a checkpoint with neither attention nor GAP, a folder without
            ``model.pt``, a file that is no ltpa checkpoint, or a masks folder of photos.
        FileNotFoundError: a checkpoint path or a folder that does not exist.
    """
    settings = settings or SegmentationSettings()
    settings.check()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {batch_size!r}")
    bad = [c for c in compare if c not in COMPARISONS]
    if bad:
        raise ValueError(f"unknown comparison(s) {bad}; valid choices: {', '.join(COMPARISONS)}")
    notes: list[str] = []
    checkpoints = list(dict.fromkeys(str(c) for c in checkpoints))
    for path in checkpoints:
        if not Path(path).exists():
            raise FileNotFoundError(f"--checkpoint {path}: no such file or folder")
    if model_ids is None:
        model_ids = [] if checkpoints else attention_model_ids()
        if not model_ids and not checkpoints:
            notes.append("no attention model in the zoo: only the comparison methods were evaluated")
    model_ids = list(model_ids)
    torch_device = get_device(device)
    loaded = {path: load_model_source(path, torch_device) for path in checkpoints}
    cam_ids = []
    for path in checkpoints:
        if loaded[path].entry.card.get("stages"):
            model_ids += [] if path in model_ids else [path]
        elif has_cam(loaded[path].model):
            cam_ids.append(path)
        else:
            raise ValueError(f"--checkpoint {path}: its model ({loaded[path].entry.card['registry_name']}) "
                             "has neither attention stages nor global average pooling (for CAM); "
                             "score its Grad-CAM with --grad-cam-model instead")
    if cam_model_id is None and not cam_ids:
        cam_model_id = DEFAULT_CAM_MODEL
    posthoc_ids: dict[str, list[str]] = {"cam": cam_ids, "grad_cam": []}
    for method, given in (("cam", cam_model_id), ("grad_cam", grad_cam_model_id)):
        if method not in compare or given is None:
            continue
        wanted = [given] if isinstance(given, (str, Path)) else list(given)
        added = [m for m in dict.fromkeys(wanted) if m not in posthoc_ids[method]]
        available = [m for m in added if _is_available(m)]
        notes += [f"{METHOD_LABELS[method]} left out: no {m!r} in the zoo" for m in added if m not in available]
        posthoc_ids[method][:0] = available  # the named models first, then the checkpoints
    for model_id in dict.fromkeys([*model_ids, *posthoc_ids["cam"], *posthoc_ids["grad_cam"]]):
        if model_id not in loaded:
            loaded[model_id] = load_model_source(model_id, torch_device)
    for model_id in model_ids:
        if not loaded[model_id].entry.card.get("stages"):
            raise ValueError(f"model {model_id!r} has no attention stages; use it through "
                             "the comparison methods (CAM / Grad-CAM) instead")
    if stages is not None:
        known = {s for mid in model_ids for s in loaded[mid].entry.card.get("stages", [])} | {COMBINED}
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; the chosen models have: {', '.join(sorted(known))}")
    started = time.perf_counter()  # decoding, forward passes and scoring; not model loading
    pairs, skips = pair_folders(Path(images_dir), Path(masks_dir), mask_suffix)
    log(f"{len(pairs)} image/mask pairs, {len(skips)} files unmatched or not images")
    samples, load_skips = load_samples(pairs, {m.input_size for m in loaded.values()} or {32},
                                       aspect_tolerance)
    check_masks_folder(Path(masks_dir), len(pairs), load_skips)
    result = evaluate(
        samples,
        [loaded[m] for m in model_ids],
        [loaded[m] for m in posthoc_ids["cam"]],
        [loaded[m] for m in posthoc_ids["grad_cam"]],
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
    result.model_names = {mid: str(m.entry.card.get("registry_name", "")) for mid, m in loaded.items()
                          if Path(mid).exists()}
    return result
