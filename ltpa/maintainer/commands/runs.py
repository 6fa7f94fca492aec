"""``ltpa zoo runs``: every run whose training log we have (the zoo's and those in reproduction/
beside it), one row each: epochs, last and lowest test error, the stored file's error, the lowest
attention entropy reached and the training time."""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.runs import run_logs, runs_markdown
from ltpa.registry import get_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", default=None,
                        help="zoo folder (default: the shipped zoo, or $LTPA_ZOO); its runs and "
                             "those in reproduction/ beside it are listed")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="only runs of this registered model (repeatable)")


def run(args: argparse.Namespace) -> int:
    for name in args.model:
        get_spec(name)  # an unknown name is an error listing the registered ones
    runs = [r for r in run_logs(Path(args.zoo) if args.zoo else None)
            if not args.model or r.registry_name in args.model]
    print(runs_markdown(runs))
    return 0
