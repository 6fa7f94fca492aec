"""``ltpa models``: list registered models with parameters and attention map sizes."""
from __future__ import annotations

import argparse

from ltpa.maintainer.docs import models_section_markdown, models_table_plain, update_readme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="print the README's Models section (heading, notes, Markdown table)")
    parser.add_argument("--update-readme", metavar="README", default=None,
                        help="rewrite the Models section of this README in place")


def run(args: argparse.Namespace) -> int:
    if args.update_readme:
        changed = update_readme(args.update_readme)
        print(f"{args.update_readme}: models section {'updated' if changed else 'already up to date'}")
        return 0
    print(models_section_markdown() if args.markdown else models_table_plain(), end="")
    return 0
