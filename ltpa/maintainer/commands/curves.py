"""``ltpa zoo curves``: the shipped FGSM curves, gathered by sha256 from results measured per run."""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.curves import shipped_curves
from ltpa.robustness import load_results, write_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path,
                        help="robustness results (files or folders), e.g. measured on every seed "
                             "right after training; the first sets the header")
    parser.add_argument("--zoo", default="assets/models")
    parser.add_argument("--out", default="assets/robustness")


def run(args: argparse.Namespace) -> int:
    measured = []
    for path in args.results:
        results = load_results(path)
        if results is None:
            raise ValueError(f"no robustness results in {path}")
        measured.append(results)
    results = shipped_curves(Path(args.zoo), measured)
    written = write_results(results, args.out, figure=False)
    print(f"{len(results['models'])} shipped curves written to {written['json']}")
    return 0
