"""Is a model's FGSM robustness real, or gradient masking? White-box PGD against a transfer attack.

    python3 bench/gradient_masking.py [--source vgg_att3_concat_pc] [--targets vgg,vgg_gap] [--eps 8]

On the fixed CIFAR-10 test images under tests/data (200 images), prints each target's accuracy
clean, under its own white-box PGD (``steps`` signed steps, projected to the epsilon ball), and
under PGD examples crafted on ``source`` (a black-box transfer attack). A transfer attack that
beats the white-box one means the target's own gradients are uninformative: gradient masking.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ltpa.attacks import iterative_fgsm  # noqa: E402
from ltpa.data import load_image_folder  # noqa: E402
from ltpa.maintainer.shipping import FIXTURE_DIR  # noqa: E402
from ltpa.zoo import load_zoo_model  # noqa: E402


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).logits.argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="vgg_att3_concat_pc")
    parser.add_argument("--targets", default="vgg,vgg_gap,vgg_att3_concat_pc")
    parser.add_argument("--eps", type=int, default=8, help="epsilon in /255 units")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_image_folder(FIXTURE_DIR)
    x, y = data.images.float() / 255, data.labels
    eps = args.eps / 255
    source = load_zoo_model(args.source).model
    transferred = iterative_fgsm(source, x, eps, steps=args.steps, label=y)
    print(f"{len(y)} fixture images, PGD {args.steps} steps, epsilon {args.eps}/255, "
          f"transfer source {args.source}")
    print("| target | clean | white-box PGD | transfer from source |")
    print("|---|---:|---:|---:|")
    for target_id in args.targets.split(","):
        target = load_zoo_model(target_id).model
        white = iterative_fgsm(target, x, eps, steps=args.steps, label=y)
        print(f"| {target_id} | {100 * accuracy(target, x, y):.1f} | "
              f"{100 * accuracy(target, white, y):.1f} | "
              f"{100 * accuracy(target, transferred, y):.1f} |", flush=True)


if __name__ == "__main__":
    main()
