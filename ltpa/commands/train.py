"""``ltpa train``: train any registered model (resumable, seeded, bf16 on CUDA)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from ltpa.registry import read_argument_value
from ltpa.training import (COMPILE_MODES, QAT_PRECISIONS, STATE_FILE, TrainConfig, Trainer,
                           error_percent, load_state)


def progress_bar(epoch: int, epochs: int, done: int, total: int, started: float,
                 stream=sys.stderr) -> None:
    """A one-line progress bar on terminals (logs get one line per epoch instead)."""
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
    defaults = TrainConfig()
    parser.add_argument("model", nargs="?", help="registered model name (see `ltpa models`)")
    parser.add_argument("--data", default=defaults.data,
                        help="cifar10, cifar100, svhn, or an ImageFolder tree with train/ and test/")
    parser.add_argument("--data-root", default=None, help="folder holding torchvision dataset files")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never try to download a torchvision dataset")
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run from its folder (its saved config is used)")
    parser.add_argument("--width", type=float, default=defaults.width, help="channel width multiplier")
    parser.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                        metavar="KEY=VALUE", help="model override, e.g. --set match=project_g")
    for name, kind in (("epochs", int), ("batch_size", int), ("lr", float), ("momentum", float),
                       ("weight_decay", float), ("label_smoothing", float), ("warmup", float),
                       ("final_lr_fraction", float), ("pad", int), ("cutout", int), ("seed", int),
                       ("image_size", int), ("qat_epochs", int), ("eval_every", int),
                       ("validation", float), ("validation_seed", int), ("ema", float),
                       ("aux_weight", float), ("entropy_weight", float)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind,
                            default=getattr(defaults, name), help=f"default {getattr(defaults, name)}")
    parser.add_argument("--qat", default=defaults.qat, choices=[p for p in QAT_PRECISIONS if p],
                        help="quantisation-aware training for this storage precision over the "
                             "last --qat-epochs epochs")
    parser.add_argument("--device", default=defaults.device, help="auto, cuda, cuda:N, mps or cpu")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="disable bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="model.compile() (CUDA; slower start)")
    parser.add_argument("--compile-mode", default=defaults.compile_mode, choices=COMPILE_MODES,
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="do not also score mirror-image test-time augmentation")


def extends_run(args: argparse.Namespace) -> bool:
    """Whether a resumed run is asked for another number of epochs than it was started with
    (``--epochs`` given with ``--resume``): the one setting a resumed run may change."""
    return bool(args.resume) and args.epochs != TrainConfig().epochs


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run configuration: from the run folder when resuming, else from the arguments."""
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
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["overrides"] = dict(args.overrides)
    values["out"] = args.out or f"runs/{args.model}"
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not args.resume and (Path(config.out) / STATE_FILE).is_file():
        raise ValueError(f"{config.out} already holds a run: pass --resume {config.out} to continue "
                         "it, or choose another --out")
    if not logging.getLogger("ltpa").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logging.getLogger("ltpa").addHandler(handler)
        logging.getLogger("ltpa").setLevel(logging.INFO)
    log = Trainer(config, extend=extends_run(args), on_batch=progress_bar).run()
    if log and log[-1]["test_acc"] is not None:
        print(f"done: {config.out}/model.pt, test error {error_percent(log[-1]['test_acc']):.2f}%")
    return 0
