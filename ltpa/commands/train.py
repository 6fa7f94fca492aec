"""``ltpa train``: train any registered model (resumable, seeded, bf16 on CUDA)."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from ltpa.distributed import (DEFAULT_TIMEOUT_S, DataParallelOptions, check_process_count, launch,
                              launched_by_torchrun, per_rank_batch, train_data_parallel)
from ltpa.device import get_device
from ltpa.cli import show_library_messages
from ltpa.data import TRAIN_FLIPS
from ltpa.optim import OPTIMIZERS
from ltpa.recipe import RECIPE_NAMES, recipe_for
from ltpa.registry import read_argument_value
from ltpa.training import (COMPILE_MODES, COMPILE_SCOPES, QAT_PRECISIONS, STATE_FILE, TrainConfig,
                           Trainer, final_errors_text, load_state)


def progress_bar(epoch: int, epochs: int, done: int, total: int, started: float,
                 stream=None) -> None:
    """A one-line progress bar on terminals (logs get one line per epoch instead)."""
    stream = stream or sys.stderr  # looked up now: the process's stderr may have been replaced
    if not stream.isatty():
        return
    width = 30
    filled = int(width * done / max(1, total))
    rate = done / max(1e-9, time.perf_counter() - started)
    stream.write(f"\repoch {epoch}/{epochs} [{'#' * filled}{'.' * (width - filled)}] "
                 f"{done}/{total} batches {rate:.1f} it/s")
    if done == total:
        stream.write("\n")
    stream.flush()


def _override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, read_argument_value(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Settings left unset (None) come from the recipe (``--recipe``), then TrainConfig.
    defaults = TrainConfig()
    parser.add_argument("model", nargs="?", help="registered model name (see `ltpa models`)")
    parser.add_argument("--recipe", default="fast", choices=RECIPE_NAMES,
                        help="settings the run starts from: fast (default; per family, "
                             "docs/training.md) or none (the plain TrainConfig defaults); "
                             "the flags below override them")
    parser.add_argument("--data", default=defaults.data,
                        help="cifar10, cifar100, svhn, or an ImageFolder tree with train/ and test/")
    parser.add_argument("--data-root", default=None, help="folder holding torchvision dataset files")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never try to download a torchvision dataset")
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run from its folder (its saved config is used)")
    parser.add_argument("--width", type=float, default=None, help="channel width multiplier")
    parser.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                        metavar="KEY=VALUE", help="model override, e.g. --set match=project_g")
    for name, kind in (("epochs", int), ("batch_size", int), ("lr", float), ("momentum", float),
                       ("weight_decay", float), ("label_smoothing", float), ("warmup", float),
                       ("final_lr_fraction", float), ("pad", int), ("cutout", int), ("seed", int),
                       ("image_size", int), ("qat_epochs", int), ("eval_every", int),
                       ("validation", float), ("validation_seed", int), ("ema", float),
                       ("aux_weight", float), ("entropy_weight", float), ("lever_decay", float),
                       ("filter_lr", float),
                       ("tta_translate", int),
                       ("save_interval_s", float)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"default: the recipe's (plain: {getattr(defaults, name)})")
    parser.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                        help="sgd, or muon: the 3x3 convolution filters take an orthogonalised "
                             "step of relative size --filter-lr instead (docs/training.md); "
                             f"default: the recipe's (plain: {defaults.optimizer})")
    parser.add_argument("--train-flip", default=None, choices=TRAIN_FLIPS,
                        help="training flips: random, or alternating (each image mirrored every "
                             f"other epoch); default: the recipe's (plain: {defaults.train_flip})")
    parser.add_argument("--qat", default=None, choices=[p for p in QAT_PRECISIONS if p],
                        help="quantisation-aware training for this storage precision over the "
                             "last --qat-epochs epochs")
    parser.add_argument("--device", default=defaults.device, help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                        help="disable bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        default=None)
    parser.add_argument("--compile", action="store_true", default=None,
                        help="model.compile() (the fast recipe compiles on CUDA by default)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="run the model eagerly (faster start, slower epochs)")
    parser.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--compile-scope", default=None, choices=COMPILE_SCOPES,
                        help="with --compile: the whole model, or each repeated block on its own")
    parser.add_argument("--compile-ahead", action="store_true", default=None,
                        help="with --compile: compile in a side process while the first epochs "
                             "train eagerly, then compile from its cache (the recipe's on CUDA)")
    parser.add_argument("--no-compile-ahead", dest="compile_ahead", action="store_false",
                        help="compile in the run itself, before the first step")
    parser.add_argument("--step-graph", action="store_true", default=None,
                        help="capture the whole training step as one CUDA graph and replay it "
                             "(CUDA only; no compilation needed)")
    parser.add_argument("--no-step-graph", dest="step_graph", action="store_false",
                        help="launch each step's kernels one by one")
    parser.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                        default=None, help="do not let cuDNN time its convolution algorithms")
    parser.add_argument("--no-flip", dest="flip", action="store_false", default=None,
                        help="do not also score mirror-image test-time augmentation")
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="data-parallel over N processes on this machine (one per GPU; "
                             "gloo processes with --device cpu); same as "
                             "`torchrun --nproc_per_node=N -m ltpa train ...` (docs/distributed.md)")
    parser.add_argument("--sync-bn", action="store_true",
                        help="data-parallel runs: BatchNorm statistics over the global batch "
                             "(SyncBatchNorm, CUDA only)")
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="data-parallel runs: a rank that waits longer for the others fails "
                             f"(default {DEFAULT_TIMEOUT_S:g})")


def extends_run(args: argparse.Namespace) -> bool:
    """Whether a resumed run is asked for another number of epochs than it was started with
    (``--epochs`` given with ``--resume``): the one setting a resumed run may change."""
    return bool(args.resume) and getattr(args, "epochs", None) is not None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run configuration: from the run folder when resuming, else the recipe's settings for
    the model with the flags given on top."""
    if args.resume:
        state = Path(args.resume) / STATE_FILE
        if not state.is_file():
            raise FileNotFoundError(f"nothing to resume: {state} does not exist")
        config = TrainConfig.from_dict(load_state(state)["config"])
        config.out = str(args.resume)
        if extends_run(args):
            config.epochs = args.epochs
        return config
    if not args.model:
        raise ValueError("name a model to train (see `ltpa models`) or pass --resume RUN_DIR")
    values = asdict(TrainConfig())
    if getattr(args, "recipe", "fast") == "fast":
        cuda = get_device(args.device).type == "cuda"
        values.update(recipe_for(args.model, cuda=cuda))
        if getattr(args, "nproc", None) is not None or launched_by_torchrun():
            # Data-parallel runs stay eager unless --compile is given: compiled CUDA-graph
            # replays around DDP's gradient all-reduce are untested here (docs/distributed.md),
            # and one captured step cannot hold the all-reduce (ltpa.step_graph).
            values.update(compile=False, compile_mode="default", compile_ahead=False,
                          step_graph=False)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None and f.name != "overrides"}
    values.update(given)
    if given.get("compile") is False and "compile_ahead" not in given:
        values["compile_ahead"] = False  # --no-compile: nothing to compile ahead either
    if given.get("flip") is False and "tta_translate" not in given:
        # --no-flip turns off the recipe's flip-and-translate scoring too (it needs the mirrors).
        values["tta_translate"] = 0
    values["model"] = args.model
    values["overrides"] = {**values.get("overrides", {}), **dict(args.overrides)}
    values["out"] = args.out or f"runs/{args.model}"
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not args.resume and (Path(config.out) / STATE_FILE).is_file():
        raise ValueError(f"{config.out} already holds a run: pass --resume {config.out} to continue "
                         "it, or choose another --out")
    options = DataParallelOptions(sync_bn=args.sync_bn, timeout_s=args.dist_timeout)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    _log_to_stderr(logging.INFO if main_rank else logging.WARNING)
    if args.nproc is not None:
        log = _launch(config, args.nproc, options, extends_run(args))
    elif launched_by_torchrun():
        log = train_data_parallel(config, options, extend=extends_run(args), on_batch=progress_bar)
    elif args.sync_bn:
        raise ValueError("--sync-bn applies to data-parallel runs: add --nproc N, or start with "
                         "`torchrun --nproc_per_node=N -m ltpa train ...`")
    else:
        log = Trainer(config, extend=extends_run(args), on_batch=progress_bar).run()
    if main_rank and log and log[-1]["test_acc"] is not None:
        print(f"done: {config.out}/model.pt, {final_errors_text(log[-1])}")
    return 0


