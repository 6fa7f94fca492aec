"""The ltpa command line: attention CNNs of "Learn to Pay Attention" (ICLR 2018), their maps and their robustness.

Each command lives in its own module: a module listed in ``SUBCOMMANDS`` (the user commands) or ``MAINTAINER_COMMANDS`` (the ``zoo``
group, for the project's maintainers) provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# User commands: command -> (module, one-line help).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ltpa.commands.models", "list registered models (parameters, map sizes)"),
    "train": ("ltpa.commands.train", "train a registered model"),
    "eval": ("ltpa.commands.evaluate", "evaluate a model: top-1 error, per-class accuracy, confusion"),
    "segment-eval": ("ltpa.commands.segment_eval", "score attention masks against ground truth"),
    "robustness": ("ltpa.commands.robustness", "FGSM robustness curves over a dataset"),
    "faithfulness": ("ltpa.commands.faithfulness", "is the attention faithful? deletion/insertion, confidence, randomisation"),
}
# The maintainers' group, listed after the user commands: its subcommands train, select and ship
# the project's own zoo (ltpa/maintainer/commands/__init__.py).
MAINTAINER_COMMANDS: dict[str, tuple[str, str]] = {
    "zoo": ("ltpa.maintainer.commands",
            "maintainers only: train, finalize, promote, baselines, runs (ltpa zoo --help)"),
}
EPILOG = ("Maintainers: `ltpa zoo --help` lists the commands that train and ship the project's own "
          "model zoo; using the library or the app needs none of them.")


def build_parser() -> argparse.ArgumentParser:
    """The ``ltpa`` argument parser: the user commands, then the maintainers' ``zoo`` group.

    Returns:
        The parser; each command's parser sets ``handler`` to its module's ``run``.
    """
    parser = argparse.ArgumentParser(prog="ltpa", description=__doc__.splitlines()[0], epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (module_name, help_text) in {**SUBCOMMANDS, **MAINTAINER_COMMANDS}.items():
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


class _StderrHandler(logging.Handler):
    """Library progress messages (training epochs, resumes) as plain lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def show_library_messages() -> None:
    """Print the library's INFO messages on stderr, once per process (the library never prints)."""
    library = logging.getLogger("ltpa")
    if not any(isinstance(h, _StderrHandler) for h in library.handlers):
        library.addHandler(_StderrHandler())
        library.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ltpa`` console script.

    Args:
        argv: the arguments (default: the process's).

    Returns:
        The exit status: 0 on success, 2 for bad input (one line on stderr), 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    name = " ".join(filter(None, (args.command, getattr(args, "zoo_command", None))))
    show_library_messages()
    try:
        return int(args.handler(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # Known, user-facing problems: one clear line, no traceback.
        print(f"ltpa {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltpa {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
