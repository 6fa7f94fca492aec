"""``ltpa segment-eval``: binarise attention maps into masks and score them against ground truth.

Per map source (every attention stage and their combination, CAM of the GAP baseline, Grad-CAM,
the centre prior): mean Jaccard under each mask rule and the pointing game, written as CSV,
Markdown and ``summary.json`` (``scores``). Models are shipped ids, checkpoint files or run
folders; ``--checkpoint`` (repeatable) takes trained models, an attention model scored per stage,
a GAP baseline by its CAM. Example (Weizmann Horse)::

    ltpa segment-eval --images weizmann_horse_db/rgb --masks weizmann_horse_db/figure_ground --out results/horse
    ltpa segment-eval --checkpoint runs/vgg_att3 --checkpoint runs/vgg_gap --images ... --masks ... --json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ltpa import masks
from ltpa.preprocess import CIFAR10_CLASSES
from ltpa.segmentation import (
    COMPARISONS,
    DEFAULT_CAM_MODEL,
    DEFAULT_GRAD_CAM_MODEL,
    SKIP_REASONS,
    SegmentationSettings,
    evaluate_folders,
    scores_by_map,
    settings_text,
    summary_markdown,
    write_results,
)


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--masks", type=Path, required=True,
                        help="folder of ground-truth masks, matched to images by file stem")
    parser.add_argument("--mask-suffix", default="",
                        help="suffix of mask stems, e.g. '_mask' for horse001_mask.png (default: none)")
    parser.add_argument("--models", type=_names, default=None,
                        help="comma-separated attention models: shipped ids, checkpoint files or run "
                             "folders holding model.pt (default: every shipped attention model, "
                             "none when --checkpoint is given)")
    parser.add_argument("--checkpoint", action="append", default=None, metavar="PATH",
                        help="a trained model: an ltpa checkpoint file or a run folder of `ltpa train` "
                             "(holding model.pt); repeatable. An attention model is scored per stage, "
                             "a GAP baseline (vgg_gap) by its CAM in place of --cam-model's default")
    parser.add_argument("--stages", type=_names, default=None,
                        help="comma-separated stage names and/or 'combined' (default: every stage and combined)")
    parser.add_argument("--rules", type=_names, default=list(masks.RULES),
                        help=f"comma-separated mask rules among {', '.join(masks.RULES)} (default: all)")
    parser.add_argument("--fraction", type=float, default=masks.DEFAULT_THRESHOLDS["fraction"],
                        help="fixed threshold of the fraction rule, in (0, 1] (default %(default)s)")
    parser.add_argument("--top", type=float, default=masks.DEFAULT_THRESHOLDS["top"],
                        help="fixed percentage of the top rule, in (0, 100] (default %(default)s)")
    parser.add_argument("--mass", type=float, default=masks.DEFAULT_THRESHOLDS["mass"],
                        help="fixed percentage of the mass rule, in (0, 100] (default %(default)s)")
    parser.add_argument("--combine", choices=masks.COMBINE_MODES, default="mean",
                        help="how stages combine into 'combined' (default %(default)s)")
    parser.add_argument("--opening", type=int, default=0,
                        help="morphological opening kernel in pixels, 0 = off (default %(default)s)")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest connected component of each mask")
    parser.add_argument("--compare", type=_names, default=list(COMPARISONS),
                        help=f"comparison methods among {', '.join(COMPARISONS)} (default: all; 'none' for none)")
    parser.add_argument("--cam-model", default=None,
                        help="the GAP model for CAM: shipped id, checkpoint file or run folder "
                             f"(default {DEFAULT_CAM_MODEL}, unless a GAP --checkpoint is given)")
    parser.add_argument("--grad-cam-model", default=DEFAULT_GRAD_CAM_MODEL,
                        help="the model for Grad-CAM: shipped id, checkpoint file or run folder "
                             "(default %(default)s)")
    parser.add_argument("--target-class", default=None,
                        help="class for CAM / Grad-CAM, e.g. horse (default: each image's predicted class)")
    parser.add_argument("--prior-sigma", type=float, default=0.25,
                        help="centre prior's Gaussian sigma as a fraction of each side (default %(default)s)")
    parser.add_argument("--aspect-tolerance", type=float, default=0.03,
                        help="largest relative aspect-ratio difference between image and mask (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="forward-pass batch size (default %(default)s)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--out", type=Path, default=Path("segment-eval"),
                        help="output folder (default: ./segment-eval)")
    parser.add_argument("--json", action="store_true",
                        help="print the scores per map (Jaccard per rule, pointing game) as JSON "
                             "instead of the tables")


def _class_index(name: str | None) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    if name not in CIFAR10_CLASSES:
        raise ValueError(f"unknown class {name!r}; valid choices: {', '.join(CIFAR10_CLASSES)} or an index")
    return CIFAR10_CLASSES.index(name)


def run(args: argparse.Namespace) -> int:
    settings = SegmentationSettings(
        rules=tuple(args.rules),
        thresholds={"fraction": args.fraction, "top": args.top, "mass": args.mass, "otsu": None},
        combine=args.combine,
        opening=args.opening,
        largest_component=args.largest_component,
        prior_sigma=args.prior_sigma,
        class_index=_class_index(args.target_class),
    )
    compare = [] if args.compare == ["none"] else args.compare
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {args.batch_size}")
    if args.aspect_tolerance < 0:
        raise ValueError(f"--aspect-tolerance must be >= 0; got {args.aspect_tolerance}")
    result = evaluate_folders(
        args.images, args.masks, model_ids=args.models, stages=args.stages, settings=settings,
        compare=compare, cam_model_id=args.cam_model, grad_cam_model_id=args.grad_cam_model,
        mask_suffix=args.mask_suffix, aspect_tolerance=args.aspect_tolerance, device=args.device,
        batch_size=args.batch_size, log=lambda message: print(message, file=sys.stderr),
        checkpoints=args.checkpoint or (),
    )
    paths = write_results(result, args.out)
    if args.json:
        print(json.dumps(scores_by_map(result), indent=2))
        return 0 if result.n_evaluated else 1
    for note in result.notes:
        print(f"note: {note}")
    print(f"evaluated {result.n_evaluated} of {result.n_pairs} image/mask pairs in {result.seconds:.1f} s"
          + (f" ({result.n_evaluated / result.seconds:.1f} images/s)" if result.seconds > 0 else ""))
    counts = result.skip_counts()
    if counts:
        print(f"skipped {len(result.skips)}: " + "; ".join(
            f"{n} {SKIP_REASONS[reason]}" for reason, n in sorted(counts.items())))
        for skip in result.skips[:10]:
            print(f"  {skip.name}: {SKIP_REASONS[skip.reason]}" + (f" ({skip.detail})" if skip.detail else ""))
        if len(result.skips) > 10:
            print(f"  ... {len(result.skips) - 10} more in {paths['skipped']}")
    print()
    print(settings_text(result))
    print()
    print(summary_markdown(result))
    print(f"results written to {args.out}/ ({', '.join(p.name for p in paths.values())})")
    if result.n_evaluated == 0:
        print("ltpa segment-eval: error: no image/mask pair could be evaluated", file=sys.stderr)
        return 1
    return 0
