"""Cost of one optimiser update (``ltpa.optim.sgd_update_``) of a recipe's model, on its own.

Usage:
    python3 bench/optimizer_step.py [--models resnet_att2_concat_pc,vgg_att3_concat_pc]
        [--optimizer muon] [--device cpu|cuda] [--repeats 50]

For each model (at its recipe's width) every parameter gets a random gradient and the update the
recipe's optimiser takes is timed (median over ``--repeats`` updates, after warm-up) and profiled
once: on CUDA the number of kernels it launches (inside a captured step graph each is a node the
GPU runs one after the other, so at these sizes their count, not their arithmetic, sets the time),
on the CPU the number of ATen operations it calls itself (not counting what they call). Prints
one row per model.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from ltpa.optim import build_optimizer, is_filter, sgd_update_  # noqa: E402
from ltpa.recipe import recipe_for  # noqa: E402
from ltpa.registry import create_model  # noqa: E402


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def operations_of_one_update(optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Kernels launched (CUDA) or top-level ATen operations called (CPU) by one update."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        sgd_update_(optimizer, [group["lr"] for group in optimizer.param_groups])
        _synchronise(device)
    return count_operations(prof.events(), device)


def count_operations(events: list, device: torch.device) -> int:
    """Kernels (CUDA) or top-level ATen calls (CPU) among a profile's events."""
    if device.type == "cuda":
        return sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    # On the CPU a foreach operation runs as one operation per tensor, where CUDA launches a few
    # kernels for the whole list: count the calls the update makes, not what they call.
    return sum(1 for e in events if e.name.startswith("aten::") and e.cpu_parent is None)


def measure(model_name: str, optimizer_name: str, device: torch.device, repeats: int) -> dict:
    """Median time and operation count of one update of ``model_name``'s parameters."""
    recipe = recipe_for(model_name, cuda=device.type == "cuda")
    torch.manual_seed(0)
    model = create_model(model_name, width=recipe["width"], **recipe["overrides"]).to(device)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-2
    optimizer = build_optimizer(model, optimizer_name, recipe["lr"], recipe["momentum"],
                                recipe["nesterov"], recipe["weight_decay"], recipe["filter_lr"])
    rates = [group["lr"] for group in optimizer.param_groups]
    for _ in range(5):  # warm-up: momentum buffers exist, kernels are loaded
        sgd_update_(optimizer, rates)
    _synchronise(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sgd_update_(optimizer, rates)
        _synchronise(device)
        times.append(time.perf_counter() - started)
    return {"model": model_name, "optimizer": optimizer_name,
            "filters": sum(1 for p in model.parameters() if is_filter(p)),
            "params": sum(1 for _ in model.parameters()),
            "median_ms": 1000 * statistics.median(times),
            "operations": operations_of_one_update(optimizer, device)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet_att2_concat_pc,vgg_att3_concat_pc")
    parser.add_argument("--optimizer", default="muon", choices=("sgd", "muon"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    kind = "kernels" if device.type == "cuda" else "ATen calls"
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}),"
          f" torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model | optimizer | filters | parameters | median update ms | {kind} per update")
    for name in args.models.split(","):
        row = measure(name, args.optimizer, device, args.repeats)
        print(f"{row['model']} | {row['optimizer']} | {row['filters']} | {row['params']} | "
              f"{row['median_ms']:.2f} | {row['operations']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
