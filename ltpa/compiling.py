"""Compiling a run's model, now or in a side process while its first epochs train eagerly.

Why a side process: the first compiled step of a VGG-att3 or RN-att2 costs 25-50 s of CPU time
in ``torch.compile`` (tracing, lowering, kernel code generation; docs/training.md), during which
the GPU waits. ``CompileAhead`` starts a second Python process that compiles the same model for
the same batch shape on made-up images and runs one training step; its compiled graphs land in
the compiler's on-disk caches (Inductor's FX-graph cache and the AOT-autograd cache, on by
default, under ``TORCHINDUCTOR_CACHE_DIR``). Meanwhile the run trains eagerly; once the side
process has exited, the run compiles its model, which now finds every graph in the cache and
costs seconds. Nothing is shared but the cache folder: a side process that fails costs the run
its slower eager epochs, then the plain compile it would have had anyway.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The tail of a failed side process's error output quoted in the run's warning.
ERROR_TAIL_CHARS = 2000
# The side process's command; the job's JSON is its last argument.
SIDE_COMMAND = (sys.executable, "-m", "ltpa.compiling")


def cache_counts(since: dict[str, int] | None = None) -> dict[str, int]:
    """How many graphs this process's compiles found in (hits) or added to (misses) the
    compiler's FX-graph and AOT-autograd caches so far, or since the counts ``since``."""
    from torch._dynamo.utils import counters

    now = {"fx_graph_hits": counters["inductor"]["fxgraph_cache_hit"],
           "fx_graph_misses": counters["inductor"]["fxgraph_cache_miss"],
           "aot_autograd_hits": counters["aot_autograd"]["autograd_cache_hit"],
           "aot_autograd_misses": counters["aot_autograd"]["autograd_cache_miss"]}
    return {key: value - (since or {}).get(key, 0) for key, value in now.items()}


def compiler_caches_on() -> bool:
    """Whether compiled graphs are kept on disk for other processes (Inductor's FX-graph cache
    and the AOT-autograd cache, both on unless turned off, e.g. by
    ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1``): compiling ahead needs both."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    return bool(not inductor_config.force_disable_caches and inductor_config.fx_graph_cache
                and functorch_config.enable_autograd_cache)


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules ``compile_scope="blocks"`` compiles one by one (classes that set
    ``repeated_block = True``, e.g. a ResNet bottleneck)."""
    return [m for m in model.modules() if getattr(type(m), "repeated_block", False)]


def compile_model(model: nn.Module, mode: str, scope: str) -> None:
    """Compile ``model`` in place (its ``state_dict`` keys keep their names).

    Args:
        model: the model.
        mode: a ``torch.compile`` mode ("default" passes none).
        scope: "model" (the whole model) or "blocks" (each of :func:`repeated_blocks`).
    """
    compile_mode = None if mode == "default" else mode
    for module in repeated_blocks(model) if scope == "blocks" else [model]:
        module.compile(mode=compile_mode)


@dataclass(frozen=True)
class CompileJob:
    """Everything that decides which graphs a run's training step compiles to."""

    model: str
    num_classes: int
    overrides: dict[str, Any] = field(default_factory=dict)
    input_size: int = 32
    batch_size: int = 512
    device: str = "cuda"
    amp: bool = True
    channels_last: bool = True
    compile_mode: str = "default"
    compile_scope: str = "model"
    label_smoothing: float = 0.0
    aux_weight: float = 0.0
    entropy_weight: float = 0.0
    lever_decay: float = 0.0
    cudnn_benchmark: bool = True
    # Whether the run's forward passes keep autocast's weight cache: a captured step does not
    # (Trainer._update_step), an uncaptured one does.
    autocast_cache: bool = False
    # The run's intra-op threads: CPU kernels are generated for that many (part of the cache key).
    threads: int = 1


