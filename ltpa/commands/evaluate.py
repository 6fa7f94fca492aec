"""``ltpa eval``: top-1 error, per-class accuracy and the confusion matrix, as JSON and CSV.

The data go through ``ltpa.data.load_test_split`` (the one dataset resolver) and the model is
the checkpoint wrapped in a ``PixelModel``, so each image reaches the network exactly as
``ltpa.inference.analyse`` (the app) would give it. A folder holding only some of the model's
classes is scored against the model's whole class list.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from ltpa.checkpoint import load_checkpoint
from ltpa.data import DeviceLoader, ImageSet, load_test_split
from ltpa.device import get_device
from ltpa.inference import resolve_checkpoint
from ltpa.preprocess import PixelModel
from ltpa.training import MAX_TTA_TRANSLATE, evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a checkpoint file, a run folder holding model.pt, or a "
                                      "shipped model id (see `ltpa models` or the Models page)")
    parser.add_argument("--data", default="cifar10",
                        help="cifar10/cifar100/svhn, an ImageFolder tree with test/, or a test folder "
                             "with one sub-folder per class (all or some of the model's classes)")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="folder for eval.json and per_class.csv / confusion.csv")
    parser.add_argument("--flip", action="store_true",
                        help="also score mirror-image test-time augmentation (top1_error_flip)")
    parser.add_argument("--tta-translate", type=int, default=0, metavar="PIXELS",
                        help="also score flip-and-translate test-time augmentation, views moved "
                             f"PIXELS (at most {MAX_TTA_TRANSLATE}) diagonally each way "
                             "(top1_error_tta; implies --flip)")


def eval_batches(test: ImageSet, batch_size: int) -> DeviceLoader:
    """The batches ``ltpa eval`` feeds its ``PixelModel``: pixel space [0, 1], in file order.

    Args:
        test: the evaluation images (on the device to evaluate on).
        batch_size: images per batch, at least 1.

    Returns:
        A DeviceLoader of pixel-space batches.
    """
    return DeviceLoader(test, batch_size, None, None, train=False)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer; got {args.batch_size}")
    if not 0 <= args.tta_translate <= MAX_TTA_TRANSLATE:
        raise ValueError(f"--tta-translate must be an integer in [0, {MAX_TTA_TRANSLATE}]; "
                         f"got {args.tta_translate}")
    flip = args.flip or bool(args.tta_translate)
    device = get_device(args.device)
    checkpoint = resolve_checkpoint(args.model)
    model, meta = load_checkpoint(checkpoint, device=device)
    names = list(meta["class_names"])
    test, source = load_test_split(args.data, class_names=names, image_size=meta.get("input_size"),
                                   data_root=args.data_root, allow_subset=True)
    pixel_model = PixelModel(model, meta["mean"], meta["std"]).to(device).eval()
    with torch.no_grad():
        result = evaluate(pixel_model, eval_batches(test.to(device), args.batch_size), len(names),
                          flip=flip, translate=args.tta_translate)
    counts = [sum(row) for row in result.confusion]
    present = [i for i, count in enumerate(counts) if count]
    per_class = {names[i]: result.per_class_accuracy[i] for i in present}
    report = {
        "checkpoint": str(checkpoint), "model": meta.get("training", {}).get("config", {}).get("model"),
        "data": args.data, "source": source, "images": len(test), "top1_error": result.error,
        "loss": result.loss, "per_class_accuracy": per_class,
        **({"top1_error_flip": result.flip_error} if flip else {}),
        **({"top1_error_tta": result.tta_error, "tta_translate": args.tta_translate}
           if args.tta_translate else {}),
        "classes_evaluated": [names[i] for i in present],
        "confusion": result.confusion, "class_names": names, "attention_entropy": result.entropy,
    }
    print(f"{checkpoint}: top-1 error {result.error:.2f}% on {len(test)} images of {source}"
          + (f"; with flip TTA {result.flip_error:.2f}%" if flip else "")
          + (f"; with flip-and-translate TTA ({args.tta_translate} px) {result.tta_error:.2f}%"
             if args.tta_translate else ""))
    if len(present) < len(names):
        print(f"note: the data hold {len(present)} of the model's {len(names)} classes; predictions "
              "range over all of them")
    for name, accuracy in per_class.items():
        print(f"  {name:>12s} {100 * accuracy:6.2f}%")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, indent=2))
        with open(out / "per_class.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "accuracy"])
            writer.writerows(per_class.items())
        with open(out / "confusion.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true\\predicted", *names])
            for name, row in zip(names, result.confusion):
                writer.writerow([name, *row])
        print(f"wrote {out}/eval.json, per_class.csv, confusion.csv")
    return 0
