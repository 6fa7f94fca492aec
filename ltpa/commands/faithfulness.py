"""``ltpa faithfulness``: is the attention faithful? Deletion / insertion curves, confidence
change and the randomisation check of every attention stage against post-hoc maps and floors.

Writes faithfulness.json, faithfulness.csv, faithfulness_curves.csv and faithfulness.md to --out,
and faithfulness.html where Plotly is installed (the GPU machine has none: run
``ltpa faithfulness --figure-from OUT/faithfulness.json`` elsewhere). Needs only torch,
torchvision, numpy, Pillow and OpenCV.
"""
from __future__ import annotations

import argparse
import sys

from ltpa.commands import print_written
from ltpa.faithfulness import DEFAULT_CASCADE_STEPS, DEFAULT_REPLACEMENT, DEFAULT_STEPS, METHODS, METRICS, REPLACEMENTS
from ltpa.faithfulness_results import DEFAULT_RANDOMISATION_IMAGES


def _names(text: str) -> list[str] | None:
    """``all``/``auto`` -> None (every choice that applies), else the comma-separated names."""
    if text.strip() in ("all", "auto"):
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="all",
                        help="comma-separated zoo ids, checkpoint files or run folders, or 'all' "
                             "(default) for every shipped model")
    parser.add_argument("--data", default="cifar10",
                        help="cifar10/cifar100/svhn (torchvision, test split), an ImageFolder tree with "
                             "test/, a folder of class folders, or any folder of images")
    parser.add_argument("--data-root", default=None, help="folder of the torchvision dataset files")
    parser.add_argument("--methods", default="auto",
                        help=f"comma-separated methods ({', '.join(METHODS)}, or a stage name such as "
                             "layer13); 'auto' (default): every one that applies to each model")
    parser.add_argument("--metrics", default="all", help=f"comma-separated metrics ({', '.join(METRICS)}); default all")
    parser.add_argument("--replacement", default=DEFAULT_REPLACEMENT, choices=list(REPLACEMENTS),
                        help=f"what removed pixels become (default {DEFAULT_REPLACEMENT})")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"points per deletion / insertion curve (default {DEFAULT_STEPS})")
    parser.add_argument("--subset", type=int, default=None,
                        help="score a fixed random subset of N images (seeded by --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset, random maps, ties and noise")
    parser.add_argument("--randomisation-images", type=int, default=DEFAULT_RANDOMISATION_IMAGES,
                        help=f"images (the first of the subset) for the randomisation check (default "
                             f"{DEFAULT_RANDOMISATION_IMAGES})")
    parser.add_argument("--cascade-steps", type=int, default=DEFAULT_CASCADE_STEPS,
                        help=f"steps of the cascading re-initialisation (default {DEFAULT_CASCADE_STEPS})")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch of maps (default 100)")
    parser.add_argument("--forward-batch", type=int, default=None,
                        help="perturbed images per forward pass (default 4096 on CUDA, 512 elsewhere)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast for the perturbed-image forwards on CUDA (maps stay fp32)")
    parser.add_argument("--out", default="runs/faithfulness", help="output folder (default runs/faithfulness)")
    parser.add_argument("--no-figure", action="store_true", help="do not write the HTML figure")
    parser.add_argument("--figure-from", metavar="JSON", default=None,
                        help="only rebuild faithfulness.html and faithfulness.md from an existing "
                             "results file (or folder), next to it or in --out if given")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ltpa.faithfulness_results import RESULTS_MD, load_results, results_markdown, run_faithfulness, write_figure, write_results
    from ltpa.zoo import list_zoo

    if args.figure_from:
        results = load_results(args.figure_from)
        source = Path(args.figure_from)
        out = Path(args.out) if args.out != "runs/faithfulness" else (source if source.is_dir() else source.parent)
        out.mkdir(parents=True, exist_ok=True)
        (out / RESULTS_MD).write_text(results_markdown(results))
        print(f"wrote {write_figure(results, out)}")
        print(f"wrote {out / RESULTS_MD}")
        return 0
    models = _names(args.models)
    if models is None:
        models = [entry.id for entry in list_zoo()]
        if not models:
            raise ValueError("the zoo is empty (no assets/models/manifest.json or LTPA_ZOO); pass --models")
    for label, value in (("--batch-size", args.batch_size), ("--steps", args.steps),
                         ("--cascade-steps", args.cascade_steps)):
        if value < 1:
            raise ValueError(f"{label} must be a positive integer; got {value}")
    if args.forward_batch is not None and args.forward_batch < 1:
        raise ValueError(f"--forward-batch must be a positive integer; got {args.forward_batch}")
    if args.randomisation_images < 1:
        raise ValueError(f"--randomisation-images must be a positive integer; got {args.randomisation_images}")
    results = run_faithfulness(
        models, args.data, _names(args.methods), _names(args.metrics), args.subset, args.device,
        args.steps, args.replacement, args.batch_size, args.forward_batch, args.amp, args.seed,
        args.randomisation_images, args.cascade_steps, args.data_root,
        log=lambda line: print(line, flush=True),
    )
    written = write_results(results, args.out, figure=not args.no_figure)
    print_written(written)
    print(results_markdown(results), end="")
    return 0
