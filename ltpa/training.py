"""Fast single-GPU training and evaluation.

The recipe (defaults of ``TrainConfig``): data resident on the device as uint8, flip +
reflect-pad-4 crop (+ optional cutout) done batched on the device, SGD with Nesterov momentum,
weight decay on conv/linear weights only, label smoothing, a one-cycle schedule (linear warm-up,
then linear decay to zero), bf16 autocast and channels_last on CUDA, optional ``model.compile()``.
The attention arithmetic itself stays fp32 (see ``ltpa.layers.attention``).

A run folder holds ``state.pt`` (everything needed to resume: weights, optimiser, epoch, RNG),
``model.pt`` (an ltpa checkpoint of the latest epoch) and ``log.json`` (per-epoch metrics). Both
files are rewritten atomically after every epoch, so an interrupted run loses at most one epoch.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.checkpoint import save_checkpoint, storage_rounded_weights
from ltpa.data import DeviceLoader, ImageSet, dataset_normalisation, load_dataset
from ltpa.device import get_device
from ltpa.maps import batch_entropy
from ltpa.registry import create_model

STATE_FILE, MODEL_FILE, LOG_FILE = "state.pt", "model.pt", "log.json"


QAT_PRECISIONS = ("", "int8", "int4")  # "" trains in full precision throughout
# torch.compile modes; "reduce-overhead" replays CUDA graphs, which helps models whose many small
# kernels leave the GPU waiting on launches (ResNet-164).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# The modes that replay CUDA graphs: each replay reuses its output buffers, so every new step
# (training or evaluation batch) is announced with torch.compiler.cudagraph_mark_step_begin().
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
# What a resumed run may change: where it runs and reads the data from, and how fast; everything
# else defines the run, and continuing a saved state under other settings would mix two runs.
RESUMABLE_CHANGES = ("out", "device", "data", "data_root", "download", "compile", "compile_mode",
                     "eval_every")


def config_differences(saved: dict[str, Any], current: "TrainConfig",
                       skip: Iterable[str] = RESUMABLE_CHANGES) -> list[str]:
    """The settings, other than ``skip``, in which a recorded configuration (settings it predates
    take their defaults) differs from ``current``, each as "key (saved X, now Y)"."""
    defaults, skipped = asdict(TrainConfig()), set(skip)
    return [f"{key} (saved {saved.get(key, defaults[key])!r}, now {value!r})"
            for key, value in asdict(current).items()
            if key not in skipped and saved.get(key, defaults[key]) != value]


def replays_cuda_graphs(compile_model: bool, compile_mode: str, device: torch.device) -> bool:
    """Whether a model compiled with ``compile_mode`` on ``device`` runs as CUDA-graph replays."""
    return compile_model and compile_mode in CUDAGRAPH_MODES and device.type == "cuda"


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the run folder and the checkpoint)."""

    model: str = "vgg_att3_concat_pc"
    data: str = "cifar10"
    data_root: str | None = None
    out: str = "runs/latest"
    width: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.15  # fraction of all steps spent warming up
    final_lr_fraction: float = 0.0
    pad: int = 4
    cutout: int = 0
    # Quantisation-aware training: over the last ``qat_epochs`` epochs, forward passes use the
    # weights as ``qat`` storage ("int8" or "int4") will round them, so the shipped file keeps
    # the accuracy of the run.
    qat: str = ""
    qat_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    compile_mode: str = "default"
    eval_every: int = 1
    download: bool = True
    image_size: int | None = None

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}; "
                             f"got {self.compile_mode!r}")
        if self.qat not in QAT_PRECISIONS:
            raise ValueError(f"qat must be one of {', '.join(map(repr, QAT_PRECISIONS))}; got {self.qat!r}")
        if self.qat and not 1 <= self.qat_epochs <= self.epochs:
            raise ValueError(f"qat_epochs must be between 1 and epochs ({self.epochs}) with qat "
                             f"{self.qat!r}; got {self.qat_epochs}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _atomic_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on batch-norm scales/shifts and biases: decaying them only hurts.
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def one_cycle(step: int, total: int, warmup: float, final: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` of the steps, then linear decay to ``final``."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return final + (1.0 - final) * max(0.0, 1.0 - progress)


def _progress(epoch: int, epochs: int, done: int, total: int, started: float, stream=sys.stderr) -> None:
    if not stream.isatty() and done not in (total,):
        return  # a progress bar only on terminals; logs get one line per epoch
    width = 30
    filled = int(width * done / max(1, total))
    rate = done / max(1e-9, time.perf_counter() - started)
    stream.write(f"\repoch {epoch}/{epochs} [{'#' * filled}{'.' * (width - filled)}] "
                 f"{done}/{total} batches {rate:.1f} it/s")
    if done == total:
        stream.write("\n")
    stream.flush()


def error_percent(accuracy: float | None) -> float | None:
    """Top-1 error in percent from an accuracy in [0, 1] as logs store it (None stays None)."""
    return None if accuracy is None else 100.0 * (1.0 - float(accuracy))


@dataclass
class EvalResult:
    """Metrics of one pass over a labelled set."""

    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    entropy: dict[str, float]  # mean normalised entropy per attention stage

    @property
    def error(self) -> float:
        return 100.0 * (1.0 - self.accuracy)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int, amp: bool = False,
             cuda_graphs: bool = False) -> EvalResult:
    """Loss, accuracy, per-class accuracy, confusion matrix and attention entropy over ``loader``.
    ``cuda_graphs``: the model replays CUDA graphs (each batch is marked as a new step)."""
    was_training = model.training
    model.eval()
    device = loader.data.images.device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    entropy_sums: dict[str, Tensor] = {}
    count = 0
    for x, y in loader:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            out = model(x)
        logits = out.logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        confusion += torch.bincount(y * num_classes + logits.argmax(1),
                                    minlength=num_classes**2).view(num_classes, num_classes)
        for name, attention in zip(out.stages, out.maps):
            entropy_sums[name] = entropy_sums.get(name, 0) + batch_entropy(attention) * y.numel()
        count += y.numel()
    model.train(was_training)
    confusion_cpu = confusion.cpu()
    per_class = (confusion_cpu.diag().float() / confusion_cpu.sum(1).clamp_min(1).float()).tolist()
    return EvalResult(
        loss=float(loss_sum) / max(1, count),
        accuracy=float(confusion_cpu.diag().sum()) / max(1, count),
        per_class_accuracy=per_class,
        confusion=confusion_cpu.tolist(),
        entropy={k: float(v) / max(1, count) for k, v in entropy_sums.items()},
    )


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


class Trainer:
    """One training run; ``run()`` trains to ``config.epochs`` and returns the final log."""

    def __init__(self, config: TrainConfig, command: str | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 extend: bool = False) -> None:
        """``extend``: a resumed run may train for more epochs than it was started with."""
        self.config = config
        self.extend = extend
        self.command = command or "ltpa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        self.on_epoch = on_epoch
        self.out = Path(config.out)
        self.device = get_device(config.device)
        self.cuda = self.device.type == "cuda"

    def prepare(self, sets: tuple[ImageSet, ImageSet] | None = None) -> None:
        """Load the data (or take ``sets``, training and test images already in memory), build
        the model, loaders, optimiser and schedule; ``run()`` calls it."""
        config = self.config
        torch.manual_seed(config.seed)
        train, test = sets or load_dataset(config.data, config.data_root, config.download,
                                           config.image_size)
        self.class_names = train.class_names
        self.mean, self.std = dataset_normalisation(config.data, train)
        self.input_size = int(train.images.shape[-1])
        self.train_set: ImageSet = train.to(self.device)
        self.test_set: ImageSet = test.to(self.device)
        overrides = dict(config.overrides)
        if config.width != 1.0:
            overrides["width"] = config.width
        self.model = create_model(config.model, num_classes=len(self.class_names), **overrides)
        self.model.to(self.device)
        if self.cuda and config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.generator = torch.Generator().manual_seed(config.seed)
        channels_last = self.cuda and config.channels_last
        self.train_loader = DeviceLoader(
            self.train_set, config.batch_size, self.mean, self.std, train=True, pad=config.pad,
            cutout=config.cutout, drop_last=len(self.train_set) >= 2 * config.batch_size,
            generator=self.generator, channels_last=channels_last)
        self.test_loader = DeviceLoader(self.test_set, 1000, self.mean, self.std, train=False,
                                        channels_last=channels_last)
        self.optimizer = torch.optim.SGD(
            _param_groups(self.model, config.weight_decay), lr=config.lr,
            momentum=config.momentum, nesterov=config.nesterov)
        self.total_steps = config.epochs * len(self.train_loader)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: one_cycle(step, self.total_steps, config.warmup, config.final_lr_fraction))
        if config.compile:
            # In place: state_dict keys keep their names (no _orig_mod.).
            self.model.compile(mode=None if config.compile_mode == "default" else config.compile_mode)
        self.forward = self.model
        self.cuda_graphs = replays_cuda_graphs(config.compile, config.compile_mode, self.device)
        self.start_epoch, self.log, self.elapsed = 0, [], 0.0

    def _resume(self) -> None:
        state_path = self.out / STATE_FILE
        if not state_path.is_file():
            return
        # CPU first: the RNG states must stay CPU ByteTensors; weights move on load_state_dict.
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        self._check_same_run(state.get("config", {}))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch, self.log = int(state["epoch"]), list(state["log"])
        self.elapsed = float(state.get("elapsed", 0.0))
        print(f"resuming {self.out} after epoch {self.start_epoch}", file=sys.stderr)

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        """Refuse to continue a saved state under settings that define another run."""
        skip = set(RESUMABLE_CHANGES) | ({"epochs"} if self.extend else set())
        changed = config_differences(saved, self.config, skip)
        if changed:
            raise ValueError(
                f"{self.out} holds a run with other settings: {'; '.join(changed)}. Resume it with "
                f"its own settings (`ltpa train --resume {self.out}`), or train into another "
                f"folder (ltpa train --out, ltpa train-zoo --runs)")

    def _save(self, epoch: int, result: EvalResult | None) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "log": self.log,
            "elapsed": self.elapsed,
            "config": asdict(self.config),
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out / STATE_FILE)
        meta = self.metadata(epoch, result)
        save_checkpoint(self.out / MODEL_FILE, self.model, meta)
        _atomic_json(self.out / LOG_FILE, {"config": asdict(self.config), "epochs": self.log})

    def metadata(self, epoch: int, result: EvalResult | None) -> dict[str, Any]:
        """Checkpoint metadata: classes, normalisation, input size, dataset, metrics, recipe."""
        total_images = epoch * len(self.train_loader) * self.config.batch_size
        return {
            "class_names": self.class_names,
            "mean": self.mean,
            "std": self.std,
            "input_size": self.input_size,
            "dataset": self.config.data,
            "metrics": None if result is None else {
                "test_error": result.error, "test_loss": result.loss,
                "per_class_accuracy": result.per_class_accuracy,
            },
            "training": {
                "command": self.command,
                "config": asdict(self.config),
                "epochs": epoch,
                "wall_time_s": round(self.elapsed, 1),
                "images_per_s": round(total_images / self.elapsed, 1) if self.elapsed else None,
                "hardware": _hardware(self.device),
            },
        }

    def quantisation_aware(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) trains and evaluates with storage-rounded weights."""
        return bool(self.config.qat) and epoch > self.config.epochs - self.config.qat_epochs

    def _storage_precision(self, epoch: int) -> str:
        """The storage precision whose rounding ``epoch`` trains and evaluates under ("" for none)."""
        return self.config.qat if self.quantisation_aware(epoch) else ""

    def _evaluate(self, epoch: int) -> EvalResult:
        # Under quantisation-aware training the test metrics are those of the stored weights.
        with storage_rounded_weights(self.model, self._storage_precision(epoch)):
            return evaluate(self.forward, self.test_loader, len(self.class_names), amp=self.config.amp,
                            cuda_graphs=self.cuda_graphs)

    def train_step(self, x: Tensor, y: Tensor, rounding: str = "") -> tuple[Tensor, Tensor]:
        """One optimiser step on a batch (forward and backward on the weights as ``rounding``
        storage rounds them, "" for none); returns the logits and the loss, not detached."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        # Forward and backward on the rounded weights; the optimiser step, after the block,
        # updates the full-precision ones (straight-through).
        with storage_rounded_weights(self.model, rounding):
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.cuda and self.config.amp):
                out = self.forward(x)
            logits = out.logits.float()
            loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return logits, loss

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        model, config = self.model, self.config
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        n_batches = len(self.train_loader)
        rounding = self._storage_precision(epoch)
        for step, (x, y) in enumerate(self.train_loader, start=1):
            logits, loss = self.train_step(x, y, rounding)
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if step % 20 == 0 or step == n_batches:
                _progress(epoch, config.epochs, step, n_batches, started)
        if not math.isfinite(float(loss_sum)):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss is not finite); "
                               "lower --lr or check the data")
        return float(loss_sum) / max(1, seen), float(correct) / max(1, seen)

    def run(self) -> list[dict[str, Any]]:
        """Train (resuming from ``out`` when it holds a state) and return the per-epoch log."""
        self.prepare()
        self._resume()
        config = self.config
        if self.start_epoch >= config.epochs:
            print(f"{self.out} already trained for {self.start_epoch} epochs", file=sys.stderr)
            return self.log
        try:
            for epoch in range(self.start_epoch + 1, config.epochs + 1):
                if self.cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                train_loss, train_acc = self._train_epoch(epoch)
                if self.cuda:
                    torch.cuda.synchronize()
                epoch_time = time.perf_counter() - started
                self.elapsed += epoch_time
                result = None
                if epoch % config.eval_every == 0 or epoch == config.epochs:
                    result = self._evaluate(epoch)
                row = {
                    "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                    "test_loss": None if result is None else result.loss,
                    "test_acc": None if result is None else result.accuracy,
                    "lr": lr, "epoch_time_s": round(epoch_time, 3),
                    "entropy": {} if result is None else result.entropy,
                }
                self.log.append(row)
                self._save(epoch, result)
                if self.on_epoch:
                    self.on_epoch(row)
                test = "" if result is None else f" test_acc {result.accuracy:.4f}"
                print(f"epoch {epoch}/{config.epochs} loss {train_loss:.4f} train_acc "
                      f"{train_acc:.4f}{test} lr {lr:.4f} {epoch_time:.1f}s", file=sys.stderr)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted; the last finished epoch is saved: resume with "
                f"`ltpa train --resume {self.out}`") from None
        return self.log
