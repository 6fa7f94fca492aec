"""``ltpa zoo promote``: ship a trained run under a zoo id, keeping the card it replaces.

Promoting a run is how a changed recipe reaches the zoo, so afterwards every card in the
reproduction folder whose training command no longer recreates its recorded configuration under
today's recipes gets a ``recreate_command`` that does (ltpa.maintainer.recreate).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ltpa.maintainer.baselines import reproduction_dir
from ltpa.maintainer.recreate import refresh_recreate_commands
from ltpa.maintainer.shipping import promote_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", help="the run's card, e.g. runs-out/reproduction/cards/NAME.json "
                                     "(its file and log beside the cards folder)")
    parser.add_argument("--as", dest="model_id", required=True, help="the zoo id it ships as")
    parser.add_argument("--zoo", default="assets/models")
    parser.add_argument("--retire-as", default=None,
                        help="id for the card it replaces, kept (without weights) under --retire-to")
    parser.add_argument("--note", default="",
                        help="why this run ships, kept in the card (e.g. 'better of two seeds')")
    parser.add_argument("--selection", type=Path, default=None,
                        help="the record of `ltpa zoo select` that chose this run, kept in the card")
    parser.add_argument("--retire-to", default=None,
                        help="folder for the replaced card (default: reproduction/ beside the zoo)")


def run(args: argparse.Namespace) -> int:
    zoo = Path(args.zoo)
    retire_to = Path(args.retire_to) if args.retire_to else reproduction_dir(zoo)
    selection = json.loads(args.selection.read_text()) if args.selection else None
    card = promote_run(Path(args.card), args.model_id, zoo, retire_to, args.retire_as, args.note,
                       selection)
    print(f"shipped {card['trained_as']} as {args.model_id} ({card['test_error']}% test error)")
    for card_id in refresh_recreate_commands(retire_to):
        print(f"{card_id}: its command no longer recreates it under today's recipes; "
              f"recreate_command added")
    return 0
