"""Data-parallel training over several processes with torch's DistributedDataParallel.

Started by ``torchrun --nproc_per_node=N -m ltpa train ...`` (or ``ltpa train --nproc N``, which
launches the same workers through torch's elastic launcher), every process (rank) trains one copy
of the model on its slice of each global batch; DDP averages the gradients (NCCL on CUDA, gloo on
the CPU). How a run stays the single-process recipe for any number of processes N:

- Every rank holds the training images on its device as uint8 and draws the single-process
  recipe's permutation and augmentation randomness from one generator seeded alike on every rank;
  rank r gathers and augments only its slice (``RankSliceLoader``). The concatenated slices of a
  global batch are the single-process batch, bit for bit, and the generator's state after any
  step is the same for every N: a run resumes on another number of processes on the same batches.
- The global batch is ``batch_size`` (per-rank batch ``batch_size / N``; a world size that does not
  divide it is refused), so the step count and the learning-rate schedule are those of one process.
- BatchNorm normalises each rank's slice with that slice's statistics unless ``sync_bn``
  (``torch.nn.SyncBatchNorm``, CUDA only); DDP copies rank 0's running statistics to every rank.
- The global RNG (dropout) is seeded per rank; rank 0 keeps the single-process stream.
- Validation and test images are split into one contiguous share per rank, each rank scores its
  share, and the sums (confusion, loss, entropy, mirrored hits) are all-reduced.
- Rank 0 alone writes ``state.pt``, ``model.pt`` and ``log.json``; a resumed run reads the state on
  rank 0 and broadcasts it.

See docs/distributed.md for the commands and for what is and is not bit-identical.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ltpa.data import DeviceLoader, ImageSet
from ltpa.device import get_device
from ltpa.training import ClassificationResult, TrainConfig, Trainer, split_digest, training_loss

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0  # a collective that waits longer than this fails instead of hanging
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
# What the launcher's workers may raise as bad input (the others are failures of the run).
INPUT_ERRORS = ("ValueError", "FileNotFoundError", "DatasetError")


@dataclass(frozen=True)
class DataParallelOptions:
    """The settings of a data-parallel run that are not settings of the training recipe."""

    sync_bn: bool = False  # torch.nn.SyncBatchNorm: batch statistics over the global batch
    timeout_s: float = DEFAULT_TIMEOUT_S  # of every collective, and of the process group's start


def launched_by_torchrun() -> bool:
    """Whether this process is a rank of a torchrun-style launch (RANK and WORLD_SIZE are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The batch each rank trains on, refusing a world size that does not divide the global batch.

    Args:
        batch_size: the global batch (the recipe's ``batch_size``).
        world_size: the number of processes.

    Returns:
        ``batch_size // world_size``.

    Raises:
        ValueError: ``world_size`` is not a positive divisor of ``batch_size``.
    """
    if world_size < 1:
        raise ValueError(f"the number of processes must be at least 1; got {world_size}")
    if batch_size % world_size:
        divisors = [n for n in range(1, min(batch_size, 64) + 1) if batch_size % n == 0]
        raise ValueError(f"the global --batch-size {batch_size} does not split over {world_size} "
                         f"processes: use a process count that divides it "
                         f"({', '.join(map(str, divisors))}) or another --batch-size")
    return batch_size // world_size


def check_process_count(nproc: int, device: torch.device, gpu_count: int) -> None:
    """Refuse a launch of ``nproc`` processes that this machine cannot run.

    Args:
        nproc: the processes asked for (``--nproc``).
        device: the device the run asks for.
        gpu_count: the GPUs present.

    Raises:
        ValueError: fewer than one process, more CUDA processes than GPUs, a GPU index, or a
            device type data-parallel training does not run on.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be a positive integer; got {nproc!r}")
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"each process uses the GPU of its local rank: pass --device cuda "
                             f"(or auto), not {device}")
        if nproc > gpu_count:
            raise ValueError(f"--nproc {nproc} asks for {nproc} GPUs and this machine has "
                             f"{gpu_count}: pass --nproc {gpu_count} or fewer, or --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"data-parallel training runs on CUDA (NCCL) or the CPU (gloo), "
                         f"not on {device.type}")


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The global-RNG seed of rank ``rank`` (> 0) from ``epoch`` on: distinct per rank and epoch."""
    digest = hashlib.sha256(f"ltpa-rank-seed:{seed}:{rank}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def share_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """The [start, end) of rank ``rank``'s contiguous share of ``count`` items (sizes differ by 1)."""
    return rank * count // world_size, (rank + 1) * count // world_size


class RankSliceLoader(DeviceLoader):
    """The single-process training loader's batches, each cut to one rank's slice.

    The permutation and every augmentation draw are made for the whole global batch from the
    shared generator (so every rank's generator stays in step with the single-process one); the
    rank gathers, augments and normalises only its slice. A last partial batch is split as evenly
    as possible, and skipped when it has fewer images than there are ranks.
    """

    def __init__(self, loader: DeviceLoader, rank: int, world_size: int) -> None:
        """Cut ``loader``'s batches (its data, global batch size, augmentation and generator).

        Args:
            loader: the single-process training loader.
            rank: this process's rank.
            world_size: the number of processes.
        """
        self.__dict__.update(vars(loader))
        self.rank, self.world_size = rank, world_size
        self._batch_slice = (0, 0, 0)  # (global count, start, end) of the batch being built

    def __len__(self) -> int:
        full, rest = divmod(len(self.data), self.batch_size)
        return full + int(bool(rest) and not self.drop_last and rest >= self.world_size)

    def _rand(self, *shape: int, high: int) -> Tensor:
        count, start, end = self._batch_slice
        return super()._rand(count, *shape[1:], high=high)[start:end]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n, device = len(self.data), self.data.images.device
        order = (torch.randperm(n, generator=self.generator).to(device) if self.train
                 else torch.arange(n, device=device))
        for begin in range(0, n, self.batch_size):
            index = order[begin: begin + self.batch_size]
            count = index.numel()
            if count < self.batch_size and (self.drop_last or count < self.world_size):
                break
            start, end = share_bounds(count, self.rank, self.world_size)
            self._batch_slice = (count, start, end)
            yield self.batch(index[start:end])


def rank_device(preferred: str, local_rank: int) -> torch.device:
    """The device of the process with ``local_rank``: its own GPU, or the CPU.

    Args:
        preferred: the run's ``--device`` (auto, cuda or cpu).
        local_rank: the rank of the process on its machine.

    Returns:
        ``cuda:local_rank`` or ``cpu``.

    Raises:
        ValueError: a GPU index, a local rank with no GPU, or an unsupported device type.
    """
    device = get_device(preferred)
    check_process_count(1, device, torch.cuda.device_count() if device.type == "cuda" else 0)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"local rank {local_rank} has no GPU: this machine has {count}; "
                             f"start at most {count} processes per machine (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    return device


class DataParallel:
    """One process's part in a data-parallel run: rank, device, process group and the steps that
    ``Trainer`` hands over to it (loaders, wrapping, reductions, saving, resuming)."""

    def __init__(self, rank: int, world_size: int, local_rank: int, device: torch.device,
                 backend: str, options: DataParallelOptions) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device, self.backend, self.options = device, backend, options
        self.find_unused_parameters = False

    @classmethod
    def start(cls, preferred_device: str, options: DataParallelOptions,
              backend: str | None = None) -> "DataParallel":
        """Join the process group that torchrun (or ``launch``) set up in the environment.

        Args:
            preferred_device: the run's ``--device``.
            options: SyncBatchNorm and the collectives' timeout.
            backend: the process group's backend (default: NCCL on CUDA, gloo on the CPU).

        Returns:
            This process's ``DataParallel``.

        Raises:
            ValueError: missing launcher variables, a device the run cannot use, or SyncBatchNorm
                off CUDA.
        """
        try:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
        except (KeyError, ValueError):
            raise ValueError("not started as a rank of a data-parallel run: launch with "
                             "`torchrun --nproc_per_node=N -m ltpa train ...` or "
                             "`ltpa train --nproc N ...`") from None
        device = rank_device(preferred_device, local_rank)
        if options.sync_bn and device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA: torch's SyncBatchNorm has no CPU implementation")
        if not options.timeout_s > 0:
            raise ValueError(f"the timeout must be a positive number of seconds; got {options.timeout_s}")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = backend or BACKENDS[device.type]
        dist.init_process_group(backend, timeout=timedelta(seconds=options.timeout_s))
        return cls(rank, world_size, local_rank, device, backend, options)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes the run's files."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group, together: a rank that tears its connections down while
        another still talks to it makes that one abort."""
        if dist.is_initialized():
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()
            dist.destroy_process_group()

    def describe(self) -> dict[str, Any]:
        """What the checkpoint records about the data-parallel setup."""
        return {"processes": self.world_size, "backend": self.backend,
                "sync_bn": self.options.sync_bn}

    def _gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def check_same_settings(self, settings: dict[str, Any], what: str = "settings") -> None:
        """Refuse, on every rank at once, settings that differ between ranks.

        Args:
            settings: this rank's values (plain data).
            what: what the values are, for the message.

        Raises:
            ValueError: naming the first rank that differs from rank 0 and how.
        """
        every = self._gather(settings)
        for rank, other in enumerate(every[1:], start=1):
            changed = [f"{key} (rank 0: {every[0].get(key)!r}, rank {rank}: {other.get(key)!r})"
                       for key in sorted(set(every[0]) | set(other))
                       if every[0].get(key) != other.get(key)]
            if changed:
                raise ValueError(f"the ranks disagree on their {what}: rank {rank} differs from "
                                 f"rank 0 in {'; '.join(changed)}. Start every rank with the "
                                 f"same command and data")

    def from_main(self, read: Callable[[], T]) -> T:
        """``read()`` on rank 0, its result (or its bad-input error) broadcast to every rank.

        Args:
            read: what rank 0 computes (e.g. reads a file).

        Returns:
            Rank 0's result, on every rank.

        Raises:
            ValueError: on every rank, when ``read`` raised ValueError or FileNotFoundError.
        """
        payload: list[Any] = [None, None]
        if self.is_main:
            try:
                payload = [read(), None]
            except (ValueError, FileNotFoundError) as error:
                payload = [None, str(error)]
        dist.broadcast_object_list(payload, src=0)
        if payload[1] is not None:
            raise ValueError(payload[1])
        return payload[0]

    # --- the steps Trainer hands over -----------------------------------------------------------

    def prepare(self, trainer: Trainer) -> None:
        """Turn a prepared single-process trainer into this rank's part: same data on every rank,
        per-rank seeds, SyncBatchNorm, the rank's slice of each training batch and its share of
        the evaluation images. Called before the model is compiled and wrapped."""
        config = trainer.config
        per_rank_batch(config.batch_size, self.world_size)
        self.check_same_settings(
            {"training images": split_digest(trainer.train_set),
             "test images": split_digest(trainer.test_set),
             "validation images": trainer.validation_digest,
             "parameters": sum(p.numel() for p in trainer.model.parameters())}, "data or model")
        if not self.is_main:
            torch.manual_seed(rank_seed(config.seed, self.rank, 0))
        if self.options.sync_bn:
            trainer.model = nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
        self.find_unused_parameters = bool(unused_parameters(trainer))
        trainer.train_loader = RankSliceLoader(trainer.train_loader, self.rank, self.world_size)
        trainer.total_steps = config.epochs * len(trainer.train_loader)
        trainer.test_loader = self._share_loader(trainer.test_loader)
        if trainer.validation_loader is not None:
            trainer.validation_loader = self._share_loader(trainer.validation_loader)

    def _share_loader(self, loader: DeviceLoader) -> DeviceLoader:
        """An evaluation loader over this rank's contiguous share of ``loader``'s images."""
        start, end = share_bounds(len(loader.data), self.rank, self.world_size)
        data = loader.data
        share = ImageSet(data.images[start:end], data.labels[start:end], data.class_names)
        shared = DeviceLoader.__new__(DeviceLoader)
        shared.__dict__.update({**vars(loader), "data": share})
        return shared

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` under DistributedDataParallel (the forward the training steps call)."""
        return DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters)

    def finish_epoch(self, trainer: Trainer, loss_sum: Tensor, correct: Tensor,
                     seen: int) -> tuple[Tensor, Tensor, int]:
        """The epoch's training sums over every rank; rank 0's buffers (BatchNorm statistics, of
        the model and of its average) copied to every rank, so all evaluate what rank 0 saves.

        Args:
            trainer: this rank's trainer.
            loss_sum: this rank's summed loss.
            correct: this rank's correct predictions.
            seen: this rank's images.

        Returns:
            The summed loss, correct predictions and images of all ranks.
        """
        totals = torch.stack([loss_sum.detach().double(), correct.double(),
                              torch.tensor(float(seen), dtype=torch.float64, device=loss_sum.device)])
        dist.all_reduce(totals)
        for module in (trainer.model, trainer.average):
            if module is not None:
                for buffer in module.buffers():
                    dist.broadcast(buffer, src=0)
        return totals[0], totals[1].round().long(), int(totals[2].round())

    def reduce_result(self, result: ClassificationResult) -> ClassificationResult:
        """The metrics of the whole evaluation set from every rank's metrics of its share.

        Args:
            result: this rank's ``evaluate`` result.

        Returns:
            The result over all shares (loss, accuracy, confusion, entropy and mirrored accuracy
            from the summed counts).
        """
        confusion = torch.tensor(result.confusion, dtype=torch.float64)
        count = float(confusion.sum())
        stages = next((names for names in self._gather(list(result.entropy)) if names), [])
        flip = result.flip_accuracy is not None
        tta = result.tta_accuracy is not None
        totals = [count, result.loss * count, (result.flip_accuracy or 0.0) * count,
                  (result.tta_accuracy or 0.0) * count]
        first_stage = len(totals)  # then one entropy sum per stage, then the confusion matrix
        local = [*totals, *(result.entropy.get(name, 0.0) * count for name in stages)]
        vector = torch.cat([torch.tensor(local, dtype=torch.float64), confusion.flatten()])
        vector = vector.to(self.device)
        dist.all_reduce(vector)
        vector = vector.cpu()
        total = max(1.0, float(vector[0]))
        confusion_total = vector[first_stage + len(stages):].round().long().view_as(confusion)
        per_class = (confusion_total.diag().float()
                     / confusion_total.sum(1).clamp_min(1).float()).tolist()
        return ClassificationResult(
            loss=float(vector[1]) / total,
            accuracy=float(confusion_total.diag().sum()) / total,
            per_class_accuracy=per_class,
            confusion=confusion_total.tolist(),
            entropy={name: float(vector[first_stage + i]) / total for i, name in enumerate(stages)},
            flip_accuracy=round(float(vector[2])) / total if flip else None,
            tta_accuracy=round(float(vector[3])) / total if tta else None)

    def rng_states(self) -> dict[str, Any]:
        """Every rank's global-RNG state (gathered on every rank), for ``state.pt``."""
        return {"rank_torch_rng": self._gather(torch.get_rng_state())}

    def restore_rng(self, state: dict[str, Any], seed: int, epoch: int) -> None:
        """After a resume: rank r continues its saved global-RNG stream when the saved run had a
        rank r, else starts a fresh per-rank stream (ranks > 0; rank 0 keeps the saved one)."""
        if self.is_main:
            return
        saved = state.get("rank_torch_rng") or []
        if self.rank < len(saved):
            torch.set_rng_state(saved[self.rank])
        else:
            torch.manual_seed(rank_seed(seed, self.rank, epoch))
        if self.device.type == "cuda":  # the CUDA stream (dropout on the GPU) is not saved
            torch.cuda.manual_seed(rank_seed(seed, self.rank, epoch))


