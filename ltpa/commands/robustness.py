"""``ltpa robustness``: accuracy and fooling rate against FGSM / I-FGSM epsilon over a dataset.

Writes robustness.json and robustness.csv to --out (and robustness.html where Plotly is
installed); ``--markdown FILE`` instead prints the README tables of an existing results file.
Needs only torch, torchvision, numpy, Pillow and OpenCV.
"""
from __future__ import annotations

import argparse
import sys

from ltpa.commands import print_written
from ltpa.attacks import ATTACKS, DEFAULT_STEPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="all",
                        help="comma-separated shipped model ids, or 'all' (default) for every model "
                             "in the zoo manifest")
    parser.add_argument("--eps", default="0,1,2,4,8,16",
                        help="epsilons as integers k meaning k/255 (default 0,1,2,4,8,16)")
    parser.add_argument("--data", default="cifar10",
                        help="cifar10/cifar100/svhn (torchvision, test split), an ImageFolder tree with "
                             "test/, or a folder with one sub-folder per class")
    parser.add_argument("--data-root", default=None, help="folder of the torchvision dataset files")
    parser.add_argument("--attack", choices=ATTACKS, default="fgsm",
                        help="fgsm (default) or ifgsm (iterative, --steps steps)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="I-FGSM steps (default 10)")
    parser.add_argument("--label", choices=("true", "predicted"), default="true",
                        help="attack the true label (default) or the clean prediction")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--amp", action="store_true",
                        help="bf16 autocast for the evaluation forwards on CUDA (the attack gradient "
                             "stays fp32)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use a fixed random subset of N images (quick runs)")
    parser.add_argument("--out", default="runs/robustness", help="output folder (default runs/robustness)")
    parser.add_argument("--no-figure", action="store_true", help="do not write the HTML figure")
    parser.add_argument("--merge", action="store_true",
                        help="add these curves to the results already in --out (a model measured "
                             "again replaces its curve), e.g. after retraining some models")
    parser.add_argument("--markdown", metavar="JSON", default=None,
                        help="print the Markdown tables of an existing results file (or folder) and exit")


def run(args: argparse.Namespace) -> int:
    from ltpa.robustness import (load_results, merge_results, parse_levels, results_markdown,
                                 run_robustness, write_results)
    from ltpa.zoo import list_zoo

    if args.markdown:
        results = load_results(args.markdown)
        if results is None:
            raise FileNotFoundError(f"no robustness results at {args.markdown}")
        print(results_markdown(results), end="")
        return 0
    if args.models.strip() == "all":
        model_ids = [entry.id for entry in list_zoo()]
        if not model_ids:
            raise ValueError("the zoo is empty (no assets/models/manifest.json or LTPA_ZOO); "
                             "train models first or pass --models")
    else:
        model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.steps < 1:
        raise ValueError(f"--steps must be a positive integer; got {args.steps}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be a positive number of images; got {args.limit}")
    results = run_robustness(
        model_ids, args.data, parse_levels(args.eps), args.batch_size, args.device, args.limit,
        args.attack, args.steps, args.label, args.amp, args.data_root,
        log=lambda line: print(line, flush=True),
    )
    if args.merge:
        existing = load_results(args.out)
        if existing is not None:
            results = merge_results(existing, results)
    written = write_results(results, args.out, figure=not args.no_figure)
    print_written(written)
    print(results_markdown(results), end="")
    return 0
