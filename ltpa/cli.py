"""The ``ltpa`` command line. Each subcommand lives in its own module, imported only when used.

A module listed in ``SUBCOMMANDS`` provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ltpa.commands.models", "list registered models (parameters, map sizes)"),
    "train": ("ltpa.commands.train", "train a registered model"),
    "train-zoo": ("ltpa.commands.train_zoo", "train and ship the model-zoo recipes"),
    "zoo-finalize": ("ltpa.commands.zoo_finalize", "write the zoo manifest from shipped cards"),
    "zoo-promote": ("ltpa.commands.zoo_promote", "ship a trained run (a seed or a variant) as a zoo model"),
    "eval": ("ltpa.commands.evaluate", "evaluate a model: top-1 error, per-class accuracy, confusion"),
    "segment-eval": ("ltpa.commands.segment_eval", "score attention masks against ground truth"),
    "robustness": ("ltpa.commands.robustness", "FGSM robustness curves over a dataset"),
    "baselines": ("ltpa.commands.baselines", "attention models against their baselines, seed by seed"),
    "runs": ("ltpa.commands.runs", "every run with a training log: errors, entropy, time"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltpa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # subcommand not built yet
        command_parser = sub.add_parser(command, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ltpa`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Known, user-facing problems: one clear line, no traceback.
        print(f"ltpa {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltpa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