def unused_parameters(trainer: Trainer) -> list[str]:
    """The parameters the training loss does not reach (DDP must then look for them each step),
    found with one backward pass in eval mode, which changes no buffer and draws no randomness."""
    model, config = trainer.model, trainer.config
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    size = trainer.input_size
    x = torch.zeros(2, 3, size, size, device=trainer.device)
    y = torch.zeros(2, dtype=torch.long, device=trainer.device)
    with torch.enable_grad():
        loss = training_loss(model(x), y, config.label_smoothing, config.aux_weight,
                             config.entropy_weight)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    model.train(was_training)
    return [name for (name, _), grad in zip(named, grads) if grad is None]


def train_data_parallel(config: TrainConfig, options: DataParallelOptions = DataParallelOptions(),
                        extend: bool = False, command: str | None = None,
                        on_epoch: Callable[[dict[str, Any]], None] | None = None,
                        on_batch: Callable[[int, int, int, int, float], None] | None = None,
                        backend: str | None = None) -> list[dict[str, Any]]:
    """Train ``config`` as this process's rank of a data-parallel run (torchrun's environment).

    Args:
        config: the run's settings (the same on every rank, checked).
        options: SyncBatchNorm and the collectives' timeout.
        extend: a resumed run may train for more epochs than it was started with.
        command: the command line recorded in the checkpoint.
        on_epoch: called with each epoch's log row, on every rank.
        on_batch: the progress callback, called on rank 0 only.
        backend: the process group's backend (default: NCCL on CUDA, gloo on the CPU).

    Returns:
        The per-epoch log (the same on every rank).

    Raises:
        ValueError: a world size that does not divide the batch, ranks that disagree, a device
            the run cannot use.
    """
    context = DataParallel.start(config.device, options, backend)
    per_rank_batch(config.batch_size, context.world_size)
    context.check_same_settings({**asdict(config), **asdict(options), "extend": extend})
    trainer = Trainer(config, command=command, on_epoch=on_epoch, extend=extend,
                      on_batch=on_batch if context.is_main else None, distributed=context)
    log = trainer.run()
    # DDP's reducer holds the backend's last work objects: free them before the process group,
    # while the interpreter is fully alive (else gloo may abort the process at exit).
    del trainer
    gc.collect()
    context.close()
    return log


