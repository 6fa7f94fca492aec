"""``ltpa zoo quality``: write each shipped model's attention quality into the zoo's cards."""
from __future__ import annotations

import argparse
from pathlib import Path

from ltpa.maintainer.quality import HORSES, measure_zoo_quality, quality_rows
from ltpa.report import markdown_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--masks", required=True, type=Path,
                        help="their ground-truth masks, matched by file stem")
    parser.add_argument("--zoo", default="assets/models", type=Path)
    parser.add_argument("--dataset", default=HORSES, help="what the images are (kept on the cards)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")


def run(args: argparse.Namespace) -> int:
    cards, result = measure_zoo_quality(args.zoo, args.images, args.masks, args.dataset, args.device)
    for card in cards:
        rows = quality_rows(card)
        if rows:
            print(f"\n{card['id']} ({result.n_evaluated} images)\n")
            print(markdown_table(rows))
    print(f"\nwrote {args.zoo / 'manifest.json'}")
    return 0
