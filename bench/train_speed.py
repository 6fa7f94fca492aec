"""Training and evaluation throughput (images/s) per zoo recipe, on synthetic CIFAR-sized data.

    python3 bench/train_speed.py [--device auto|cpu|cuda] [--ids a,b] [--steps 30] [--compile]
        [--batch-size N]
        [--compile-mode default|reduce-overhead|max-autotune|max-autotune-no-cudagraphs]

Times ``Trainer.train_step`` under each zoo recipe's own configuration (model, width, batch size,
on-device augmentation, optimiser with its weight-decay groups, label smoothing, schedule, bf16
autocast and channels_last on CUDA): the step ``ltpa train`` runs. Prints a Markdown table. Needs
only torch, numpy, pillow and opencv (runs on the GPU machine).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ltpa.data import DeviceLoader, ImageSet  # noqa: E402
from ltpa.device import get_device  # noqa: E402
from ltpa.maintainer.recipes import ZOO_RECIPES, recipe_config  # noqa: E402
from ltpa.training import COMPILE_MODES, Trainer  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model_id: str, device: torch.device, steps: int, compile_model: bool,
            compile_mode: str = "default", batch: int | None = None) -> tuple[float, float, float]:
    """Training images/s per step (median, synchronised around each step, data preparation
    excluded), training images/s as a training loop runs (steps queued back to back, data
    preparation included, one synchronisation at the end) and evaluation images/s. The step is
    ``Trainer.train_step`` of the recipe's own configuration: the step ``ltpa train`` runs."""
    # No validation split: every synthetic batch is a timed step (a recipe that holds out a tenth
    # of the training set would otherwise leave a short run without its timed steps).
    settings = {"compile_mode": compile_mode, "validation": 0.0} | ({"batch_size": batch} if batch else {})
    # The bench never saves: the run folder is only a name.
    config, _ = recipe_config(model_id, "synthetic", "bench-not-saved", str(device), compile_model,
                              settings=settings)
    batch = config.batch_size
    n = batch * (steps + 3)
    classes = [str(i) for i in range(10)]
    data = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8),
                    torch.randint(0, 10, (n,)), classes)
    trainer = Trainer(config, command="bench/train_speed.py")
    trainer.prepare(sets=(data, data))
    cuda = trainer.cuda
    trainer.model.train()

    times = []
    for step, (x, y) in enumerate(trainer.train_loader):
        sync(device)
        start = time.perf_counter()
        trainer.train_step(x, y)
        sync(device)
        if step >= 3:  # warm-up (and compilation) excluded
            times.append(time.perf_counter() - start)
    train_rate = batch / statistics.median(times)
    # The same steps as a training loop runs them: the host prepares the next batch and queues
    # the next step while the GPU still works on the last one.
    sync(device)
    start, images = time.perf_counter(), 0
    for x, y in trainer.train_loader:
        trainer.train_step(x, y)
        images += x.shape[0]
    sync(device)
    loop_rate = images / (time.perf_counter() - start)
    trainer.model.eval()
    # At least three batches, so one can be left out as warm-up even on a small synthetic set.
    eval_batch = min(1000 if cuda else 256, max(1, n // 3))
    eval_loader = DeviceLoader(trainer.test_set, eval_batch, trainer.mean, trainer.std,
                               train=False, channels_last=cuda and config.channels_last)
    eval_times = []
    with torch.no_grad():
        for step, (x, _) in enumerate(eval_loader):
            sync(device)
            start = time.perf_counter()
            if trainer.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda and config.amp):
                trainer.forward(x)
            sync(device)
            if step >= 1:
                eval_times.append((time.perf_counter() - start) / x.shape[0])
            if step >= 8:
                break
    return train_rate, loop_rate, 1.0 / statistics.median(eval_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ids", default=",".join(ZOO_RECIPES))
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per model")
    parser.add_argument("--compile", action="store_true", help="model.compile() first (slow start)")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch size (default: each recipe's own)")
    args = parser.parse_args()
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; bf16+channels_last: {device.type == 'cuda'}; "
          f"compile: {args.compile and args.compile_mode}; {args.steps} timed steps")
    print("| recipe | width | batch | train images/s (per step) | train images/s (loop) | "
          "eval images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for model_id in [i for i in args.ids.split(",") if i]:
        train_rate, loop_rate, eval_rate = measure(model_id, device, args.steps, args.compile,
                                                   args.compile_mode, args.batch_size)
        recipe = ZOO_RECIPES[model_id]
        print(f"| {model_id} | {recipe['width']} | {args.batch_size or recipe['batch_size']} | "
              f"{train_rate:,.0f} | {loop_rate:,.0f} | {eval_rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
