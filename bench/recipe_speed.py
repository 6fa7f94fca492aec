"""Wall time of whole `ltpa train` runs of the fast recipe, alone on the machine, with FLOP/s.

Usage:
    python3 bench/recipe_speed.py --data DIR --runs RUNS_DIR [--models a,b] [--seed 0]
        [--json OUT] [-- EXTRA ltpa train FLAGS]

Each model is trained with ``ltpa train MODEL --data DIR`` and nothing else (the recipe's
defaults, ``ltpa.recipe``), one after the other, so each has the GPU to itself. Reported per run:
the process's wall time (start of Python to exit: imports, reading and decoding the data,
compilation, every epoch, every evaluation, the files), its start-up (to ``Trainer.run``) and exit
(after the last save), the setup and its phases, the compiler's phase times, the side
compile's times, first compiled epoch and cache hits (``--compile-ahead``), the evaluation share
from its log, the median epoch, the training step's FLOPs per image (``torch.utils.flop_counter`` over one
forward and backward pass of the recipe's model and loss), the achieved training TFLOP/s at the
median epoch and its share of the GPU's bf16 peak, measured here with large bf16 matrix products
(and, on an H200, of the 989 TFLOP/s dense bf16 figure of NVIDIA's data sheet).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ltpa.registry import create_model  # noqa: E402
from ltpa.training import error_percent, training_loss  # noqa: E402

DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def training_flops_per_image(config: dict, size: int = 32, batch: int = 4) -> float:
    """FLOPs of one training step per image (forward + backward) of a run's configuration (its
    log's ``config``: model, width, model settings, loss terms)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(config["model"], num_classes=10, width=config["width"],
                         **config["overrides"])
    model.train()
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    counter = FlopCounterMode(display=False)
    with counter:
        loss = training_loss(model(x), y, config["label_smoothing"], config["aux_weight"],
                             config["entropy_weight"])
        loss.backward()
    return counter.get_total_flops() / batch


def bf16_matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 20) -> float | None:
    """The bf16 TFLOP/s of back-to-back n x n matrix products (None without CUDA)."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def run_one(model_id: str, args: argparse.Namespace, extra: list[str]) -> dict:
    """Train one model alone through the command line and read its log."""
    out = args.runs / f"{model_id}_s{args.seed}"
    command = [sys.executable, "-m", "ltpa", "train", model_id, "--data", str(args.data),
               "--out", str(out), "--seed", str(args.seed), *extra]
    started, launched_unix = time.perf_counter(), time.time()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall, ended_unix = time.perf_counter() - started, time.time()
    if done.returncode != 0:
        return {"model": model_id, "error": done.stderr[-2000:]}
    log = json.loads((out / "log.json").read_text())
    epochs = log["epochs"]
    config = log["config"]
    epoch_times = [row["epoch_time_s"] for row in epochs]
    last = epochs[-1]
    return {
        "model": model_id, "seed": args.seed, "run": str(out), "wall_s": round(wall, 1),
        "setup_s": log.get("setup_s"), "setup_phases_s": log.get("setup_phases_s"),
        "compile_phases_s": log.get("compile_phases_s"),
        # With compile_ahead: the side process's times, the first compiled epoch and whether the
        # run's compile found its graphs in the cache.
        "compile_ahead": log.get("compile_ahead"),
        "compiled_from_epoch": log.get("compiled_from_epoch"),
        "compile_cache": log.get("compile_cache"),
        # The process's time outside Trainer.run: Python start-up and imports before it, the
        # exit (and anything else after the last save) after it.
        "startup_s": _seconds_between(launched_unix, log.get("run_started_unix")),
        "exit_s": _seconds_between(log.get("saved_unix"), ended_unix),
        "epochs": len(epochs),
        "epochs_s": round(sum(epoch_times), 1), "first_epoch_s": epoch_times[0],
        "median_epoch_s": statistics.median(epoch_times),
        "eval_s": round(sum(row.get("eval_time_s", 0.0) for row in epochs), 1),
        "train_images_per_epoch": epochs[-1]["train_images"], "config": config,
        # Plain, flip and (where the run scores it) flip-and-translate errors, in %.
        **{f"{split}_error{suffix}": error_percent(last.get(f"{split}_acc{suffix}"))
           for split in ("val", "test") for suffix in ("", "_flip", "_tta")},
        "test_entropy": last.get("test_entropy"),
        "command": " ".join(command[2:]),
    }


def _seconds_between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 1)


def with_rates(row: dict, peak: float | None, sheet: float | None) -> dict:
    """A finished run's row with its FLOPs per image, TFLOP/s and shares of the bf16 peak."""
    if "error" in row:
        return row
    flops = training_flops_per_image(row.pop("config"))
    achieved = flops * row["train_images_per_epoch"] / row["median_epoch_s"] / 1e12
    row.update(gflop_per_train_image=round(flops / 1e9, 2), train_tflops=round(achieved, 1),
               share_of_measured_bf16_peak=None if peak is None else round(achieved / peak, 3),
               share_of_datasheet_bf16_peak=None if sheet is None else round(achieved / sheet, 3))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/recipe_speed"))
    parser.add_argument("--models", default="vgg_att3_concat_pc,resnet_att2_concat_pc")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("extra", nargs="*", help="more ltpa train flags (after --)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    # The peak first, while nothing else runs; each run's row is printed and written as soon as
    # it finishes (a later run cut short by a time limit loses only its own row).
    peak = bf16_matmul_tflops(device)
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in gpu), None)
    report = {"gpu": gpu, "measured_bf16_matmul_tflops": None if peak is None else round(peak, 1),
              "datasheet_bf16_tflops": sheet, "runs": []}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}), flush=True)
    for model_id in [m for m in args.models.split(",") if m]:
        row = with_rates(run_one(model_id, args, args.extra), peak, sheet)
        report["runs"].append(row)
        print(json.dumps(row, indent=1), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
    return 0 if all("error" not in row for row in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
