"""One checkpoint format for every model: constructor arguments, weights and metadata in one file.

The file is a plain dict readable with ``torch.load(weights_only=True)`` (tensors, str, numbers,
lists, dicts only), so loading never executes pickled code: a file that needs arbitrary objects
is refused. ``precision="fp16"`` stores floating weights in half precision to halve the file
(batch-norm statistics stay fp32); loading always gives an fp32 model.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ltpa.registry import create_model

FORMAT = "ltpa-checkpoint"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16")
# Buffers kept in fp32 under fp16 storage: batch-norm statistics lose too much in half precision.
_KEEP_FP32_SUFFIXES = ("running_mean", "running_var")


class CheckpointError(ValueError):
    """A file that is not a readable ltpa checkpoint."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced a checkpoint (plain strings)."""
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def git_revision() -> str:
    """The current git commit of the ltpa source tree, or ``"unknown"``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _plain(value: Any, where: str) -> Any:
    """Check that metadata holds only types ``weights_only`` loading accepts; tuples become lists."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(
        f"checkpoint metadata {where} has type {type(value).__name__}; use str, numbers, "
        "lists or dicts so the file loads with weights_only=True"
    )


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None, precision: str = "fp32"
) -> Path:
    """Write ``model`` (built by ``create_model``) with ``meta`` to ``path``; returns the path."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid choices: {', '.join(PRECISIONS)}")
    config = getattr(model, "ltpa_config", None)
    if config is None:
        model = getattr(model, "_orig_mod", model)
        config = getattr(model, "ltpa_config", None)
    if config is None:
        raise ValueError("model was not built by ltpa.create_model, so it cannot be rebuilt from a file")
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.removeprefix("_orig_mod.")
        tensor = tensor.detach().to("cpu").clone()
        if precision == "fp16" and tensor.is_floating_point() and not key.endswith(_KEEP_FP32_SUFFIXES):
            tensor = tensor.half()
        state[key] = tensor.contiguous()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": _plain(config, "model"),
        "precision": precision,
        "state_dict": state,
        "meta": _plain(
            {"library_versions": library_versions(), "git_revision": git_revision(), **(meta or {})},
            "meta",
        ),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint
    return path


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """Read and validate a checkpoint file (or its bytes) without building the model."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"checkpoint {name} does not exist")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        payload = torch.load(stream, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{name} holds objects other than tensors and plain data and was refused for safety "
            f"(weights_only loading): {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # zip/EOF/format errors from torch.load vary by version
        raise CheckpointError(
            f"{name} is not a readable PyTorch checkpoint (corrupt or another format): "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{name} is a PyTorch file but not an ltpa checkpoint (no format={FORMAT!r} marker); "
            "save models with ltpa.save_checkpoint"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} uses checkpoint format {payload['format_version']}; this ltpa reads up to "
            f"{FORMAT_VERSION}: upgrade ltpa"
        )
    for key in ("model", "state_dict", "meta"):
        if key not in payload:
            raise CheckpointError(f"{name} is missing its {key!r} section")
    return payload


def load_checkpoint(
    source: str | Path | bytes, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the file alone; returns ``(model in eval mode, metadata)``."""
    payload = read_checkpoint(source)
    config = payload["model"]
    try:
        model = create_model(config["name"], **config.get("kwargs", {}))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint describes a model ltpa cannot build: {error}") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint weights do not fit model {config['name']!r}: {str(error).splitlines()[0]}"
        ) from None
    model.eval().to(device)
    return model, payload["meta"]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (used in model cards and view records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
