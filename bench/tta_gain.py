"""Test-time augmentation on the validation split: plain, flip, and flip-and-translate error.

Usage:
    python3 bench/tta_gain.py --data DIR MODEL [MODEL ...] [--translate 1,2] [--limit N]
        [--device cpu] [--json OUT]

Each MODEL is a checkpoint file, a run folder or a shipped id. The images are the validation
split its run held out of the training set (the run's recorded ``validation`` share and
``validation_seed``, ``ltpa.training.split_validation``), so a TTA setting is chosen without the
test set. ``--limit`` scores N of those images, evenly spaced over the split (the split is in class order),
where time is short.
Prints one row per model and setting with the wall time of its pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ltpa.checkpoint import load_checkpoint  # noqa: E402
from ltpa.data import DeviceLoader, ImageSet, load_dataset  # noqa: E402
from ltpa.device import get_device  # noqa: E402
from ltpa.inference import resolve_checkpoint  # noqa: E402
from ltpa.preprocess import PixelModel  # noqa: E402
from ltpa.training import TrainConfig, evaluate, split_validation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", required=True, help="the ImageFolder tree the runs trained on")
    parser.add_argument("--translate", default="1,2", help="comma-separated pixel shifts to score")
    parser.add_argument("--limit", type=int, default=0, help="score N evenly spaced images only")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    shifts = [int(s) for s in args.translate.split(",") if s]
    train, _ = load_dataset(args.data, download=False)
    rows = []
    for source in args.models:
        checkpoint = resolve_checkpoint(source)
        model, meta = load_checkpoint(checkpoint, device=device)
        config = TrainConfig.from_dict(meta["training"]["config"])
        _, held = split_validation(train, config.validation, config.validation_seed)
        if held is None:
            print(f"{source}: its run held out no validation images; skipped", flush=True)
            continue
        if args.limit and args.limit < len(held):
            keep = torch.linspace(0, len(held) - 1, args.limit).round().long()
            held = ImageSet(held.images[keep], held.labels[keep], held.class_names)
        pixel = PixelModel(model, meta["mean"], meta["std"]).to(device).eval()
        loader = DeviceLoader(held.to(device), args.batch_size, None, None, train=False)
        for shift in shifts:
            started = time.perf_counter()
            result = evaluate(pixel, loader, len(meta["class_names"]), flip=True, translate=shift)
            row = {"model": source, "images": len(held), "translate": shift,
                   "val_error": round(result.error, 2), "val_error_flip": round(result.flip_error, 2),
                   "val_error_tta": round(result.tta_error, 2),
                   "seconds": round(time.perf_counter() - started, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
