"""Forward cost of every registered model: parameters, MACs per 32x32 image, median latency.

    python3 bench/forward.py [--models NAME ...] [--width 1.0] [--device auto|cpu|cuda]
                             [--repeats-b1 N] [--repeats-b64 N] [--point-budget-s S]

Latency is the median wall time of one forward at batch 1 and at batch 64, eval mode, under
``torch.no_grad``, after warm-up runs (``torch.cuda.synchronize`` around each run on CUDA). On
CUDA a second pair of columns runs with bf16 autocast and channels_last, the fast path training
uses (cuDNN autotuning on). MACs are counted with ``torch.utils.flop_counter.FlopCounterMode``
(MACs = FLOPs / 2; convolutions and linear layers only, as usual: BN, ReLU, softmax and the
elementwise dp products are not counted). Weights are random: speed does not depend on them.

On a CPU, batch 64 of a full-width VGG takes seconds, so each timed point gets at most
``--point-budget-s`` seconds (repeats are reduced, never below 1) and the table prints how many
repeats each median is of. Needs only torch (no streamlit, no plotly): it runs on the GPU machine.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import ltpa  # noqa: E402

BATCHES = (1, 64)
INPUT_SIZE = 32


@dataclass
class Timing:
    """Median milliseconds per forward, and how many timed runs it is the median of."""

    median_ms: float
    repeats: int


@dataclass
class Row:
    name: str
    params: int
    macs: int
    timings: dict[tuple[str, int], Timing] = field(default_factory=dict)  # (mode, batch) -> timing


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def count_macs(model: torch.nn.Module, device: torch.device) -> int:
    """Multiply-accumulates of one forward of one INPUT_SIZE x INPUT_SIZE image."""
    x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def time_forward(model: torch.nn.Module, x: torch.Tensor, device: torch.device, fast: bool,
                 warmup: int, repeats: int, budget_s: float) -> Timing:
    """Median wall time of ``model(x)``; repeats shrink so the timed runs fit in ``budget_s``."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if fast else nullcontext()
    times = []
    with torch.no_grad(), autocast:
        for _ in range(max(1, warmup)):
            start = time.perf_counter()
            model(x)
            synchronise(device)
            warm_s = time.perf_counter() - start
        repeats = max(1, min(repeats, int(budget_s / max(warm_s, 1e-6))))
        for _ in range(repeats):
            synchronise(device)
            start = time.perf_counter()
            model(x)
            synchronise(device)
            times.append(time.perf_counter() - start)
    return Timing(1000 * statistics.median(times), len(times))


def measure(name: str, args: argparse.Namespace, device: torch.device, modes: tuple[str, ...]) -> Row:
    torch.manual_seed(0)
    model = ltpa.create_model(name, width=args.width).to(device).eval()
    row = Row(name, sum(p.numel() for p in model.parameters()), count_macs(model, device))
    for mode in modes:
        fast = mode == "bf16+CL"
        if fast:
            model = model.to(memory_format=torch.channels_last)
        for batch in BATCHES:
            x = torch.randn(batch, 3, INPUT_SIZE, INPUT_SIZE, device=device)
            if fast:
                x = x.contiguous(memory_format=torch.channels_last)
            small_batch = batch == 1
            row.timings[(mode, batch)] = time_forward(
                model, x, device, fast,
                warmup=args.warmup_b1 if small_batch else args.warmup_b64,
                repeats=args.repeats_b1 if small_batch else args.repeats_b64,
                budget_s=args.point_budget_s,
            )
    return row


def markdown_table(rows: list[Row], modes: tuple[str, ...]) -> str:
    header = ["model", "params", "MMACs / image"]
    for mode in modes:
        header += [f"b1 ms ({mode})", f"b64 ms ({mode})", f"b64 images/s ({mode})"]
    header.append("repeats b1/b64")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row.name}`", f"{row.params:,}", f"{row.macs / 1e6:,.0f}"]
        for mode in modes:
            one, many = row.timings[(mode, 1)], row.timings[(mode, 64)]
            cells += [f"{one.median_ms:.2f}", f"{many.median_ms:.1f}", f"{64_000 / many.median_ms:,.0f}"]
        first = modes[0]
        cells.append(f"{row.timings[(first, 1)].repeats}/{row.timings[(first, 64)].repeats}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    if device.type == "cpu":
        return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return device.type


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="registered model names (default: all of them)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats-b1", type=int, default=None, help="timed runs at batch 1")
    parser.add_argument("--repeats-b64", type=int, default=None, help="timed runs at batch 64")
    parser.add_argument("--point-budget-s", type=float, default=None,
                        help="seconds of timed runs allowed per (model, batch, mode) point")
    args = parser.parse_args(argv)
    for name in args.models or []:
        ltpa.get_spec(name)  # unknown names: ValueError listing the valid ones
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = ltpa.get_device(args.device)
    on_gpu = device.type == "cuda"
    # CPU defaults keep all 19 full-width models within about 5 minutes on 2 cores.
    defaults = {"warmup_b1": 10 if on_gpu else 2, "warmup_b64": 5 if on_gpu else 1,
                "repeats_b1": 50 if on_gpu else 7, "repeats_b64": 30 if on_gpu else 2,
                "point_budget_s": 5.0 if on_gpu else 12.0}
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # as in training: pick the fastest conv algorithms
    modes = ("fp32", "bf16+CL") if on_gpu else ("fp32",)
    names = args.models or ltpa.list_models()
    print(f"# bench/forward.py on {describe_device(device)}; torch {torch.__version__}; "
          f"width {args.width:g}; input {INPUT_SIZE}x{INPUT_SIZE}; modes: {', '.join(modes)}")
    print(f"# warm-up {args.warmup_b1} (b1) / {args.warmup_b64} (b64) runs; up to {args.repeats_b1} (b1) / "
          f"{args.repeats_b64} (b64) timed runs, fewer when a point would exceed "
          f"{args.point_budget_s:g} s; latency = median ms per forward", flush=True)
    started = time.perf_counter()
    rows = []
    for name in names:
        rows.append(measure(name, args, device, modes))
        print(f"#   {name}: done ({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)
    print(markdown_table(rows, modes))
    print(f"# total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as error:
        print(f"bench/forward.py: error: {error}", file=sys.stderr)
        sys.exit(2)
