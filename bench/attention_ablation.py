"""Attention-quality ablation: train each lever (and seed) side by side on one GPU, then score.

Usage:
    python3 bench/attention_ablation.py --data DIR --horses DIR --out RESULTS_DIR
        [--variants base,ema,...] [--seeds 0,1] [--epochs 20] [--width 0.5] [--parallel 9]
        [--schedule short|recipe] [--jobs variant:seed,...] [--also RUN_DIR ...]
        [--tta-translate N]

Every variant is ``ltpa train`` with the short schedule below plus its own flags
(``--schedule recipe``: with ``ltpa train``'s own defaults, the fast recipe of ``ltpa.recipe``,
plus the variant's flags; ``--epochs`` and ``--width`` then apply only when given); all runs share
one validation split (``--validation-seed 0``), so variants are compared on validation error,
never on the test set. Each run's log and the attention-quality rows
(``bench/attention_quality.py``: per-stage horse Jaccard and pointing, entropy) are written to
``RESULTS_DIR`` as the runs finish. Prints the table at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ``ltpa train`` without the rest of the command line (its other commands are not needed here).
TRAIN = ("import argparse, sys; from ltpa.commands import train; p = argparse.ArgumentParser(); "
         "train.add_arguments(p); sys.exit(train.run(p.parse_args()))")

# The short schedule every variant shares (a fast-recipe candidate; see docs/).
SCHEDULE = ["--batch-size", "512", "--lr", "0.2", "--label-smoothing", "0.1", "--cutout", "12",
            "--warmup", "0.15", "--validation", "0.1", "--validation-seed", "0"]
# The RN-att2 runs of docs/attention_levers.md M-O had the head's dropout at the model's 0.5, the
# ResNet recipe's before P: their variants keep it, so they train what those sections record.
AUTHORS_DROPOUT = ["--set", "dropout=0.5"]
_LISTED: dict[str, tuple[str, list[str]]] = {
    "base": ("vgg_att3_concat_pc", []),
    "ema": ("vgg_att3_concat_pc", ["--ema", "0.995"]),
    "entropy0.1": ("vgg_att3_concat_pc", ["--entropy-weight", "0.1"]),
    "aux0.5": ("vgg_att3_concat_pc", ["--set", "stage_classifiers=true", "--aux-weight", "0.5"]),
    "temp_learned": ("vgg_att3_concat_pc", ["--set", "temperature=learned"]),
    "sigmoid_sum": ("vgg_att3_concat_pc", ["--set", "normalisation=sigmoid_sum"]),
    "b1024": ("vgg_att3_concat_pc", ["--batch-size", "1024", "--lr", "0.4"]),
    "aux_entropy": ("vgg_att3_concat_pc", ["--set", "stage_classifiers=true", "--aux-weight", "0.5",
                                           "--entropy-weight", "0.1"]),
    "aux_entropy0.05": ("vgg_att3_concat_pc", ["--set", "stage_classifiers=true", "--aux-weight",
                                               "0.5", "--entropy-weight", "0.05"]),
    # Accuracy levers of the training (with --schedule recipe: each on top of the fast recipe).
    "altflip": ("vgg_att3_concat_pc", ["--train-flip", "alternating"]),
    "ls0.2": ("vgg_att3_concat_pc", ["--label-smoothing", "0.2"]),
    "muon0.02": ("vgg_att3_concat_pc", ["--optimizer", "muon", "--filter-lr", "0.02"]),
    "muon0.05": ("vgg_att3_concat_pc", ["--optimizer", "muon", "--filter-lr", "0.05"]),
    "muon0.1": ("vgg_att3_concat_pc", ["--optimizer", "muon", "--filter-lr", "0.1"]),
    "muon0.01": ("vgg_att3_concat_pc", ["--optimizer", "muon", "--filter-lr", "0.01"]),
    # The last tapped layer's map with sigmoid_sum, the earlier ones with the paper's softmax.
    "last_sigmoid_sum": ("vgg_att3_concat_pc", ["--set", "normalisation=softmax,softmax,sigmoid_sum"]),
    # Lighter attention levers: half of the recipe's weights, or the recipe's weights falling
    # linearly to zero over the run (with --schedule recipe).
    "levers_half": ("vgg_att3_concat_pc", ["--aux-weight", "0.25", "--entropy-weight", "0.025"]),
    "lever_decay": ("vgg_att3_concat_pc", ["--lever-decay", "1"]),
    # A shorter schedule (with --schedule recipe, the recipe at 45 epochs).
    "e45": ("vgg_att3_concat_pc", ["--epochs", "45"]),
    "vgg": ("vgg", []),
    "vgg_sgd": ("vgg", ["--optimizer", "sgd"]),
    "sgd": ("vgg_att3_concat_pc", ["--optimizer", "sgd"]),
    "vgg_gap": ("vgg_gap", []),
    "no_levers": ("vgg_att3_concat_pc", ["--aux-weight", "0", "--entropy-weight", "0",
                                         "--set", "stage_classifiers=false"]),
    "resnet_att2": ("resnet_att2_concat_pc", AUTHORS_DROPOUT),
    "resnet164": ("resnet164", []),
    # The ResNet recipe before its filters took the orthogonalised step (with --schedule recipe;
    # docs/attention_levers.md M).
    "resnet_att2_sgd": ("resnet_att2_concat_pc", ["--optimizer", "sgd", *AUTHORS_DROPOUT]),
    "resnet164_sgd": ("resnet164", ["--optimizer", "sgd"]),
    # The VGG recipe's attention settings on RN-att2 (with --schedule recipe): half the lever
    # weights and a sigmoid_sum last stage.
    "resnet_att2_vgg_levers": ("resnet_att2_concat_pc", ["--aux-weight", "0.25", "--entropy-weight",
                                                         "0.025", "--set",
                                                         "normalisation=softmax,sigmoid_sum",
                                                         *AUTHORS_DROPOUT]),
    # RN-att2 without deep supervision and the entropy term, with half their weights, and with
    # twice the deep supervision (with --schedule recipe): what do the levers do to the ResNet's
    # accuracy? (docs/attention_levers.md O)
    "resnet_att2_no_levers": ("resnet_att2_concat_pc", ["--aux-weight", "0", "--entropy-weight",
                                                        "0", "--set", "stage_classifiers=false",
                                                        *AUTHORS_DROPOUT]),
    "resnet_att2_levers_half": ("resnet_att2_concat_pc", ["--aux-weight", "0.25",
                                                          "--entropy-weight", "0.025",
                                                          *AUTHORS_DROPOUT]),
    "resnet_att2_aux1": ("resnet_att2_concat_pc", ["--aux-weight", "1.0", *AUTHORS_DROPOUT]),
    # RN-att2's head without the authors' dropout of its descriptors, as ResNet-164's classifier on
    # the pooled features has none (docs/attention_levers.md P; the ResNet recipe's since).
    "resnet_att2_dropout0": ("resnet_att2_concat_pc", ["--set", "dropout=0"]),
    # The same for the VGGs (with --schedule recipe): both VGG-att3 and its baseline dropped half
    # of their head's inputs, so they were compared in pairs (docs/attention_levers.md Q; the VGG
    # recipe's since, so these two now train what "base" and "vgg" do).
    "dropout0": ("vgg_att3_concat_pc", ["--set", "dropout=0"]),
    "vgg_dropout0": ("vgg", ["--set", "dropout=0"]),
}
# The VGG variants of docs/attention_levers.md A-O had the models' dropout 0.5, the VGG recipe's
# before Q: they keep it (first, so that a variant's own settings win), as the RN-att2 variants
# above do. The recipe itself ("base", "vgg"), the GAP baseline (no dropout) and Q's pair do not.
_RECIPE_ITSELF = ("base", "vgg", "vgg_gap", "dropout0", "vgg_dropout0")
VARIANTS: dict[str, tuple[str, list[str]]] = {
    name: (model, flags if name in _RECIPE_ITSELF or not model.startswith("vgg")
           else [*AUTHORS_DROPOUT, *flags])
    for name, (model, flags) in _LISTED.items()}


def command(variant: str, seed: int, args: argparse.Namespace, runs: Path) -> list[str]:
    """The ``ltpa train`` command line of one variant and seed."""
    model, extra = VARIANTS[variant]
    compile_flag = "--compile" if os.environ.get("ABLATION_COMPILE", "1") == "1" else "--no-compile"
    if args.schedule == "recipe":
        schedule = [*(["--epochs", str(args.epochs)] if args.epochs else []),
                    *(["--width", str(args.width)] if args.width else [])]
    else:
        schedule = ["--epochs", str(args.epochs or 20), "--width", str(args.width or 0.5),
                    "--recipe", "none", *SCHEDULE]
    return [sys.executable, "-c", TRAIN, model, "--data", str(args.data),
            "--out", str(runs / f"{variant}_s{seed}"), "--seed", str(seed), compile_flag,
            *schedule, *(["--tta-translate", str(args.tta_translate)] if args.tta_translate else []),
            *extra]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--horses", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=None, help="short schedule: default 20")
    parser.add_argument("--width", type=float, default=None, help="short schedule: default 0.5")
    parser.add_argument("--parallel", type=int, default=9)
    parser.add_argument("--schedule", choices=("short", "recipe"), default="short")
    parser.add_argument("--jobs", default="", help="variant:seed pairs instead of variants x seeds")
    parser.add_argument("--tta-translate", type=int, default=0,
                        help="every run also logs flip-and-translate TTA scores (ltpa train's flag)")
    parser.add_argument("--also", type=Path, nargs="*", default=[],
                        help="finished run folders to score with the new runs")
    args = parser.parse_args()
    if args.jobs:
        jobs = [(pair.split(":")[0], int(pair.split(":")[1])) for pair in args.jobs.split(",") if pair]
    else:
        jobs = [(v, int(s)) for s in args.seeds.split(",")
                for v in args.variants.split(",") if v]
    unknown = sorted({v for v, _ in jobs if v not in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    running: list[tuple[str, subprocess.Popen, float]] = []
    finished: dict[str, dict] = {}
    started_all = time.perf_counter()
    while jobs or running:
        while jobs and len(running) < args.parallel:
            variant, seed = jobs.pop(0)
            name = f"{variant}_s{seed}"
            log = open(args.out / f"{name}.log", "w")
            running.append((name, subprocess.Popen(command(variant, seed, args, args.runs), cwd=REPO,
                                                   stdout=log, stderr=subprocess.STDOUT, env=env),
                            time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            name, process, started = item
            if process.poll() is None:
                continue
            running.remove(item)
            finished[name] = {"returncode": process.returncode,
                              "wall_s": round(time.perf_counter() - started, 1)}
            print(f"{name}: rc {process.returncode} after {finished[name]['wall_s']} s", flush=True)
            (args.out / "finished.json").write_text(json.dumps(finished, indent=1))
    print(f"all runs: {time.perf_counter() - started_all:.0f} s", flush=True)
    done = [*args.also,
            *(args.runs / name for name, info in finished.items() if info["returncode"] == 0)]
    if not done:
        print("no run finished", flush=True)
        return 1
    subprocess.run([sys.executable, str(REPO / "bench" / "attention_quality.py"), "--horses",
                    str(args.horses), "--json", str(args.out / "quality.json"), *map(str, done)],
                   cwd=REPO, env=env, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