def _log_to_stderr(level: int) -> None:
    """The library's messages on stderr (rank 0 of a data-parallel run; the others warn only)."""
    show_library_messages()
    logging.getLogger("ltpa").setLevel(level)


def _launch(config: TrainConfig, nproc: int, options: DataParallelOptions, extend: bool) -> list:
    """``--nproc N``: check what this machine can run, then start N ranks (torch's launcher)."""
    device = get_device(config.device)
    check_process_count(nproc, device, _gpu_count(device))
    per_rank_batch(config.batch_size, nproc)
    if options.sync_bn and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU implementation")
    command = "ltpa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return launch(nproc, _data_parallel_worker, asdict(config), asdict(options), extend, command)


def _gpu_count(device: torch.device) -> int:
    return torch.cuda.device_count() if device.type == "cuda" else 0


def _data_parallel_worker(config: dict, options: dict, extend: bool, command: str) -> list:
    """One rank of an ``ltpa train --nproc N`` run (started by ``ltpa.distributed.launch``)."""
    main_rank = int(os.environ.get("RANK", "0")) == 0
    _log_to_stderr(logging.INFO if main_rank else logging.WARNING)
    return train_data_parallel(TrainConfig(**config), DataParallelOptions(**options), extend=extend,
                               command=command, on_batch=progress_bar)
