"""Pick the compute device: CUDA, then Apple MPS, then CPU, unless told otherwise."""
from __future__ import annotations

import os

import torch


def get_device(preferred: str | None = None) -> torch.device:
    """The device to run on: CUDA, then Apple MPS, then CPU, unless told otherwise.

    Args:
        preferred: ``"auto"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"cpu"`` (default: the
            ``LTPA_DEVICE`` environment variable, else auto).

    Returns:
        The torch device.

    Raises:
        ValueError: an unknown device name.
        RuntimeError: an accelerator that is not available here.
    """
    choice = (preferred or os.environ.get("LTPA_DEVICE") or "auto").strip().lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError:
        device = None
    # torch.device also accepts types ltpa cannot compute on (meta, xla, ...): refuse them here.
    if device is None or device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"unknown device {choice!r}; use auto, cuda, cuda:N, mps or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("a CUDA device was requested but no CUDA GPU is available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"CUDA device {device.index} was requested but only {torch.cuda.device_count()} "
            "GPU(s) are available here"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("an MPS device was requested but MPS is not available here")
    return device
