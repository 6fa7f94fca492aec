"""``ltpa zoo train``: train and ship the zoo recipes (see ltpa.maintainer.shipping)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ltpa.checkpoint import PRECISIONS
from ltpa.maintainer.recipes import (BATCH_128_RECIPES, FAST_ZOO_RECIPES, FULL_WIDTH_RECIPES, ZOO_RECIPES,
                                     parse_settings)
from ltpa.maintainer.shipping import train_zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ids", default=",".join(ZOO_RECIPES),
                        help=f"comma-separated recipes (default the shipped zoo: "
                        f"{', '.join(ZOO_RECIPES)}; also "
                        f"{', '.join([*FULL_WIDTH_RECIPES, *BATCH_128_RECIPES])}; the next zoo, "
                        f"the fast recipe with int4 training: {', '.join(FAST_ZOO_RECIPES)})")
    parser.add_argument("--data", required=True, help="dataset name or ImageFolder tree")
    parser.add_argument("--runs", default="runs/zoo", help="folder for the training runs")
    parser.add_argument("--zoo", default="assets/models", help="where shipped files and cards go")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default=None, choices=PRECISIONS,
                        help="storage of the shipped files (default: each recipe's own, "
                             "int4 for the VGGs and int8 for the ResNets)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipes' epochs")
    parser.add_argument("--seed", type=int, default=0,
                        help="repeat the recipes with another seed; runs and files are named "
                             "<id>_seed<N> (seed 0 keeps the plain id; "
                             "ltpa zoo promote ships a repeat under it)")
    parser.add_argument("--variant", default="",
                        help="name a changed recipe (needs --set); runs and files are named "
                             "<id>_<variant>")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="change a recipe for --variant (repeatable): a training setting, "
                             "e.g. --set weight_decay=1e-4 --set label_smoothing=0, or a model "
                             "argument, e.g. --set tap_features=residual")
    parser.add_argument("--no-compile", dest="compile", action="store_false")


def run(args: argparse.Namespace) -> int:
    ids = [i.strip() for i in args.ids.split(",") if i.strip()]
    zoo = Path(args.zoo)

    def report(card: dict[str, Any]) -> None:
        print(f"shipped {card['id']}: {zoo / card['file']} test error {card['test_error']:.2f}% "
              f"({card['precision']})")

    train_zoo(ids, args.data, Path(args.runs), zoo, args.device, args.compile, args.precision,
              args.epochs, args.seed, args.variant, parse_settings(args.settings), on_shipped=report)
    return 0
