"""``ltpa zoo finalize``: merge shipped model cards into the manifest (adds fixture predictions)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.shipping import finalize_zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zoo", default="assets/models")


def run(args: argparse.Namespace) -> int:
    print(f"wrote {finalize_zoo(Path(args.zoo))}")
    return 0
