"""How fast the faithfulness scorecard is: images/s of the full scorecard (every method that
applies, deletion + insertion + confidence, and the randomisation check) per model.

    python bench/faithfulness_speed.py                                  # this CPU, 4 images
    python bench/faithfulness_speed.py --device cuda --images 2000 --amp   # the GPU machine

For each model it times ``ltpa.faithfulness_results.score_dataset`` as ``ltpa faithfulness``
runs it (after an untimed warm-up batch on CUDA) and prints the curve images/s, the randomisation
time for its images, and the time projected for 10,000 images with the randomisation check on
500 of them (the command's default). Images: --data (as ``ltpa faithfulness --data``) or random
uint8 noise (speed does not depend on the pixels). Models: the zoo's (assets/models or LTPA_ZOO),
else untrained registry models of those names. Needs only torch/numpy (no Plotly, no Streamlit).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ltpa  # noqa: E402
from ltpa.device import get_device  # noqa: E402
from ltpa.faithfulness import DEFAULT_STEPS, resolve_methods  # noqa: E402
from ltpa.faithfulness_results import DEFAULT_RANDOMISATION_IMAGES, load_images, score_dataset  # noqa: E402
from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, PixelModel  # noqa: E402
from ltpa.zoo import list_zoo, load_zoo_model  # noqa: E402

FULL_RUN_IMAGES = 10_000


def build(model_id: str, device: torch.device) -> tuple[str, torch.nn.Module]:
    """A zoo model by id, or an untrained registry model of that name."""
    if model_id in {e.id for e in list_zoo()}:
        return model_id, load_zoo_model(model_id, device=device).model
    model = ltpa.create_model(model_id).eval()
    return f"{model_id} (untrained)", PixelModel(model, CIFAR10_MEAN, CIFAR10_STD).to(device).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="comma-separated ids, or all (the zoo)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4, help="images to score per model")
    parser.add_argument("--data", default=None, help="score these images instead of noise")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--replacement", default="blur")
    parser.add_argument("--batch-size", type=int, default=None, help="default 100 on CUDA, 4 on CPU")
    parser.add_argument("--forward-batch", type=int, default=None, help="default 4096 on CUDA, 512 on CPU")
    parser.add_argument("--randomisation-images", type=int, default=None,
                        help="images for the randomisation check (default: all scored, at most 500)")
    parser.add_argument("--amp", action="store_true", help="bf16 perturbed forwards (CUDA)")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (100 if cuda else 4)
    forward_batch = args.forward_batch or (4096 if cuda else 512)
    ids = [e.id for e in list_zoo()] if args.models == "all" else args.models.split(",")
    ids = ids or ["vgg_att3_concat_pc", "vgg", "resnet_att2_concat_pc"]
    if args.data:
        images, _ = load_images(args.data, list(CIFAR10_CLASSES), 32)
        images = images[:args.images]
    else:
        images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
    images = images.to(device)
    randomisation_images = min(args.randomisation_images or DEFAULT_RANDOMISATION_IMAGES, images.shape[0])
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}; {images.shape[0]} images, {args.steps} steps, replacement {args.replacement}, "
          f"batch {batch_size}, forward batch {forward_batch}, amp {args.amp and cuda}")
    print(f"{'model':34s} {'methods':>7s} {'curves img/s':>12s} {'randomisation s/img':>19s} {'10k images (s)':>14s}")
    total_projection = 0.0
    for model_id in ids:
        label, model = build(model_id, device)
        methods = resolve_methods(model)
        if cuda:  # as ltpa faithfulness runs it
            model.to(memory_format=torch.channels_last)
        if cuda:
            score_dataset(model, images[:batch_size], None, ["deletion", "insertion", "confidence"],
                          args.steps, args.replacement, batch_size, forward_batch, args.amp)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = score_dataset(model, images, None, None, args.steps, args.replacement, batch_size,
                               forward_batch, args.amp, randomisation_images=randomisation_images)
        elapsed = time.perf_counter() - start
        per_random = result["randomisation"]["time_s"] / randomisation_images
        projection = (FULL_RUN_IMAGES / result["images_per_s"]
                      + min(DEFAULT_RANDOMISATION_IMAGES, FULL_RUN_IMAGES) * per_random)
        total_projection += projection
        print(f"{label:34s} {len(methods):7d} {result['images_per_s']:12.1f} {per_random:19.4f} "
              f"{projection:14.1f}   (measured {elapsed:.1f} s)", flush=True)
        del model
    print(f"all models, 10,000 images each (randomisation on {DEFAULT_RANDOMISATION_IMAGES}): "
          f"about {total_projection:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
