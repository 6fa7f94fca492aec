"""A whole training step (forward, backward and SGD update) captured once as a CUDA graph, then
replayed for every batch.

Why: at the fast recipe's widths one step is a few thousand small kernels, and launching them one
by one from Python leaves the GPU idle between them (docs/attention_levers.md, section D).
``torch.compile(mode="reduce-overhead")`` also removes the launches, but compiling a ResNet-164
takes about two minutes; capturing the eager step takes a few steps' time. Capture needs static
shapes and no host synchronisation inside the step, so the update (``ltpa.optim.sgd_update_``) is
written with foreach operations on learning rates held in device tensors (``torch.optim.SGD``
reads them as Python numbers, which a graph would freeze at the capture's values); the tensors
are made and refreshed here.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

# Eager steps before the capture, on a side stream (cuDNN picks its algorithms and autograd sets
# up its accumulators; PyTorch's CUDA-graph notes ask for a few such steps).
WARMUP_STEPS = 3

StepFunction = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def learning_rate_tensors(optimizer: torch.optim.Optimizer, device: torch.device) -> list[Tensor]:
    """One float32 scalar tensor per parameter group, holding that group's learning rate.

    Args:
        optimizer: the optimiser whose ``param_groups`` hold the rates.
        device: where the update runs.

    Returns:
        The tensors, in group order (refresh them with :func:`refresh_learning_rates`).
    """
    return [torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
            for group in optimizer.param_groups]


def refresh_learning_rates(optimizer: torch.optim.Optimizer, rates: list[Tensor]) -> None:
    """Copy each group's current ``lr`` (set by the schedule) into its tensor, without a sync."""
    for group, rate in zip(optimizer.param_groups, rates):
        rate.fill_(float(group["lr"]))


class GraphedStep:
    """Runs ``step`` (a whole training step on a batch, returning logits and loss) eagerly for
    ``warmup`` batches, then captures it as a CUDA graph on the next one and replays the graph
    from then on: each batch is copied into the graph's static input tensors first.

    A batch of another shape than the captured one (a short last batch) runs eagerly. The step
    must set every parameter's ``grad`` to None before its backward pass, so that inside the
    capture the backward pass writes the gradients instead of adding to them.
    """

    def __init__(self, step: StepFunction, warmup: int = WARMUP_STEPS) -> None:
        self.step, self.warmup = step, warmup
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._inputs: tuple[Tensor, Tensor] | None = None
        self._outputs: tuple[Tensor, Tensor] | None = None

    @property
    def captured(self) -> bool:
        """Whether the step has been captured (later batches of its shape are replays)."""
        return self.graph is not None

    def _side_stream_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            out = self.step(x, y)
        torch.cuda.current_stream(x.device).wait_stream(side)
        return out

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.graph is None and self.eager_steps < self.warmup:
            self.eager_steps += 1
            return self._side_stream_step(x, y)
        if self.graph is None:
            self._inputs = (x.clone(), y.clone())
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a background thread's CUDA work (none is expected) cannot void the capture.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self._outputs = self.step(*self._inputs)
        assert self._inputs is not None and self._outputs is not None
        static_x, static_y = self._inputs
        if x.shape != static_x.shape or y.shape != static_y.shape:
            return self.step(x, y)
        static_x.copy_(x)
        static_y.copy_(y)
        self.graph.replay()
        return self._outputs
