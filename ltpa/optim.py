"""The optimisers of ``ltpa train``: SGD with (Nesterov) momentum, and SGD whose convolution
filters take an orthogonalised step instead (``optimizer="muon"``).

Both are one update function, :func:`sgd_update_`, whose learning rates may be device tensors so
that a captured CUDA graph (``ltpa.step_graph``) replays it with the schedule's current rates; the
eager optimiser :class:`OrthogonalisedSGD` calls the same function, so a run takes the same steps
with and without ``step_graph``.

The orthogonalised step follows Muon (Jordan et al., 2024), which the fastest CIFAR-10 trainers use
on their convolution filters: the filter's Nesterov momentum, flattened to an ``out x (in*k*k)``
matrix, is replaced by the nearest semi-orthogonal matrix (a few quintic Newton-Schulz
iterations), so every direction of the update moves at the same rate. Here it applies to the
filters with a spatial kernel (3x3), each of which batch normalisation follows in the VGG and
ResNet backbones, so the filter's scale does not change what it computes: the step is taken at a
size relative to the filter's norm (``lr`` is that ratio) and the norm is then restored, in place
of weight decay. Everything else (1x1 projections, attention, classifiers, norms, biases) keeps
plain SGD.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

OPTIMIZERS = ("sgd", "muon")
# Quintic Newton-Schulz coefficients from the Muon write-up: they push every singular value of the
# normalised matrix towards 1 in five iterations (to about 0.7-1.2, which is all the step needs).
NEWTON_SCHULZ_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def orthogonalise(matrix: Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> Tensor:
    """An approximately semi-orthogonal matrix with the row and column spaces of ``matrix``.

    Args:
        matrix: a 2-D tensor, or a stack of matrices (``k x rows x cols``, each done on its own).
        steps: Newton-Schulz iterations.

    Returns:
        A tensor of ``matrix``'s shape and dtype whose singular values are all near 1 (computed in
        bf16, as the iteration tolerates it).
    """
    if matrix.ndim not in (2, 3):
        raise ValueError(f"orthogonalise takes a matrix or a stack of them; got a tensor of shape "
                         f"{tuple(matrix.shape)}")
    a, b, c = NEWTON_SCHULZ_COEFFICIENTS
    x = matrix.to(torch.bfloat16)
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.mT).to(matrix.dtype)


def is_filter(param: Tensor) -> bool:
    """Whether ``param`` is a convolution filter with a spatial kernel (the orthogonalised ones)."""
    return param.ndim == 4 and param.shape[2] * param.shape[3] > 1


def param_groups(model: nn.Module, weight_decay: float, optimizer: str = "sgd",
                 filter_lr: float = 0.0) -> list[dict[str, Any]]:
    """The parameter groups of a run's optimiser.

    Args:
        model: the model.
        weight_decay: L2 weight decay of the SGD weights (conv and linear weights; batch-norm
            scales, shifts and biases are not decayed: decaying them only hurts).
        optimizer: "sgd", or "muon" to give the spatial filters an orthogonalised step.
        filter_lr: with "muon", the filters' step size relative to their norm at the peak of
            the schedule.

    Returns:
        Groups for :class:`OrthogonalisedSGD` (or ``torch.optim.SGD`` for "sgd"); the filters'
        group carries ``orthogonalise=True`` and its own ``lr``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")
    filters, decay, no_decay = [], [], []
    for param in model.parameters():
        if optimizer == "muon" and is_filter(param):
            filters.append(param)
        else:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if filters:
        groups.insert(0, {"params": filters, "weight_decay": 0.0, "orthogonalise": True,
                          "lr": filter_lr})
    return groups


