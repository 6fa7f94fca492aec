"""Fast single-GPU training and evaluation.

The recipe (defaults of ``TrainConfig``): data resident on the device as uint8, flip +
reflect-pad-4 crop (+ optional cutout) done batched on the device, SGD with Nesterov momentum,
weight decay on conv/linear weights only, label smoothing, a one-cycle schedule (linear warm-up,
then linear decay to zero), bf16 autocast and channels_last on CUDA, optional ``model.compile()``,
and optionally the whole step replayed as one CUDA graph (``step_graph``, ``ltpa.step_graph``).
The attention arithmetic itself stays fp32 (see ``ltpa.layers.attention``).

Model selection never looks at the test set: ``validation`` holds out a fixed share of the
training images (the same images for every seed: the split has its own seed), every epoch is
scored on them, and the test set is evaluated once, after the last epoch. Attention-quality
levers of the training itself: ``entropy_weight`` (a penalty on each stage's normalised map
entropy) and ``aux_weight`` (deep supervision of per-stage classifiers, see
``ltpa.models.heads``), both optionally falling to zero over the run's end (``lever_decay``);
``ema`` evaluates an exponential moving average of the weights and
``flip`` also scores the mean of the logits of each image and its mirror image.

A run folder holds ``state.pt`` (everything needed to resume: weights, optimiser, epoch, RNG),
``model.pt`` (an ltpa checkpoint of the latest epoch) and ``log.json`` (per-epoch metrics). Both
files are rewritten atomically after every epoch, so an interrupted run loses at most one epoch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.checkpoint import MAX_WIDTH, load_state_file, save_checkpoint
from ltpa.compiling import CompileAhead, CompileJob, cache_counts, compile_model, repeated_blocks
from ltpa.quantisation import storage_rounded_weights
from ltpa.data import TRAIN_FLIPS, DeviceLoader, ImageSet, dataset_normalisation, load_dataset
from ltpa.device import get_device
from ltpa.maps import batch_entropy
from ltpa.models.outputs import MIN_INPUT_SIZE
from ltpa.registry import create_model
from ltpa.optim import OPTIMIZERS, build_optimizer, sgd_update_
from ltpa.step_graph import GraphedStep, learning_rate_tensors, refresh_learning_rates

if TYPE_CHECKING:
    from ltpa.distributed import DataParallel

logger = logging.getLogger(__name__)

STATE_FILE, MODEL_FILE, LOG_FILE = "state.pt", "model.pt", "log.json"


# The largest shift of flip-and-translate test-time views (``evaluate``'s ``translate``).
MAX_TTA_TRANSLATE = 8
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
                     "compile_scope", "compile_ahead", "step_graph", "cudnn_benchmark",
                     "eval_every", "save_interval_s")
# Settings added after runs were recorded without them: a saved configuration that lacks one was
# trained with this value (not today's default), e.g. on all training images.
LEGACY_SETTINGS: dict[str, Any] = {"validation": 0.0, "validation_seed": 0, "ema": 0.0,
                                   "optimizer": "sgd", "train_flip": "random", "flip": False,
                                   "aux_weight": 0.0, "entropy_weight": 0.0, "lever_decay": 0.0,
                                   "step_graph": False, "cudnn_benchmark": False,
                                   "compile_scope": "model", "compile_ahead": False,
                                   "save_interval_s": 0.0}
# What --compile compiles: the whole model, or each repeated block (a class with
# ``repeated_block = True``, e.g. a ResNet bottleneck) on its own: identical blocks then share one
# compilation, which starts a ResNet-164 in a third of the time.
COMPILE_SCOPES = ("model", "blocks")


def _saved_value(saved: dict[str, Any], key: str, defaults: dict[str, Any]) -> Any:
    """A recorded setting, the legacy value where the record predates it, else today's default."""
    return saved.get(key, LEGACY_SETTINGS.get(key, defaults[key]))


