"""``ltpa zoo baselines``: each attention model against its baseline of the same recipe, seed by
seed, over the zoo's cards and the reproduction cards beside it."""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.baselines import gaps_markdown, zoo_gaps
from ltpa.maintainer.docs import update_section

SECTION = "baselines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", default=None,
                        help="zoo folder (default: the shipped zoo, or $LTPA_ZOO); its cards and "
                             "those in reproduction/ beside it are compared")
    parser.add_argument("--update-readme", metavar="MARKDOWN", default=None,
                        help=f"rewrite the generated {SECTION} section of this Markdown file "
                             f"(the README or a page under docs/) in place")


def run(args: argparse.Namespace) -> int:
    table = gaps_markdown(zoo_gaps(Path(args.zoo) if args.zoo else None))
    if args.update_readme:
        changed = update_section(args.update_readme, SECTION, table)
        print(f"{args.update_readme}: {SECTION} section "
              f"{'updated' if changed else 'already up to date'}")
        return 0
    print(table)
    return 0
