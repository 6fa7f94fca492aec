"""``ltpa zoo-promote``: ship a trained run under a zoo id, keeping the card it replaces.

Promoting a run is how a changed recipe reaches the zoo, so afterwards every card in the
reproduction folder whose training command no longer recreates its recorded configuration under
today's recipes gets a ``recreate_command`` that does (the command as run stays as it was).
"""
from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ltpa.baselines import reproduction_dir
from ltpa.commands import train_zoo as train_zoo_command
from ltpa.registry import default_arguments
from ltpa.shipping import CARDS_DIR, parse_settings, promote_run, recipe_config, settings_arguments
from ltpa.training import RESUMABLE_CHANGES, TrainConfig

# The variant name given to a run that was the recipe itself when it was trained.
EARLIER_RECIPE_VARIANT = "earlier-recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", help="the run's card, e.g. runs-out/reproduction/cards/NAME.json "
                                     "(its file and log beside the cards folder)")
    parser.add_argument("--as", dest="model_id", required=True, help="the zoo id it ships as")
    parser.add_argument("--zoo", default="assets/models")
    parser.add_argument("--retire-as", default=None,
                        help="id for the card it replaces, kept (without weights) under --retire-to")
    parser.add_argument("--note", default="",
                        help="why this run ships, kept in the card (e.g. 'better of two seeds')")
    parser.add_argument("--retire-to", default=None,
                        help="folder for the replaced card (default: reproduction/ beside the zoo)")


def command_config(command: str) -> tuple[TrainConfig, str, argparse.Namespace]:
    """The configuration and shipping precision a ``ltpa train-zoo`` command trains today."""
    parser = argparse.ArgumentParser(prog="ltpa train-zoo")
    train_zoo_command.add_arguments(parser)
    words = shlex.split(command)
    if words[:2] != ["ltpa", "train-zoo"]:
        raise ValueError(f"not an ltpa train-zoo command: {command!r}")
    args = parser.parse_args(words[2:])
    config, precision = recipe_config(args.ids, "", "", epochs=args.epochs, seed=args.seed,
                                      settings=parse_settings(args.settings))
    return config, args.precision or precision, args


def recreate_command(card: dict[str, Any]) -> str | None:
    """A train-zoo command that trains the card's recorded configuration under today's recipes,
    or None when the card's own command still does."""
    command = card["training"]["command"]
    config, precision, args = command_config(command)
    recorded = asdict(TrainConfig.from_dict(card["training"]["config"]))
    # Where and how fast a run went (data path, device, compilation) is not what it learnt.
    settings = {key: value for key, value in recorded.items()
                if key not in RESUMABLE_CHANGES and value != getattr(config, key)}
    # Model arguments the file was built with (a card records them all, including those a run
    # predates, such as the residual taps) that the command's recipe would build otherwise.
    # Width is a recipe setting, compared above.
    built = {**default_arguments(config.model), **config.overrides}
    arguments = {key: value for key, value in card.get("kwargs", {}).items()
                 if key in built and key != "width" and value != built[key]}
    if arguments:
        settings["overrides"] = {**settings.get("overrides", {}), **arguments}
    if card.get("precision") and card["precision"] != precision:
        settings["precision"] = card["precision"]
    if not settings:
        return None
    variant = "" if args.variant else f" --variant {EARLIER_RECIPE_VARIANT}"
    return command + variant + settings_arguments(settings)


def refresh_recreate_commands(folder: Path) -> list[str]:
    """Give every card in ``folder/cards`` whose command no longer recreates it a
    ``recreate_command`` (and drop one no longer needed); returns the ids of the cards changed."""
    changed = []
    for path in sorted((folder / CARDS_DIR).glob("*.json")):
        card = json.loads(path.read_text())
        needed = recreate_command(card)
        if needed != card.get("recreate_command"):
            card.pop("recreate_command", None)
            if needed:
                card["recreate_command"] = needed
            path.write_text(json.dumps(card, indent=2) + "\n")
            changed.append(card["id"])
    return changed


def run(args: argparse.Namespace) -> int:
    zoo = Path(args.zoo)
    retire_to = Path(args.retire_to) if args.retire_to else reproduction_dir(zoo)
    card = promote_run(Path(args.card), args.model_id, zoo, retire_to, args.retire_as, args.note)
    print(f"shipped {card['trained_as']} as {args.model_id} ({card['test_error']}% test error)")
    for card_id in refresh_recreate_commands(retire_to):
        print(f"{card_id}: its command no longer recreates it under today's recipes; "
              f"recreate_command added")
    return 0
