"""``ltpa zoo``: the maintainers' command group, one module per subcommand.

These commands train, select and ship the project's own zoo; using the library or the app needs
none of them. Each module in ``ZOO_SUBCOMMANDS`` provides ``add_arguments(parser)`` and
``run(args) -> int``, like the user commands in ltpa.commands.
"""
from __future__ import annotations

import argparse
import importlib

HELP = "maintainers only: train, select and ship the project's own model zoo"
DESCRIPTION = (
    "Maintainer tools that train, select and ship the project's own model zoo (assets/models, "
    "cards of kept runs in assets/reproduction). Using the library or the app needs none of them."
)
# subcommand -> (module, one-line help)
ZOO_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ltpa.maintainer.commands.train", "train and ship the zoo recipes (seeds, variants)"),
    "curves": ("ltpa.maintainer.commands.curves",
               "the shipped FGSM curves, gathered by sha256 from curves measured per run"),
    "finalize": ("ltpa.maintainer.commands.finalize", "write the zoo manifest from shipped cards"),
    "promote": ("ltpa.maintainer.commands.promote",
                "ship a trained run (a seed or a variant) as a zoo model"),
    "retire": ("ltpa.maintainer.commands.retire",
               "take a model out of the zoo, keeping its card and log"),
    "select": ("ltpa.maintainer.commands.select",
               "which seed ships: a rule applied to the seeds' validation errors"),
    "baselines": ("ltpa.maintainer.commands.baselines",
                  "attention models against their baselines, seed by seed"),
    "runs": ("ltpa.maintainer.commands.runs", "every run with a training log: errors, entropy, time"),
    "quality": ("ltpa.maintainer.commands.quality",
                "each shipped model's attention quality on images with masks, into its card"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    sub = parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    for command, (module_name, help_text) in ZOO_SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(command, help=help_text,
                                        description=f"{help_text} (maintainers only)")
        module.add_arguments(command_parser)
        command_parser.set_defaults(zoo_handler=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.zoo_handler(args) or 0)