def launch(nproc: int, entrypoint: Callable[..., T], *args: Any) -> T:
    """Run ``entrypoint(*args)`` as ``nproc`` ranks on this machine through torch's elastic
    launcher (what ``torchrun --standalone --nproc_per_node=nproc`` does) and return rank 0's
    result.

    Args:
        nproc: the number of processes.
        entrypoint: an importable function (it is started in fresh processes).
        *args: its arguments (picklable).

    Returns:
        What rank 0's call returned.

    Raises:
        ValueError: a rank refused its input (its message).
        RuntimeError: a rank failed or died; the first failure's message.
        KeyboardInterrupt: the launch was interrupted.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    parsed = torchrun.parse_args([
        "--nnodes=1", f"--nproc-per-node={nproc}", "--max-restarts=0", "--rdzv-backend=c10d",
        "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}", "--monitor-interval=0.5",
        "ltpa"])
    launch_config, _, _ = torchrun.config_from_args(parsed)
    # The launcher logs every failure with its traceback; the first one is raised here instead.
    elastic_logger = logging.getLogger("torch.distributed.elastic")
    level = elastic_logger.level
    elastic_logger.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(launch_config, entrypoint)(*args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        raise _failure_error(rank, failure) from None
    except SignalException:
        raise KeyboardInterrupt("interrupted: every rank was stopped") from None
    finally:
        elastic_logger.setLevel(level)
    return results[0]



def _failure_error(rank: int, failure: Any) -> Exception:
    """The exception a failed rank's record stands for: its bad-input message as a ValueError,
    anything else (a crash, a signal) as a RuntimeError naming the rank."""
    message = failure.message
    if isinstance(message, dict):  # the rank's error file: {"message": "Type: text", ...}
        message = message.get("message", "")
    text = str(message or "").strip()
    if not text or failure.signal_name() != "<N/A>":
        return RuntimeError(f"rank {rank} died ({failure.signal_name()}, exit code "
                            f"{failure.exitcode}); the last finished epoch is saved")
    kind, _, detail = text.splitlines()[-1].partition(": ")
    if kind.rsplit(".", 1)[-1] in INPUT_ERRORS and detail:
        return ValueError(detail)
    return RuntimeError(f"rank {rank} failed: {text.splitlines()[-1]}")
