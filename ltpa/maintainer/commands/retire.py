"""``ltpa zoo retire``: take a model out of the zoo, its card and log kept in the reproduction folder.

Its weights go (the asset budget is why a model leaves); the card keeps every measurement, and
cards whose commands no longer recreate them get a ``recreate_command`` (ltpa.maintainer.recreate).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.baselines import reproduction_dir
from ltpa.maintainer.recreate import refresh_recreate_commands
from ltpa.maintainer.shipping import retire_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_id", help="the shipped id to take out")
    parser.add_argument("--as", dest="retire_as", required=True,
                        help="the id its card is kept under, e.g. vgg_att3_concat_dp_zoo1")
    parser.add_argument("--zoo", default="assets/models")
    parser.add_argument("--retire-to", default=None,
                        help="folder for the kept card (default: reproduction/ beside the zoo)")


def run(args: argparse.Namespace) -> int:
    zoo = Path(args.zoo)
    retire_to = Path(args.retire_to) if args.retire_to else reproduction_dir(zoo)
    card = retire_model(args.model_id, zoo, retire_to, args.retire_as)
    print(f"retired {args.model_id}: its card kept as {retire_to / 'cards' / card['id']}.json")
    for card_id in refresh_recreate_commands(retire_to):
        print(f"{card_id}: its command no longer recreates it under today's recipes; "
              f"recreate_command added")
    return 0
