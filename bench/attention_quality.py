"""Attention quality of trained runs: per-stage horse Jaccard (four mask rules) and pointing.

Usage:
    python3 bench/attention_quality.py --horses DIR RUN_DIR_OR_MODEL_PT [...] [--json OUT]

``DIR`` holds ``rgb/`` photos and ``figure_ground/`` masks (the Weizmann horses). Each run is a
folder holding ``model.pt`` and ``log.json`` (from ``ltpa train``) or a checkpoint file. Prints one
row per run and stage (plus the centre prior) with Jaccard under the fixed thresholds of
``ltpa.masks.DEFAULT_THRESHOLDS``, pointing, and the run's validation and test errors (plain, flip
and flip+translate, as logged), test-set entropy and wall time from its log; a model without
attention gets one row of its errors. ``--json`` writes the same rows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltpa import masks  # noqa: E402
from ltpa.checkpoint import load_checkpoint  # noqa: E402
from ltpa.preprocess import PixelModel  # noqa: E402
from ltpa.saliency import centre_prior  # noqa: E402
from ltpa.segmentation import load_samples, pair_folders  # noqa: E402
from ltpa.training import SCORINGS, error_percent  # noqa: E402


def scores_of(unit_maps: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    """Mean Jaccard under each rule's fixed threshold and the pointing rate over the images."""
    row: dict[str, float] = {}
    for rule, value in masks.DEFAULT_THRESHOLDS.items():
        row[f"jaccard_{rule}"] = float(np.mean([masks.jaccard(masks.binarise(u, rule, value), t)
                                                for u, t in zip(unit_maps, truths)]))
    row["pointing"] = float(np.mean([masks.pointing_hit(u, t) for u, t in zip(unit_maps, truths)]))
    return row


def run_rows(source: Path, samples: list, device: torch.device) -> list[dict]:
    """One row per attention stage of a run (its model.pt) with the run's logged figures; one row
    of those figures alone for a model without attention."""
    model_path = source / "model.pt" if source.is_dir() else source
    model, meta = load_checkpoint(model_path, device)
    pixel = PixelModel(model, meta["mean"], meta["std"]).to(device).eval()
    size = int(meta["input_size"])
    log = {}
    if source.is_dir() and (source / "log.json").is_file():
        log = json.loads((source / "log.json").read_text())
    last = (log.get("epochs") or [{}])[-1]
    maps: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(samples), 64):
            chunk = samples[start:start + 64]
            x = torch.stack([s.inputs[size] for s in chunk]).to(device)
            out = pixel(x)
            for stage, attention in zip(out.stages, out.maps):
                for sample, a in zip(chunk, attention[:, 0].float().cpu().numpy()):
                    maps.setdefault(stage, []).append(masks.unit_map(a, sample.mask.shape))
    truths = [s.mask for s in samples]
    logged = {"run": source.name if source.is_dir() else source.stem,
              **{f"{split}_error{suffix}": error_percent(last.get(f"{split}_acc{suffix}"))
                 for split in ("val", "test") for suffix, _ in SCORINGS},
              "epoch_s": sum(e.get("epoch_time_s", 0.0) for e in log.get("epochs", []))}
    if not maps:  # a baseline: its errors, so that a round's table compares it with the rest
        return [{**logged, "stage": "-"}]
    return [{**logged, "stage": stage, "val_entropy": (last.get("entropy") or {}).get(stage),
             "test_entropy": (last.get("test_entropy") or {}).get(stage), **scores_of(units, truths)}
            for stage, units in maps.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--horses", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    pairs, _ = pair_folders(args.horses / "rgb", args.horses / "figure_ground")
    samples, skips = load_samples(pairs, (32,))
    truths = [s.mask for s in samples]
    centre = [masks.unit_map(centre_prior(*t.shape)) for t in truths]
    rows = [{"run": "centre_prior", "stage": "-", **scores_of(centre, truths)}]
    for source in args.runs:
        try:
            rows.extend(run_rows(source, samples, device))
        except (OSError, ValueError) as error:
            print(f"{source}: skipped ({error})", file=sys.stderr)
    columns = ["run", "stage", *(f"{split}_error{suffix}" for split in ("val", "test")
                                 for suffix, _ in SCORINGS), "val_entropy", "test_entropy",
               "jaccard_fraction", "jaccard_top", "jaccard_mass", "jaccard_otsu", "pointing",
               "epoch_s"]
    print(f"{len(samples)} horse images ({len(skips)} skipped)")
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join("-" if row.get(c) is None else
                         (f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]))
                         for c in columns))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
