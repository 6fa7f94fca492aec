"""How fast the attacks are: single-image FGSM against one forward pass, and the robustness sweep.

    python bench/attack_speed.py                      # CPU single-image figures + a small sweep
    python bench/attack_speed.py --device cuda --sweep-images 10000   # on the GPU machine

1. Single image (on --single-device, default cpu): median time of one forward pass (no_grad) and
   of ``ltpa.attacks.fgsm`` (forward + input gradient + step) for each model; target FGSM <= 3x a
   forward.
2. Sweep (on --device): ``ltpa.robustness.sweep_model`` over --sweep-images images at 6 epsilons
   (FGSM, true label), as ``ltpa robustness`` runs it; prints images/s and the time projected for
   10,000 images x 6 epsilons (target < 10 s for a VGG-att model on an H100). On CUDA it also
   checks how often the sign of a bf16-autocast gradient agrees with the fp32 one (the sweep keeps
   the gradient in fp32).

Models: the zoo's (assets/models, or LTPA_ZOO), else untrained full-size models from the registry
(speed does not depend on the weights). Needs only torch/numpy (no Plotly, no Streamlit).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ltpa  # noqa: E402
from ltpa.attacks import attack_direction, fgsm  # noqa: E402
from ltpa.device import get_device  # noqa: E402
from ltpa.preprocess import CIFAR10_MEAN, CIFAR10_STD, PixelModel  # noqa: E402
from ltpa.robustness import DEFAULT_LEVELS, sweep_model  # noqa: E402
from ltpa.zoo import ZooError, list_zoo, load_zoo_model  # noqa: E402

FALLBACK_MODELS = ("vgg_att3_concat_pc", "vgg", "resnet_att2_concat_pc")


def shipped_ids() -> list[str]:
    """The zoo's model ids; none when there is no zoo (the untrained stand-ins are used)."""
    try:
        return [e.id for e in list_zoo()]
    except ZooError:
        return []


def build(model_id: str, device: torch.device) -> tuple[str, PixelModel]:
    """A zoo model by id, or an untrained registry model of that name at full size."""
    if model_id in shipped_ids():
        return model_id, load_zoo_model(model_id, device=device).model
    model = ltpa.create_model(model_id).eval()
    return f"{model_id} (untrained, full size)", PixelModel(model, CIFAR10_MEAN, CIFAR10_STD).to(device).eval()


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def paired_medians(forward, attack, repeats: int, device: torch.device) -> tuple[float, float, float]:
    """Median forward time, median attack time and median per-pair ratio. The two are timed
    alternately so load from other processes on a shared CPU hits both alike."""
    for _ in range(3):  # warm-up (allocator, oneDNN/cuDNN kernel choice, lazy init)
        forward()
        attack()
    pairs = [(_timed(forward, device), _timed(attack, device)) for _ in range(repeats)]
    return (statistics.median(f for f, _ in pairs), statistics.median(a for _, a in pairs),
            statistics.median(a / f for f, a in pairs))


def single_image(model_ids: list[str], device: torch.device, repeats: int) -> None:
    print(f"## Single image on {device} ({torch.get_num_threads()} CPU threads), median of {repeats}")
    print("| model | forward (ms) | FGSM (ms) | FGSM / forward (median of pairs) |")
    print("|---|---:|---:|---:|")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    for model_id in model_ids:
        name, model = build(model_id, device)

        def forward() -> None:
            with torch.no_grad():
                model(x)

        t_forward, t_fgsm, ratio = paired_medians(forward, lambda: fgsm(model, x, 4 / 255), repeats, device)
        print(f"| {name} | {1e3 * t_forward:.1f} | {1e3 * t_fgsm:.1f} | {ratio:.2f}x |", flush=True)


def sweep(model_id: str, device: torch.device, n_images: int, batch_size: int, amp: bool) -> None:
    name, model = build(model_id, device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (n_images,), generator=generator).to(device)
    channels_last = device.type == "cuda"
    # Warm-up on one batch (cuDNN picks its kernels), then the timed sweep.
    sweep_model(model, images[:batch_size], labels[:batch_size], DEFAULT_LEVELS, batch_size,
                amp=amp, channels_last=channels_last)
    curve = sweep_model(model, images, labels, DEFAULT_LEVELS, batch_size, amp=amp, channels_last=channels_last)
    rate = n_images / curve.sweep_time_s
    print(f"| {name} | {device} | {'bf16 eval' if amp and device.type == 'cuda' else 'fp32'} | {batch_size} | "
          f"{n_images} | {curve.sweep_time_s:.2f} | {rate:.0f} | {10000 / rate:.1f} |", flush=True)
    if device.type == "cuda" and amp:
        x = images[:batch_size].float() / 255
        direction32, _, _ = attack_direction(model, x, label=labels[:batch_size])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            direction16, _, _ = attack_direction(model, x, label=labels[:batch_size])
        agree = (direction32.sign() == direction16.sign()).float().mean().item()
        print(f"  sign agreement of a bf16-autocast gradient with the fp32 one: {agree:.2%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated ids (default: the zoo, else "
                        + ", ".join(FALLBACK_MODELS) + ")")
    parser.add_argument("--single-device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--device", default="auto", help="device of the sweep")
    parser.add_argument("--sweep-models", default=None,
                        help="models of the sweep (default: every model of --models)")
    parser.add_argument("--sweep-images", type=int, default=None,
                        help="images in the sweep (default 10000 on CUDA, 200 on CPU)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--amp", action="store_true", help="also time bf16 evaluation forwards (CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU intra-op threads (default: torch's); 1 avoids OpenMP spin-waiting on a busy CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    zoo_ids = shipped_ids()
    model_ids = args.models.split(",") if args.models else (zoo_ids or list(FALLBACK_MODELS))
    print(f"torch {torch.__version__}")
    if not args.skip_single:
        single_image(model_ids, get_device(args.single_device), args.repeats)
    device = get_device(args.device)
    n_images = args.sweep_images or (10000 if device.type == "cuda" else 200)
    sweep_ids = args.sweep_models.split(",") if args.sweep_models else model_ids
    print(f"\n## Robustness sweep: FGSM at {len(DEFAULT_LEVELS)} epsilons {list(DEFAULT_LEVELS)}")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}")
    print("| model | device | precision | batch | images | time (s) | images/s | 10,000 images x 6 eps (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model_id in sweep_ids:
        sweep(model_id, device, n_images, args.batch_size, amp=False)
        if args.amp and device.type == "cuda":
            sweep(model_id, device, n_images, args.batch_size, amp=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