def config_differences(saved: dict[str, Any], current: "TrainConfig",
                       skip: Iterable[str] = RESUMABLE_CHANGES) -> list[str]:
    """The settings, other than ``skip``, in which a recorded configuration (settings it predates
    take their defaults) differs from ``current``, each as "key (saved X, now Y)"."""
    defaults, skipped = asdict(TrainConfig()), set(skip)
    return [f"{key} (saved {_saved_value(saved, key, defaults)!r}, now {value!r})"
            for key, value in asdict(current).items()
            if key not in skipped and _saved_value(saved, key, defaults) != value]


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
    # "muon": the 3x3 convolution filters take an orthogonalised step of relative size
    # ``filter_lr`` at the schedule's peak instead of SGD's (ltpa.optim); the rest keeps SGD.
    optimizer: str = "sgd"
    filter_lr: float = 0.02
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.15  # fraction of all steps spent warming up
    final_lr_fraction: float = 0.0
    pad: int = 4
    cutout: int = 0
    # Training flips: "random" (each image, each epoch) or "alternating" (a random first flip
    # per image, then mirrored every other epoch, so every image is seen both ways in two epochs).
    train_flip: str = "random"
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
    compile_scope: str = "model"
    # With compile: compile in a side process while the first epochs train eagerly, then compile
    # the run's model from the compiler's cache (ltpa.compiling; single-process runs only).
    compile_ahead: bool = False
    # Capture the whole step (forward, backward, SGD update) as one CUDA graph and replay it
    # (CUDA only; with --compile only in a compile_mode that does not replay graphs itself).
    step_graph: bool = False
    # Let cuDNN time its convolution algorithms on the first batch of each shape (CUDA only; the
    # shapes of a run are fixed, so the choice is made once).
    cudnn_benchmark: bool = True
    eval_every: int = 1
    # The run folder's state and checkpoint are written after an epoch once this many seconds
    # have passed since they were last written (and after the first and last epochs); 0 writes
    # them every epoch. The log is written every epoch.
    save_interval_s: float = 0.0
    download: bool = True
    image_size: int | None = None
    # Share of the training images held out for model selection (0: train on all of them);
    # ``validation_seed`` fixes which, independently of ``seed``.
    validation: float = 0.1
    validation_seed: int = 0
    ema: float = 0.0  # decay per step of the evaluated weight average (0: no average)
    flip: bool = True  # also score mirror-image test-time augmentation
    # With flip, also score flip-and-translate test-time augmentation, views moved this many
    # pixels (``evaluate``'s ``translate``; 0: not scored).
    tta_translate: int = 0
    aux_weight: float = 0.0  # weight of the per-stage classifiers' mean loss (deep supervision)
    entropy_weight: float = 0.0  # weight of the mean normalised entropy of the stages' maps
    # The last share of the run over which aux_weight and entropy_weight fall linearly to zero
    # (``lever_scale``; 0: constant weights, 1: falling from the first step).
    lever_decay: float = 0.0

    def __post_init__(self) -> None:
        self._check_ranges()
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}; "
                             f"got {self.compile_mode!r}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ValueError(f"compile_scope must be one of {', '.join(COMPILE_SCOPES)}; "
                             f"got {self.compile_scope!r}")
        if self.compile_ahead and not self.compile:
            raise ValueError("--compile-ahead compiles the model in a side process for the run: "
                             "it needs --compile (drop --no-compile or add --no-compile-ahead)")
        if self.step_graph and self.compile and self.compile_mode in CUDAGRAPH_MODES:
            raise ValueError(f"--step-graph replays its own CUDA graph: combine it with --compile-mode "
                             f"default or max-autotune-no-cudagraphs, not {self.compile_mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        if self.train_flip not in TRAIN_FLIPS:
            raise ValueError(f"--train-flip must be one of {', '.join(TRAIN_FLIPS)}; "
                             f"got {self.train_flip!r}")
        if self.qat not in QAT_PRECISIONS:
            raise ValueError(f"qat must be one of {', '.join(map(repr, QAT_PRECISIONS))}; got {self.qat!r}")
        if self.qat and not 1 <= self.qat_epochs <= self.epochs:
            raise ValueError(f"qat_epochs must be between 1 and epochs ({self.epochs}) with qat "
                             f"{self.qat!r}; got {self.qat_epochs}")

    def _check_ranges(self) -> None:
        """Refuse settings outside their valid range before anything is built or written."""
        def number(name: str, low: float, high: float, integer: bool = False,
                   low_open: bool = False, high_open: bool = False) -> None:
            value = getattr(self, name)
            kind = "an integer" if integer else "a number"
            ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
                  and math.isfinite(value)
                  and (value > low if low_open else value >= low)
                  and (value < high if high_open else value <= high))
            if not ok:
                bounds = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be {kind} in {bounds}; got {value!r}")

        number("width", 0.0, MAX_WIDTH, low_open=True)
        number("epochs", 1, 100_000, integer=True)
        number("batch_size", 1, 1_000_000, integer=True)
        number("lr", 0.0, 100.0, low_open=True)
        number("momentum", 0.0, 1.0, high_open=True)
        number("weight_decay", 0.0, 1.0)
        number("filter_lr", 0.0, 1.0, low_open=True)
        number("label_smoothing", 0.0, 1.0, high_open=True)
        number("warmup", 0.0, 1.0, high_open=True)
        number("final_lr_fraction", 0.0, 1.0)
        number("pad", 0, 64, integer=True)
        number("cutout", 0, 4096, integer=True)
        number("qat_epochs", 0, 100_000, integer=True)
        number("seed", 0, 2**63 - 1, integer=True)
        number("validation_seed", 0, 2**63 - 1, integer=True)
        number("eval_every", 1, 100_000, integer=True)
        number("save_interval_s", 0.0, 1e9)
        number("validation", 0.0, 0.5, high_open=True)
        number("ema", 0.0, 1.0, high_open=True)
        number("tta_translate", 0, MAX_TTA_TRANSLATE, integer=True)
        if self.tta_translate and not self.flip:
            raise ValueError("--tta-translate scores translated views with their mirror images: "
                             "it needs flip test-time augmentation (drop --no-flip)")
        number("aux_weight", 0.0, 100.0)
        number("entropy_weight", 0.0, 100.0)
        number("lever_decay", 0.0, 1.0)
        if self.lever_decay and not (self.aux_weight or self.entropy_weight):
            raise ValueError("--lever-decay scales the attention levers' weights: give "
                             "--aux-weight or --entropy-weight too")
        if self.image_size is not None:
            number("image_size", MIN_INPUT_SIZE, 4096, integer=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """The configuration a record describes; settings it predates take their legacy value."""
        known = {f.name for f in fields(cls)}
        return cls(**{**LEGACY_SETTINGS, **{k: v for k, v in values.items() if k in known}})


def _atomic_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


def one_cycle(step: int, total: int, warmup: float, final: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` of the steps, then linear decay to ``final``."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return final + (1.0 - final) * max(0.0, 1.0 - progress)


def error_percent(accuracy: float | None) -> float | None:
    """Top-1 error in percent from an accuracy in [0, 1] as logs store it (None stays None)."""
    return None if accuracy is None else 100.0 * (1.0 - float(accuracy))


@dataclass
class ClassificationResult:
    """Metrics of one pass of a classifier over a labelled set."""

    loss: float
    accuracy: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted
    entropy: dict[str, float]  # mean normalised entropy per attention stage
    flip_accuracy: float | None = None  # with mirror-image test-time augmentation, when scored
    tta_accuracy: float | None = None  # with flip-and-translate test-time augmentation, when scored

    @property
    def error(self) -> float:
        """Top-1 error in percent."""
        return 100.0 * (1.0 - self.accuracy)

    @property
    def flip_error(self) -> float | None:
        """Top-1 error in percent with mirror-image test-time augmentation (None if not scored)."""
        return error_percent(self.flip_accuracy)

    @property
    def tta_error(self) -> float | None:
        """Top-1 error in percent with flip-and-translate test-time augmentation (None if not
        scored)."""
        return error_percent(self.tta_accuracy)


def shift_images(x: Tensor, shift: int) -> Tensor:
    """``x`` moved ``shift`` pixels down and right (up and left when negative), the border
    filled by reflection, at the same size."""
    pad = abs(shift)
    if not pad:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    start = pad - shift
    return padded[..., start:start + h, start:start + w]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DeviceLoader, num_classes: int, amp: bool = False,
             cuda_graphs: bool = False, flip: bool = False, translate: int = 0) -> ClassificationResult:
    """Score a classifier over a loader.

    Args:
        model: an ltpa model (its forward returns ``ModelOutput``).
        loader: an evaluation ``DeviceLoader``.
        num_classes: the number of classes.
        amp: bf16 autocast on CUDA.
        cuda_graphs: the model replays CUDA graphs (each batch is marked as a new step).
        flip: also score the mean logits of each image and its mirror image.
        translate: with ``flip``, also score flip-and-translate TTA: the image pair's logits
            weighted 1/2 and those of the pair moved ``translate`` pixels diagonally each way
            1/4 each (six views; 0: not scored).

    Returns:
        Loss, accuracy, per-class accuracy, confusion matrix, mean normalised entropy per stage,
        the flipped accuracy when ``flip`` and the flip-and-translate accuracy when ``translate``.

    Raises:
        ValueError: ``translate`` without ``flip``.
    """
    if translate and not flip:
        raise ValueError("translated test-time views are scored with their mirror images: "
                         "give flip=True with translate")
    was_training = model.training
    model.eval()
    device = loader.data.images.device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    flip_correct = torch.zeros((), dtype=torch.long, device=device)
    tta_correct = torch.zeros((), dtype=torch.long, device=device)
    entropy_sums: dict[str, Tensor] = {}
    count = 0
    autocast = amp and device.type == "cuda"

    def view_output(view: Tensor) -> Any:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(view)

    def view_logits(view: Tensor) -> Tensor:
        # A copy: the next replay reuses a CUDA-graph model's output buffer.
        return view_output(view).logits.float().clone()

    for x, y in loader:
        out = view_output(x)
        logits = out.logits.float().clone()
        # Everything read from this view's maps is read before another view replaces them.
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        confusion += torch.bincount(y * num_classes + logits.argmax(1),
                                    minlength=num_classes**2).view(num_classes, num_classes)
        for name, attention in zip(out.stages, out.maps):
            entropy_sums[name] = entropy_sums.get(name, 0) + batch_entropy(attention) * y.numel()
        count += y.numel()
        if flip:
            mirrored = view_logits(x.flip(3))
            flip_correct += ((logits + mirrored).argmax(1) == y).sum()
        if translate:
            combined = 2 * (logits + mirrored)
            for shift in (translate, -translate):
                moved = shift_images(x, shift)
                combined += view_logits(moved) + view_logits(moved.flip(3))
            tta_correct += (combined.argmax(1) == y).sum()
    model.train(was_training)
    confusion_cpu = confusion.cpu()
    per_class = (confusion_cpu.diag().float() / confusion_cpu.sum(1).clamp_min(1).float()).tolist()
    return ClassificationResult(
        loss=float(loss_sum) / max(1, count),
        accuracy=float(confusion_cpu.diag().sum()) / max(1, count),
        per_class_accuracy=per_class,
        confusion=confusion_cpu.tolist(),
        entropy={k: float(v) / max(1, count) for k, v in entropy_sums.items()},
        flip_accuracy=float(flip_correct) / max(1, count) if flip else None,
        tta_accuracy=float(tta_correct) / max(1, count) if translate else None,
    )


def split_validation(train: ImageSet, share: float, seed: int) -> tuple[ImageSet, ImageSet | None]:
    """Hold out ``share`` of the training images, the same ones for a given ``seed``.

    Args:
        train: the training split.
        share: the share to hold out, in [0, 0.5); 0 keeps every image for training.
        seed: the seed of the split (independent of the training seed).

    Returns:
        The remaining training images and the validation images (None when ``share`` is 0).
    """
    count = int(round(len(train) * share))
    if count == 0:
        return train, None
    if count >= len(train):
        raise ValueError(f"a validation share of {share} leaves no training images")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values
    held, kept = held.to(train.labels.device), kept.to(train.labels.device)
    return (ImageSet(train.images[kept], train.labels[kept], train.class_names),
            ImageSet(train.images[held], train.labels[held], train.class_names))


def split_digest(images: ImageSet | None) -> str | None:
    """A short sha256 of a split's labels and pixels, recorded so a validation split is checkable."""
    if images is None:
        return None
    digest = hashlib.sha256(images.labels.cpu().numpy().tobytes())
    digest.update(images.images[:, :, 0, 0].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def lever_scale(step: int, total_steps: int, decay: float) -> float:
    """The factor on the attention levers' weights at ``step`` of ``total_steps``: 1, then over
    the last ``decay`` share of the run falling linearly to 0 (always 1 when ``decay`` is 0)."""
    if decay <= 0.0 or total_steps <= 0:
        return 1.0
    remaining = 1.0 - step / total_steps
    return min(1.0, max(0.0, remaining / decay))


def step_loss(forward: Callable[[Tensor], Any], x: Tensor, y: Tensor, device_type: str,
              amp: bool, autocast_cache: bool, label_smoothing: float, aux_weight: float,
              entropy_weight: float, lever_factor: Tensor | float) -> tuple[Any, Tensor]:
    """A training step's forward pass (bf16 autocast on CUDA with ``amp``) and its loss: the one
    definition that runs and compiles a run's steps and the side compile's
    (``ltpa.compiling.warm_compiler_cache``), so both compile the same graphs.

    Args:
        forward: the model (or its data-parallel wrapper).
        x, y: the batch and its labels.
        device_type: "cuda", "cpu", ...
        amp: bf16 autocast, on CUDA only.
        autocast_cache: keep autocast's weight cache (not in a captured step, whose replays must
            cast the current weights).
        label_smoothing, aux_weight, entropy_weight, lever_factor: as :func:`training_loss`.

    Returns:
        The model's output and the loss.
    """
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda" and amp,
                        cache_enabled=autocast_cache):
        out = forward(x)
    return out, training_loss(out, y, label_smoothing, aux_weight, entropy_weight, lever_factor)


def training_loss(out: Any, y: Tensor, label_smoothing: float, aux_weight: float = 0.0,
                  entropy_weight: float = 0.0, lever_factor: Tensor | float = 1.0) -> Tensor:
    """The loss of one batch: cross-entropy, plus the attention-quality terms.

    Args:
        out: the model's ``ModelOutput``.
        y: the labels.
        label_smoothing: label smoothing of the cross-entropy terms.
        aux_weight: weight of the mean cross-entropy of the per-stage classifiers.
        entropy_weight: weight of the mean normalised entropy of the stages' maps.
        lever_factor: a factor on both weights (a device scalar under a captured step, so that
            replays read its current value; see ``lever_scale``).

    Returns:
        The scalar loss (fp32).
    """
    loss = F.cross_entropy(out.logits.float(), y, label_smoothing=label_smoothing)
    if aux_weight and out.stage_logits:
        stage_losses = [F.cross_entropy(s.float(), y, label_smoothing=label_smoothing)
                        for s in out.stage_logits]
        loss = loss + lever_factor * aux_weight * torch.stack(stage_losses).mean()
    if entropy_weight and out.maps:
        entropy = torch.stack([batch_entropy(m) for m in out.maps]).mean()
        loss = loss + lever_factor * entropy_weight * entropy
    return loss


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


# The compiler's own phase timers that say where a first compiled step's time goes.
COMPILE_PHASES = ("bytecode_tracing", "create_aot_dispatcher_function", "GraphLowering.run",
                  "Scheduler.codegen", "async_compile.wait", "PyCodeCache.load_by_key_path",
                  "compile_fx.<locals>.fw_compiler_base", "compile_fx.<locals>.bw_compiler",
                  "CachingAutotuner.benchmark_all_configs", "_compile.compile_inner")


def compile_phases() -> dict[str, float]:
    """Seconds that ``torch.compile`` has spent so far in each of ``COMPILE_PHASES`` (summed over
    the compiled graphs; empty when this PyTorch does not report them)."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
    except Exception:  # a private timer table: its absence must not stop a run
        return {}
    times = dict(zip(names, values))
    return {name: round(float(times[name]), 2) for name in COMPILE_PHASES if name in times}


class _PhaseClock:
    """Records the seconds since the previous call under each name given (CUDA work finished)."""

    def __init__(self, phases: dict[str, float], device: torch.device) -> None:
        self.phases, self.device = phases, device
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        if self.device.type == "cuda" and torch.cuda.is_initialized():
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.phases[name] = round(now - self.last, 3)
        self.last = now


class Trainer:
    """One training run; ``run()`` trains to ``config.epochs`` and returns the final log."""

    def __init__(self, config: TrainConfig, command: str | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 extend: bool = False,
                 on_batch: Callable[[int, int, int, int, float], None] | None = None,
                 distributed: "DataParallel | None" = None) -> None:
        """Set up a run (nothing is loaded or written until ``run()``).

        Args:
            config: the run's settings.
            command: the command line recorded in the checkpoint (default: this process's).
            on_epoch: called with each epoch's log row.
            extend: a resumed run may train for more epochs than it was started with.
            on_batch: called as (epoch, epochs, batches done, batches, start time) every 20
                batches, e.g. to draw a progress bar.
            distributed: this process's rank of a data-parallel run (``ltpa.distributed``).
        """
        self.config = config
        self.extend = extend
        self.command = command or "ltpa " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        self.on_epoch = on_epoch
        self.on_batch = on_batch
        self.out = Path(config.out)
        # Where a run's time goes, logged with each save (set by run() and prepare()).
        self.setup_s: float | None = None
        self.setup_phases_s: dict[str, float] = {}
        self.compile_phases_s: dict[str, float] | None = None
        # With compile_ahead: the side process until the model is compiled, then how it went
        # (logged); the first epoch that ran compiled, and the compiler-cache counts after it.
        self.ahead: CompileAhead | None = None
        self.compiled_from_epoch: int | None = None
        self.compile_ahead: dict[str, Any] | None = None
        self.compile_cache: dict[str, int] | None = None
        self._cache_counts_before: dict[str, int] = {}
        self._run_started: float | None = None
        self._run_started_unix: float | None = None
        self.distributed = distributed
        self.device = get_device(config.device) if distributed is None else distributed.device
        self.cuda = self.device.type == "cuda"

    def prepare(self, sets: tuple[ImageSet, ImageSet] | None = None) -> None:
        """Load the data (or take ``sets``, training and test images already in memory), build
        the model, loaders, optimiser and schedule; ``run()`` calls it."""
        config = self.config
        if self.ahead is not None:  # prepared before: its side process is not this setup's
            self.ahead.stop()
            self.ahead = None
        if config.step_graph and not self.cuda:
            raise ValueError(f"--step-graph needs a CUDA device; this run is on {self.device.type}")
        if config.compile_ahead and self.distributed is not None:
            raise ValueError("--compile-ahead is for single-process runs: drop it for "
                             "data-parallel training")
        if config.step_graph and self.distributed is not None:
            raise ValueError("--step-graph is for single-GPU runs: data-parallel steps synchronise "
                             "gradients between processes, which one captured graph cannot do")
        if self.cuda:
            torch.backends.cudnn.benchmark = config.cudnn_benchmark
        overrides = dict(config.overrides)
        if config.width != 1.0:
            overrides["width"] = config.width
        # Refuse an unknown model or model setting before the data is read (no memory is taken
        # on the meta device).
        with torch.device("meta"):
            probe = create_model(config.model, num_classes=2, **overrides)
        if config.compile and config.compile_scope == "blocks" and not repeated_blocks(probe):
            raise ValueError(f"--compile-scope blocks: {config.model} has no repeated blocks to "
                             "compile one by one; use --compile-scope model")
        torch.manual_seed(config.seed)
        # Where setup time goes, logged as setup_phases_s (bench/recipe_speed.py prints it).
        self.setup_phases_s = {}
        phase = _PhaseClock(self.setup_phases_s, self.device)
        train, test = sets or load_dataset(config.data, config.data_root, config.download,
                                           config.image_size)
        phase("data")
        self.class_names = train.class_names
        self.mean, self.std = dataset_normalisation(config.data, train)
        self.input_size = int(train.images.shape[-1])
        # Split on the device: gathering 45,000 images there is instant, on the CPU about a second.
        train, validation = split_validation(train.to(self.device), config.validation,
                                             config.validation_seed)
        self.validation_digest = split_digest(validation)
        self.train_set: ImageSet = train
        self.validation_set: ImageSet | None = validation
        self.test_set: ImageSet = test.to(self.device)
        phase("to_device")
        self.model = create_model(config.model, num_classes=len(self.class_names), **overrides)
        # On the CPU, before the move: a probe on the GPU would pay cuDNN's algorithm search for
        # shapes that training never uses.
        self._check_levers()
        phase("lever_check")
        if config.compile and config.compile_ahead:
            # Once the class count and the batch shape are known, and after the lever check:
            # the side process's start-up (its compile workers) overlaps the rest of the setup
            # and the first epochs; started before that CPU forward pass, it slowed it (RN-att2:
            # 3.1 s beside it against 0.3 s without, docs/attention_levers.md section L).
            self.ahead = CompileAhead(CompileJob(
                model=config.model, num_classes=len(self.class_names), overrides=overrides,
                input_size=self.input_size, batch_size=min(config.batch_size, len(train)),
                device=str(self.device), amp=config.amp, channels_last=config.channels_last,
                compile_mode=config.compile_mode, compile_scope=config.compile_scope,
                label_smoothing=config.label_smoothing, aux_weight=config.aux_weight,
                entropy_weight=config.entropy_weight, lever_decay=config.lever_decay,
                cudnn_benchmark=config.cudnn_benchmark, autocast_cache=not config.step_graph,
                threads=torch.get_num_threads()))
            phase("compile_ahead_start")
        self.model.to(self.device)
        if self.cuda and config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        phase("model")
        # The average is a plain (uncompiled) copy: evaluation is a small share of the time.
        self.average = (torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema),
            use_buffers=True) if config.ema else None)
        self.generator = torch.Generator().manual_seed(config.seed)
        channels_last = self.cuda and config.channels_last
        self.train_loader = DeviceLoader(
            self.train_set, config.batch_size, self.mean, self.std, train=True, pad=config.pad,
            cutout=config.cutout, drop_last=len(self.train_set) >= 2 * config.batch_size,
            generator=self.generator, channels_last=channels_last, flip=config.train_flip,
            flip_seed=config.seed)
        self.test_loader = DeviceLoader(self.test_set, 1000, self.mean, self.std, train=False,
                                        channels_last=channels_last)
        self.validation_loader = None if self.validation_set is None else DeviceLoader(
            self.validation_set, 1000, self.mean, self.std, train=False, channels_last=channels_last)
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr, config.momentum,
                                         config.nesterov, config.weight_decay, config.filter_lr)
        self.total_steps = config.epochs * len(self.train_loader)
        # A device scalar when it changes: a captured step reads it at each replay.
        self.lever_factor: Tensor | float = (torch.ones((), device=self.device)
                                             if config.lever_decay else 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: one_cycle(step, self.total_steps, config.warmup, config.final_lr_fraction))
        if self.distributed is not None:  # SyncBatchNorm, per-rank batches and shares
            self.distributed.prepare(self)
        phase("optimizer_loaders")
        if config.compile and self.ahead is None:
            # In place: state_dict keys keep their names (no _orig_mod.).
            self._cache_counts_before = cache_counts()
            compile_model(self.model, config.compile_mode, config.compile_scope)
            phase("compile_setup")
        self.forward = self.model if self.distributed is None else self.distributed.wrap(self.model)
        self.cuda_graphs = replays_cuda_graphs(config.compile, config.compile_mode, self.device)
        # Built on the first step, after a resumed state has been loaded: a graph records the
        # addresses of the weights and momentum buffers it updates. One per storage rounding
        # ("" and, for quantisation-aware epochs, the rounding those epochs train under).
        self.graphed_steps: dict[str, GraphedStep] = {}
        self.learning_rates: list[Tensor] = []
        self.start_epoch, self.log, self.elapsed = 0, [], 0.0
        self._last_save = time.perf_counter()
        self._final_result: ClassificationResult | None = None
        self.compile_phases_s = self.compile_ahead = self.compile_cache = None
        self.compiled_from_epoch = None

    def _check_levers(self) -> None:
        """Refuse a training lever the model cannot use, before any epoch runs (one forward pass
        of the model while it is still on the CPU)."""
        config = self.config
        if not config.aux_weight and not config.entropy_weight:
            return
        probe_size = max(MIN_INPUT_SIZE, self.input_size)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.zeros(1, 3, probe_size, probe_size))
        self.model.train(was_training)
        if config.entropy_weight and not out.maps:
            raise ValueError(f"--entropy-weight needs a model with attention; {config.model} has none")
        if config.aux_weight and not out.stage_logits:
            raise ValueError(f"--aux-weight needs per-stage classifiers: an indep head, or "
                             f"--set stage_classifiers=true on a concat model ({config.model} has none)")

    def _resume(self) -> None:
        state_path = self.out / STATE_FILE
        def read() -> dict[str, Any] | None:
            return load_state(state_path) if state_path.is_file() else None
        # Data-parallel: rank 0 reads the state and every rank gets the same one.
        state = read() if self.distributed is None else self.distributed.from_main(read)
        if state is None:
            return
        self._check_same_run(state.get("config", {}))
        self.model.load_state_dict(state["model"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.start_epoch, self.log = int(state["epoch"]), list(state["log"])
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.distributed is not None:
            self.distributed.restore_rng(state, self.config.seed, self.start_epoch)
        logger.info("resuming %s after epoch %d", self.out, self.start_epoch)

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        """Refuse to continue a saved state under settings that define another run."""
        skip = set(RESUMABLE_CHANGES) | ({"epochs"} if self.extend else set())
        changed = config_differences(saved, self.config, skip)
        if changed:
            raise ValueError(
                f"{self.out} holds a run with other settings: {'; '.join(changed)}. Resume it with "
                f"its own settings (`ltpa train --resume {self.out}`), or train into another "
                f"folder (ltpa train --out, ltpa zoo train --runs)")

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights that are evaluated and shipped: the average under ``ema``, else the model."""
        return self.model if self.average is None else self.average.module

    def _save(self, epoch: int, result: ClassificationResult | None) -> None:
        # Data-parallel: every rank's RNG state is gathered; rank 0 alone writes.
        ranks = {} if self.distributed is None else self.distributed.rng_states()
        if self.distributed is not None and not self.distributed.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        log = {"config": asdict(self.config), "epochs": self.log, "setup_s": self.setup_s,
               "setup_phases_s": self.setup_phases_s, "compile_phases_s": self.compile_phases_s,
               "compiled_from_epoch": self.compiled_from_epoch,
               "compile_ahead": self.compile_ahead, "compile_cache": self.compile_cache,
               # Seconds from run() to this save, and the clock times of both (a process's start-up
               # and exit are the rest of its time: bench/recipe_speed.py).
               "run_s": (None if self._run_started is None
                         else round(time.perf_counter() - self._run_started, 2)),
               "run_started_unix": self._run_started_unix, "saved_unix": time.time()}
        # Data-parallel runs write every epoch: the ranks gather their RNG states above each time.
        interval = self.config.save_interval_s if self.distributed is None else 0.0
        due = (epoch in (self.start_epoch + 1, self.config.epochs) or not interval
               or time.perf_counter() - self._last_save >= interval)
        if not due:
            _atomic_json(self.out / LOG_FILE, log)
            return
        self._last_save = time.perf_counter()
        state = {
            "model": self.model.state_dict(),
            **({} if self.average is None else {"average": self.average.state_dict()}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "log": self.log,
            "elapsed": self.elapsed,
            "config": asdict(self.config),
            **ranks,
        }
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out / STATE_FILE)
        meta = self.metadata(epoch, result)
        save_checkpoint(self.out / MODEL_FILE, self.evaluated_model, meta)
        _atomic_json(self.out / LOG_FILE, log)

    def metadata(self, epoch: int, result: ClassificationResult | None) -> dict[str, Any]:
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
                "test_error_flip": result.flip_error,
                **({"test_error_tta": result.tta_error} if self.config.tta_translate else {}),
                "per_class_accuracy": result.per_class_accuracy,
                "test_entropy": result.entropy,
                "validation_error": error_percent(self.log[-1].get("val_acc")) if self.log else None,
                "validation_error_flip": (error_percent(self.log[-1].get("val_acc_flip"))
                                          if self.log else None),
            },
            "training": {
                "command": self.command,
                "config": asdict(self.config),
                "epochs": epoch,
                "wall_time_s": round(self.elapsed, 1),
                "images_per_s": round(total_images / self.elapsed, 1) if self.elapsed else None,
                "hardware": _hardware(self.device),
                "validation_images": 0 if self.validation_set is None else len(self.validation_set),
                "validation_digest": self.validation_digest,
                **({} if self.distributed is None else {"data_parallel": self.distributed.describe()}),
            },
        }

    def quantisation_aware(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) trains and evaluates with storage-rounded weights."""
        return bool(self.config.qat) and epoch > self.config.epochs - self.config.qat_epochs

    def _storage_precision(self, epoch: int) -> str:
        """The storage precision whose rounding ``epoch`` trains and evaluates under ("" for none)."""
        return self.config.qat if self.quantisation_aware(epoch) else ""

    def _evaluate(self, epoch: int, loader: DeviceLoader, translate: int) -> ClassificationResult:
        # Under quantisation-aware training the metrics are those of the stored weights.
        model = self.evaluated_model
        # A compiled model is scored eagerly: evaluation mode and the evaluation batch size would
        # each compile the model again (seconds to tens of seconds) for a small share of the work.
        stance = (torch.compiler.set_stance("force_eager") if self.config.compile
                  else contextlib.nullcontext())
        # The unwrapped model: a data-parallel rank scores its share without collectives.
        with stance, storage_rounded_weights(model, self._storage_precision(epoch)):
            result = evaluate(model, loader, len(self.class_names), amp=self.config.amp,
                              cuda_graphs=False, flip=self.config.flip, translate=translate)
        return result if self.distributed is None else self.distributed.reduce_result(result)

    def train_step(self, x: Tensor, y: Tensor, rounding: str = "") -> tuple[Tensor, Tensor]:
        """One optimiser step on a batch (forward and backward on the weights as ``rounding``
        storage rounds them, "" for none); returns the logits and the loss, not detached."""
        if isinstance(self.lever_factor, Tensor):
            # The schedule's step count (restored on resume) is the number of steps taken.
            self.lever_factor.fill_(lever_scale(self.scheduler.last_epoch, self.total_steps,
                                                self.config.lever_decay))
        if self.config.step_graph:
            logits, loss = self._graph_step(x, y, rounding)
        else:
            if self.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            logits, loss = self._forward_backward(x, y, rounding)
            self.optimizer.step()
        self.scheduler.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        return logits, loss

    def _forward_backward(self, x: Tensor, y: Tensor, rounding: str,
                          autocast_cache: bool = True) -> tuple[Tensor, Tensor]:
        """Loss and gradients of one batch, on the weights as ``rounding`` storage rounds them;
        the update that follows changes the full-precision ones (straight-through)."""
        for param in self.model.parameters():
            param.grad = None  # so that a captured backward pass writes the gradients
        config = self.config
        with storage_rounded_weights(self.model, rounding):
            out, loss = step_loss(self.forward, x, y, self.device.type, config.amp, autocast_cache,
                                  config.label_smoothing, config.aux_weight,
                                  config.entropy_weight, self.lever_factor)
            loss.backward()
        return out.logits.float(), loss

    def _update_step(self, x: Tensor, y: Tensor, rounding: str = "") -> tuple[Tensor, Tensor]:
        """Forward, backward and the SGD update (``ltpa.optim.sgd_update_``) of one batch,
        with no host synchronisation: the step ``GraphedStep`` captures."""
        # No autocast weight cache: a captured graph must cast the current weights each replay.
        logits, loss = self._forward_backward(x, y, rounding, autocast_cache=False)
        sgd_update_(self.optimizer, self.learning_rates)
        return logits, loss

    def _graph_step(self, x: Tensor, y: Tensor, rounding: str) -> tuple[Tensor, Tensor]:
        if not self.learning_rates:
            self.learning_rates = learning_rate_tensors(self.optimizer, self.device)
            # The schedule checks that an optimiser step came first; sgd_update_ is that step.
            self.optimizer._opt_called = True  # type: ignore[attr-defined]
        if rounding not in self.graphed_steps:
            # Quantisation-aware steps round the weights in place and restore them, all on the
            # device, so they are captured too (their own graph).
            self.graphed_steps[rounding] = GraphedStep(
                lambda xb, yb: self._update_step(xb, yb, rounding))
        refresh_learning_rates(self.optimizer, self.learning_rates)
        return self.graphed_steps[rounding](x, y)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        model, config = self.model, self.config
        model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        n_batches = len(self.train_loader)
        rounding = self._storage_precision(epoch)
        self.train_loader.epoch = epoch  # alternating flips mirror odd epochs' images
        for step, (x, y) in enumerate(self.train_loader, start=1):
            logits, loss = self.train_step(x, y, rounding)
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if self.on_batch and (step % 20 == 0 or step == n_batches):
                self.on_batch(epoch, config.epochs, step, n_batches, started)
        if self.distributed is not None:  # sums over every rank; rank 0's BN statistics
            loss_sum, correct, seen = self.distributed.finish_epoch(self, loss_sum, correct, seen)
        if not math.isfinite(float(loss_sum)):
            raise RuntimeError(f"training diverged at epoch {epoch} (loss is not finite); "
                               "lower --lr or check the data")
        self.epoch_images = seen
        return float(loss_sum) / max(1, seen), float(correct) / max(1, seen)

    def run(self) -> list[dict[str, Any]]:
        """Train (resuming from ``out`` when it holds a state) and return the per-epoch log."""
        try:
            return self._train()
        finally:
            if self.ahead is not None:  # still compiling when the run ended: not needed now
                self.ahead.stop()
                self.ahead = None

    def _train(self) -> list[dict[str, Any]]:
        started_setup = self._run_started = time.perf_counter()
        self._run_started_unix = time.time()
        self.prepare()
        # Reading and decoding the data, building the model and the loaders (logged as setup_s).
        self.setup_s = round(time.perf_counter() - started_setup, 2)
        self._resume()
        config = self.config
        if config.compile and self.ahead is None:
            self.compiled_from_epoch = self.start_epoch + 1
        if self.start_epoch >= config.epochs:
            logger.info("%s already trained for %d epochs", self.out, self.start_epoch)
            return self.log
        try:
            for epoch in range(self.start_epoch + 1, config.epochs + 1):
                if self.cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                if self.ahead is not None and self.ahead.finished():
                    self._compile_after_ahead(epoch)
                train_loss, train_acc = self._train_epoch(epoch)
                if self.compiled_from_epoch == epoch and self.compile_phases_s is None:
                    self.compile_phases_s = compile_phases()
                    self.compile_cache = cache_counts(since=self._cache_counts_before)
                if self.cuda:
                    torch.cuda.synchronize()
                epoch_time = time.perf_counter() - started
                self.elapsed += epoch_time
                started_scoring = time.perf_counter()
                scores = self._scores(epoch)
                row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                       "lr": lr, "epoch_time_s": round(epoch_time, 3),
                       "train_images": self.epoch_images,
                       "eval_time_s": round(time.perf_counter() - started_scoring, 3), **scores}
                self.log.append(row)
                self._save(epoch, self._final_result)
                if self.on_epoch:
                    self.on_epoch(row)
                logger.info("epoch %d/%d loss %.4f train_acc %.4f%s lr %.4f %.1fs", epoch,
                            config.epochs, train_loss, train_acc, _scores_text(row), lr, epoch_time)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted; the last saved epoch"
                + (f" (written at most {self.config.save_interval_s:g} s apart)"
                   if self.config.save_interval_s and self.distributed is None else "")
                + f" is in {self.out}: resume with `ltpa train --resume {self.out}`") from None
        return self.log

    def _compile_after_ahead(self, epoch: int) -> None:
        """Compile the model once the side process has filled the compiler's cache (or failed:
        then the compile starts from nothing, as without ``compile_ahead``); the eager steps'
        CUDA graphs are dropped so that the next steps capture the compiled kernels."""
        result = self.ahead.result()
        self.ahead = None
        self.compile_ahead = result.as_log()
        if not result.ok:
            logger.warning("compiling ahead failed after %.1f s; compiling in the run instead:\n%s",
                           result.seconds, result.error)
        self._cache_counts_before = cache_counts()
        compile_model(self.model, self.config.compile_mode, self.config.compile_scope)
        self.graphed_steps.clear()
        self.compiled_from_epoch = epoch

    def _scores(self, epoch: int) -> dict[str, Any]:
        """One epoch's held-out scores: validation every ``eval_every`` epochs; the test set only
        after the last epoch (or, for a run without a validation split, every ``eval_every``)."""
        config, row = self.config, {}
        self._final_result = None
        scheduled = epoch % config.eval_every == 0 or epoch == config.epochs
        # The translated views (four more per image) are scored after the last epoch only: the
        # earlier validation points follow the run, and the last one is the one compared.
        translate = config.tta_translate if epoch == config.epochs else 0
        if scheduled and self.validation_loader is not None:
            val = self._evaluate(epoch, self.validation_loader, translate)
            row.update(val_loss=val.loss, val_acc=val.accuracy, val_acc_flip=val.flip_accuracy,
                       entropy=val.entropy,
                       **({"val_acc_tta": val.tta_accuracy} if translate else {}))
        if epoch == config.epochs or (scheduled and self.validation_loader is None):
            test = self._final_result = self._evaluate(epoch, self.test_loader, translate)
            row.update(test_loss=test.loss, test_acc=test.accuracy,
                       test_acc_flip=test.flip_accuracy, test_entropy=test.entropy,
                       **({"test_acc_tta": test.tta_accuracy} if translate else {}))
            row.setdefault("entropy", test.entropy)
        row.setdefault("test_loss", None)
        row.setdefault("test_acc", None)
        row.setdefault("entropy", {})
        return row


# The scorings a run logs per held-out split, as suffixes of its log keys (``test_acc_flip``):
# plain, mirror-averaged, and mirror-and-translate-averaged (``tta_translate``).
SCORINGS = (("", "plain"), ("_flip", "flip"), ("_tta", "flip+translate"))


def _scores_text(row: dict[str, Any]) -> str:
    return "".join(f" {split}_acc{suffix} {row[f'{split}_acc{suffix}']:.4f}"
                   for split in ("val", "test") for suffix, _ in SCORINGS
                   if row.get(f"{split}_acc{suffix}") is not None)


def final_errors_text(row: dict[str, Any]) -> str:
    """An epoch's held-out errors in words, every scoring the run logged, as ``ltpa train``
    prints them at the end (the recipe's headline figure is the flip or flip+translate one).

    Args:
        row: a row of a run's log (``log.json``'s ``epochs``).

    Returns:
        e.g. ``"test error 9.33% (flip 8.57%, flip+translate 8.48%); validation error 8.80%
        (flip 8.68%, flip+translate 8.38%)"``; empty when the row has no held-out scores.
    """
    parts = []
    for split, name in (("test", "test"), ("val", "validation")):
        if row.get(f"{split}_acc") is None:
            continue
        augmented = [f"{label} {error_percent(row[f'{split}_acc{suffix}']):.2f}%"
                     for suffix, label in SCORINGS[1:] if row.get(f"{split}_acc{suffix}") is not None]
        parts.append(f"{name} error {error_percent(row[f'{split}_acc']):.2f}%"
                     + (f" ({', '.join(augmented)})" if augmented else ""))
    return "; ".join(parts)


def load_state(path: Path) -> dict[str, Any]:
    """A run's ``state.pt``, read without running any pickled code.

    Args:
        path: the state file.

    Returns:
        The saved state (weights, optimiser, schedule, RNG, epoch, log, configuration).

    Raises:
        CheckpointError: a damaged or unsafe file (pickled objects are refused for safety).
        ValueError: a readable file that is not an ltpa training state.
    """
    # On the CPU: the RNG states must stay CPU ByteTensors; weights move on load_state_dict.
    state = load_state_file(path)
    if not isinstance(state, dict) or not {"model", "optimizer", "epoch", "config"} <= set(state):
        raise ValueError(f"{path} is not an ltpa training state (it lacks the weights, optimiser, "
                         "epoch or configuration)")
    return state