def _momentum_buffers(optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> list[Tensor]:
    buffers = []
    for p in params:
        state = optimizer.state[p]
        if state.get("momentum_buffer") is None:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        buffers.append(state["momentum_buffer"])
    return buffers


def _orthogonalised_step_(params: Sequence[Tensor], directions: Sequence[Tensor],
                          rate: Tensor | float) -> None:
    """Move each filter along its orthogonalised direction by ``rate`` times its norm, then
    restore the norm it had.

    Filters of one shape are done as one stack (a VGG has a few shapes for its 15 filters, a
    ResNet-164 five for its 56): inside a captured step graph every operation is a kernel the GPU
    runs after the last, so a handful of operations per shape instead of a dozen per filter is
    what keeps the update's cost small (``bench/optimizer_step.py``).
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(params):
        by_shape.setdefault(tuple(p.shape), []).append(i)
    for shape, indices in by_shape.items():
        group = [params[i] for i in indices]
        matrices = (len(indices), shape[0], -1)  # each filter as an out x (in*k*k) matrix
        steps = orthogonalise(torch.stack([directions[i] for i in indices]).reshape(matrices))
        current = torch.stack(group).reshape(matrices)
        norms = torch.linalg.vector_norm(current, dim=(1, 2), keepdim=True)
        step_norms = torch.linalg.vector_norm(steps, dim=(1, 2), keepdim=True).clamp_min(1e-12)
        moved = current - steps * (rate * norms / step_norms)
        moved = moved * (norms / torch.linalg.vector_norm(moved, dim=(1, 2), keepdim=True)
                         .clamp_min(1e-12))
        torch._foreach_copy_(group, moved.reshape(len(indices), *shape).unbind(0))


@torch.no_grad()
def sgd_update_(optimizer: torch.optim.Optimizer, rates: Sequence[Tensor | float]) -> None:
    """One step of ``torch.optim.SGD`` (momentum, no dampening, optional Nesterov, L2 weight
    decay) with each group's learning rate read from ``rates``: the same arithmetic as
    ``torch.optim.SGD.step()``, but capturable in a CUDA graph when the rates are device tensors.
    A group with ``orthogonalise=True`` takes the orthogonalised filter step (module docstring)
    on the same Nesterov momentum.

    The momentum buffers are the optimiser's own ``state[p]["momentum_buffer"]``, so its
    ``state_dict`` saves and resumes them as usual. A buffer that does not exist yet starts at
    zero, which gives the first step ``torch.optim.SGD`` takes (the buffer becomes the gradient).
    Parameters without a gradient are skipped, as ``optimizer.step()`` skips them.

    Args:
        optimizer: an SGD optimiser (its ``dampening`` must be 0).
        rates: one learning rate per parameter group (``ltpa.step_graph.learning_rate_tensors``).

    Raises:
        ValueError: the optimiser uses dampening, which this update does not implement.
    """
    for group, rate in zip(optimizer.param_groups, rates):
        if group.get("dampening", 0):
            raise ValueError("sgd_update_ implements SGD without dampening")
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        grads = [p.grad for p in params]
        momentum, decay = group["momentum"], group["weight_decay"]
        if decay:
            grads = torch._foreach_add(grads, params, alpha=decay)
        if momentum:
            buffers = _momentum_buffers(optimizer, params)
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            grads = (torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"]
                     else buffers)
        if group.get("orthogonalise"):
            _orthogonalised_step_(params, grads, rate)
        else:
            torch._foreach_sub_(params, torch._foreach_mul(grads, rate))


class OrthogonalisedSGD(torch.optim.SGD):
    """``torch.optim.SGD`` whose ``orthogonalise=True`` groups take the orthogonalised filter
    step (``optimizer="muon"`` in ``ltpa train``); other groups step exactly as SGD does."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102 - torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sgd_update_(self, [group["lr"] for group in self.param_groups])
        return loss


def build_optimizer(model: nn.Module, optimizer: str, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float, filter_lr: float = 0.0) -> torch.optim.SGD:
    """The optimiser of a run.

    Args:
        model: the model.
        optimizer: "sgd" or "muon" (:func:`param_groups`).
        lr: the SGD groups' peak learning rate.
        momentum: the momentum of every group.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay of the SGD weights.
        filter_lr: with "muon", the filters' relative step size at the peak.

    Returns:
        ``torch.optim.SGD`` for "sgd", :class:`OrthogonalisedSGD` for "muon".
    """
    groups = param_groups(model, weight_decay, optimizer, filter_lr)
    kind = OrthogonalisedSGD if optimizer == "muon" else torch.optim.SGD
    return kind(groups, lr=lr, momentum=momentum, nesterov=nesterov)
