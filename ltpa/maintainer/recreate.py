"""Whether a card's recorded training command still trains what the card records.

Cards keep the command as it was run. When a recipe changes (a promoted variant becomes the
recipe), the commands of older cards would train something else: such a card gets a
``recreate_command`` that trains its recorded configuration under today's recipes. Commands
recorded before the ``ltpa zoo`` group spell ``ltpa zoo train`` as ``ltpa train-zoo``; both are
read.
"""
from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ltpa.maintainer.commands import train as train_command
from ltpa.maintainer.recipes import parse_settings, recipe_config, settings_arguments
from ltpa.maintainer.shipping import CARDS_DIR
from ltpa.registry import default_arguments
from ltpa.training import RESUMABLE_CHANGES, TrainConfig

# The variant name given to a run that was the recipe itself when it was trained.
EARLIER_RECIPE_VARIANT = "earlier-recipe"
# How a train command starts: today, and in cards written before the ``ltpa zoo`` group.
TRAIN_COMMAND_PREFIXES = (("ltpa", "zoo", "train"), ("ltpa", "train-zoo"))


def _train_prefix(words: list[str]) -> tuple[str, ...] | None:
    """The train command's words that ``words`` start with (None: not a train command)."""
    return next((p for p in TRAIN_COMMAND_PREFIXES if tuple(words[:len(p)]) == p), None)


def is_train_command(command: str) -> bool:
    """Whether ``command`` is an ``ltpa zoo train`` (or earlier ``ltpa train-zoo``) command line."""
    return _train_prefix(shlex.split(command)) is not None


def current_spelling(command: str) -> str:
    """``command`` as it is typed today: an earlier ``ltpa train-zoo ...`` becomes
    ``ltpa zoo train ...`` (the same arguments); any other command is returned as it is."""
    words = shlex.split(command)
    prefix = _train_prefix(words)
    if prefix is None or prefix == TRAIN_COMMAND_PREFIXES[0]:
        return command
    return shlex.join([*TRAIN_COMMAND_PREFIXES[0], *words[len(prefix):]])


def command_config(command: str) -> tuple[TrainConfig, str, argparse.Namespace]:
    """The configuration and shipping precision a recorded train command trains today.

    Args:
        command: an ``ltpa zoo train ...`` (or earlier ``ltpa train-zoo ...``) command line.

    Returns:
        The configuration, the shipping precision and the parsed arguments.

    Raises:
        ValueError: for any other command.
    """
    parser = argparse.ArgumentParser(prog="ltpa zoo train")
    train_command.add_arguments(parser)
    words = shlex.split(command)
    prefix = _train_prefix(words)
    if prefix is None:
        raise ValueError(f"not an ltpa zoo train command: {command!r}")
    args = parser.parse_args(words[len(prefix):])
    config, precision = recipe_config(args.ids, "", "", epochs=args.epochs, seed=args.seed,
                                      settings=parse_settings(args.settings))
    return config, args.precision or precision, args


def recreate_command(card: dict[str, Any]) -> str | None:
    """A train command that trains the card's recorded configuration under today's recipes.

    Args:
        card: a card written by ``ltpa zoo train``, or by ``ltpa train`` with the zoo command that
            recreates it as its ``recreate_command``.

    Returns:
        The card's zoo command, in today's spelling, with the settings it needs added; None when
        the card's own command still trains what it records as written.

    Raises:
        ValueError: for a card trained by another command that has no ``recreate_command``.
    """
    command = card["training"]["command"]
    if not is_train_command(command):
        # A run trained by `ltpa train` directly is recreated by the zoo command it was given
        # when it was kept, so that one is checked instead (and kept while it still holds).
        if not card.get("recreate_command"):
            raise ValueError(f"{card.get('id')}: trained by {command!r}, not an ltpa zoo train "
                             f"command, and it has no recreate_command")
        command = card["recreate_command"]
    config, precision, args = command_config(command)
    recorded = asdict(TrainConfig.from_dict(card["training"]["config"]))
    # Where and how fast a run went (data path, device, compilation) is not what it learnt.
    settings = {key: value for key, value in recorded.items()
                if key not in RESUMABLE_CHANGES and value != getattr(config, key)}
    # Model arguments the file was built with that the command's recipe would build otherwise.
    # A card records the arguments it was given; one it leaves out was the model's default (e.g.
    # no stage classifiers, for a run that predates them). Width is a recipe setting, compared
    # above.
    defaults = default_arguments(config.model)
    built = {**defaults, **config.overrides}
    arguments = {key: value for key, value in {**defaults, **card.get("kwargs", {})}.items()
                 if key in built and key != "width" and value != built[key]}
    if arguments:
        settings["overrides"] = {**settings.get("overrides", {}), **arguments}
    if card.get("precision") and card["precision"] != precision:
        settings["precision"] = card["precision"]
    # A command recorded in the earlier spelling no longer runs as written: its card gets the
    # spelling of today even where the recipe still matches.
    command = current_spelling(command)
    if not settings:
        return None if command == card["training"]["command"] else command
    variant = "" if args.variant else f" --variant {EARLIER_RECIPE_VARIANT}"
    return command + variant + settings_arguments(settings)


def refresh_recreate_commands(folder: Path) -> list[str]:
    """Give every card in ``folder/cards`` whose command no longer recreates it a
    ``recreate_command`` (and drop one no longer needed).

    Args:
        folder: a folder of kept runs (``cards/`` and ``logs/``), e.g. assets/reproduction.

    Returns:
        The ids of the cards changed.
    """
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
