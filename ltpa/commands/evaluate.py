"""``ltpa eval``: top-1 error, per-class accuracy and the confusion matrix, as JSON and CSV."""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from ltpa.checkpoint import load_checkpoint
from ltpa.data import DeviceLoader, load_image_folder, load_dataset
from ltpa.device import get_device
from ltpa.training import evaluate
from ltpa.zoo import get_entry, list_zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a checkpoint file, or a shipped model id (see the Models page)")
    parser.add_argument("--data", default="cifar10",
                        help="cifar10/cifar100/svhn, an ImageFolder tree with test/, or a test folder "
                             "with one sub-folder per class")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="folder for eval.json and per_class.csv / confusion.csv")


def resolve_checkpoint(model: str) -> Path:
    """A checkpoint path for a file path or a shipped model id."""
    path = Path(model)
    if path.is_file():
        return path
    if model in {e.id for e in list_zoo()}:
        return get_entry(model).path
    raise ValueError(f"{model!r} is neither a checkpoint file nor a shipped model id "
                     f"(shipped: {', '.join(e.id for e in list_zoo()) or 'none'})")


def run(args: argparse.Namespace) -> int:
    device = get_device(args.device)
    checkpoint = resolve_checkpoint(args.model)
    model, meta = load_checkpoint(checkpoint, device=device)
    data = Path(args.data)
    if data.is_dir() and not (data / "test").is_dir():
        test = load_image_folder(data, class_names=meta.get("class_names"),
                                 image_size=meta.get("input_size"))
    else:
        _, test = load_dataset(args.data, args.data_root, image_size=meta.get("input_size"))
    if test.class_names != meta["class_names"] and len(test.class_names) == len(meta["class_names"]):
        print("note: the dataset's class names differ from the model's; matching by index")
    elif test.class_names != meta["class_names"]:
        raise ValueError(f"the model knows {len(meta['class_names'])} classes, the data has "
                         f"{len(test.class_names)}")
    loader = DeviceLoader(test.to(device), args.batch_size, meta["mean"], meta["std"], train=False)
    with torch.no_grad():
        result = evaluate(model, loader, len(meta["class_names"]))
    names = meta["class_names"]
    report = {
        "checkpoint": str(checkpoint), "model": meta.get("training", {}).get("config", {}).get("model"),
        "data": args.data, "images": len(test), "top1_error": result.error, "loss": result.loss,
        "per_class_accuracy": dict(zip(names, result.per_class_accuracy)),
        "confusion": result.confusion, "class_names": names, "attention_entropy": result.entropy,
    }
    print(f"{checkpoint}: top-1 error {result.error:.2f}% on {len(test)} images")
    for name, accuracy in zip(names, result.per_class_accuracy):
        print(f"  {name:>12s} {100 * accuracy:6.2f}%")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, indent=2))
        with open(out / "per_class.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "accuracy"])
            writer.writerows(zip(names, result.per_class_accuracy))
        with open(out / "confusion.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true\\predicted", *names])
            for name, row in zip(names, result.confusion):
                writer.writerow([name, *row])
        print(f"wrote {out}/eval.json, per_class.csv, confusion.csv")
    return 0