def warm_compiler_cache(job: CompileJob) -> None:
    """Compile ``job``'s model and run one training step (forward, loss, backward) on a made-up
    batch, so that the compiler's caches hold the step's graphs. The weights are never updated.

    Args:
        job: the run's model, batch and loss settings.
    """
    # Imported here: ltpa.training imports this module.
    from ltpa.data import DeviceLoader, ImageSet
    from ltpa.registry import create_model
    from ltpa.training import step_loss

    device = torch.device(job.device)
    torch.set_num_threads(job.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = job.cudnn_benchmark
    channels_last = device.type == "cuda" and job.channels_last
    model = create_model(job.model, num_classes=job.num_classes, **job.overrides).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    compile_model(model, job.compile_mode, job.compile_scope)
    # The batch comes out of the run's own loader, so its dtype, layout and strides match.
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (job.batch_size, 3, job.input_size, job.input_size),
                           dtype=torch.uint8, generator=generator)
    labels = torch.arange(job.batch_size) % job.num_classes
    made_up = ImageSet(images, labels, [str(i) for i in range(job.num_classes)]).to(device)
    loader = DeviceLoader(made_up, job.batch_size, [0.5] * 3, [0.25] * 3, train=True,
                          drop_last=True, generator=generator, channels_last=channels_last)
    x, y = next(iter(loader))
    # Scaled like the run's levers: a device scalar when they decay (Trainer.lever_factor).
    lever_factor: torch.Tensor | float = (torch.ones((), device=device) if job.lever_decay
                                          else 1.0)
    _, loss = step_loss(model, x, y, device.type, job.amp, job.autocast_cache, job.label_smoothing,
                        job.aux_weight, job.entropy_weight, lever_factor)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class AheadResult:
    """How a side compilation ended: its wall time, and from the process itself the seconds of
    the compile and step (the rest is its start-up) and the compiler's phase times."""

    ok: bool
    seconds: float
    error: str = ""
    step_s: float | None = None
    phases_s: dict[str, float] = field(default_factory=dict)

    def as_log(self) -> dict[str, Any]:
        """The record a run's log keeps."""
        return {"ok": self.ok, "wall_s": self.seconds, "step_s": self.step_s,
                "phases_s": self.phases_s}


class CompileAhead:
    """A side process running :func:`warm_compiler_cache` for a job; poll ``finished()``."""

    def __init__(self, job: CompileJob) -> None:
        self.started = time.perf_counter()
        # Output goes to files: a pipe nobody reads could fill up and stall the process.
        self._report = tempfile.TemporaryFile(mode="w+")
        self._errors = tempfile.TemporaryFile(mode="w+")
        # The folder this ltpa was imported from comes first on the side process's path, so it
        # runs the same code wherever the run was started from.
        package_root = str(Path(__file__).resolve().parents[1])
        paths = [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        self.process = subprocess.Popen(
            [*SIDE_COMMAND, json.dumps(asdict(job))], stdout=self._report, stderr=self._errors,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
        self._result: AheadResult | None = None

    def finished(self) -> bool:
        """Whether the side process has exited (without waiting for it)."""
        return self._result is not None or self.process.poll() is not None

    def result(self) -> AheadResult:
        """How it ended; waits for the process if it is still running."""
        if self._result is None:
            code = self.process.wait()
            seconds = round(time.perf_counter() - self.started, 2)
            self._errors.seek(0)
            self._report.seek(0)
            error, lines = self._errors.read()[-ERROR_TAIL_CHARS:], self._report.read().splitlines()
            self._errors.close()
            self._report.close()
            if code != 0:
                self._result = AheadResult(False, seconds, error or f"exit status {code}")
            else:
                report = json.loads(lines[-1]) if lines else {}
                self._result = AheadResult(True, seconds, step_s=report.get("step_s"),
                                           phases_s=report.get("phases_s", {}))
        return self._result

    def stop(self) -> None:
        """End the side process if it is still running (the run no longer needs it)."""
        if self._result is None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._result is None:
            self.result()


def main(argv: list[str] | None = None) -> int:
    """``python -m ltpa.compiling JOB_JSON``: warm the compiler's caches for one job."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ltpa.compiling JOB_JSON", file=sys.stderr)
        return 2
    from ltpa.training import compile_phases

    if not compiler_caches_on():  # checked here, off the run's path: the run then compiles itself
        print("the compiler's on-disk caches are off (e.g. TORCHINDUCTOR_FORCE_DISABLE_CACHES=1): "
              "there is nothing to compile ahead into", file=sys.stderr)
        return 3
    started = time.perf_counter()
    warm_compiler_cache(CompileJob(**json.loads(args[0])))
    # One line for CompileAhead.result: how long the compile and step took, and where it went.
    print(json.dumps({"step_s": round(time.perf_counter() - started, 2),
                      "phases_s": compile_phases()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
