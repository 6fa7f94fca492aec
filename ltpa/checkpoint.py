"""One checkpoint format for every model: constructor arguments, weights and metadata in one file.

The file is a plain dict readable with ``torch.load(weights_only=True)`` (tensors, str, numbers,
lists, dicts only), so loading never executes pickled code: a file that needs arbitrary objects
is refused. ``precision="fp16"`` stores floating weights in half precision to halve the file;
``precision="int8"`` stores conv/linear weights as int8 with one fp32 scale per output channel
(symmetric, round-to-nearest) and the rest in fp16, a quarter of fp32. ``precision="int4"``
stores them as 4-bit integers, two per byte, with one fp16 scale per group of 32 consecutive
weights of an output channel (4.5 bits a weight, about a seventh of fp32): finer scales than
int8's per-channel ones, because 15 levels shared by a whole channel lose too much, each chosen
to minimise the group's rounding error. Models meant for int4 are best trained for it
(``ltpa train --qat int4``: :func:`round_weights_to_storage`). Batch-norm
statistics always stay fp32. Loading always gives an fp32 model. int4 files are format version 2,
so an ltpa too old to unpack them says so instead of failing on the packed tensors.

PyTorch's zip reader does not verify the bytes of stored tensors, so a damaged file would load
silently with wrong weights: the file also carries a sha256 of its weights (``state_sha256``),
checked on every read (files written before it existed still load).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import pickle
import pickletools
import platform
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ltpa.registry import create_model, recorded_defaults

FORMAT = "ltpa-checkpoint"
FORMAT_VERSION = 2  # the newest this ltpa reads; files without int4 tensors are still written as 1
PRECISIONS = ("fp32", "fp16", "int8", "int4")
INT4_GROUP = 32
# Clipping ratios tried for each int4 group's scale (see _int4_levels).
INT4_CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6)
# Smallest normal fp16: int4 scales are stored in fp16 and must not underflow to zero.
_FP16_TINY = 2.0 ** -14
# Buffers kept in fp32 under fp16 storage: batch-norm statistics lose too much in half precision.
_KEEP_FP32_SUFFIXES = ("running_mean", "running_var")
# What torch's weights_only unpickler says when a pickle names a class or function it refuses.
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


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


def quantise_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 quantisation: returns (int8 weight, fp32 scales)."""
    flat = weight.float().reshape(weight.shape[0], -1)
    scale = (flat.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    quantised = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return quantised.reshape(weight.shape), scale


def dequantise_int8(quantised: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`quantise_int8` (up to rounding)."""
    shape = (-1,) + (1,) * (quantised.ndim - 1)
    return quantised.float() * scale.float().reshape(shape)


@functools.cache
def _clip_ratios(device: torch.device) -> torch.Tensor:
    # Cached per device: a fresh host-to-GPU copy at every training step would stall the GPU.
    return torch.tensor(INT4_CLIP_RATIOS, device=device)[:, None, None]


def _int4_levels(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-wise int4 levels (-7..7, as floats, out x groups x group) and their fp16 scales.

    Each group's scale is the one, among its absolute maximum times each of ``INT4_CLIP_RATIOS``,
    whose rounded weights are closest to the originals (least squared error): clipping a few
    outliers shrinks the step for all the other weights of the group."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    flat = torch.nn.functional.pad(flat, (0, (-flat.shape[1]) % group))
    groups = flat.view(flat.shape[0], -1, group)
    # All candidate scales at once (ratio x out x groups): a few large kernels, not a loop of
    # small ones, since quantisation-aware training calls this for every weight at every step.
    ratios = _clip_ratios(flat.device)
    scales = (groups.abs().amax(dim=2) * ratios / 7.0).clamp_min(_FP16_TINY).half().float()
    levels = torch.round(groups / scales[..., None]).clamp_(-7, 7)
    error = (levels * scales[..., None] - groups).square().sum(dim=3)
    best = error.argmin(dim=0, keepdim=True)  # the first (largest) ratio wins ties
    levels = levels.gather(0, best[..., None].expand(1, *levels.shape[1:]))[0]
    return levels, scales.gather(0, best)[0].half()


def quantise_int4(
    weight: torch.Tensor, group: int = INT4_GROUP
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise int4 quantisation of a weight with at least 2 dims.

    Each output channel's weights, flattened and zero-padded to a multiple of ``group``, are split
    into groups of ``group`` that share one fp16 scale (chosen as in :func:`_int4_levels`); values
    -7..7 are stored offset by 8, two per byte (low nibble first). Returns (packed uint8 of shape
    out x padded/2, fp16 scales of shape out x groups)."""
    levels, scale = _int4_levels(weight, group)
    levels = (levels + 8).to(torch.uint8).view(levels.shape[0], -1)
    return levels[:, 0::2] | (levels[:, 1::2] << 4), scale


def dequantise_int4(
    packed: torch.Tensor, scale: torch.Tensor, shape: list[int] | tuple[int, ...]
) -> torch.Tensor:
    """Inverse of :func:`quantise_int4` (up to rounding): an fp32 tensor of ``shape``."""
    low = (packed & 0x0F).to(torch.int16) - 8
    high = (packed >> 4).to(torch.int16) - 8
    levels = torch.stack((low, high), dim=2).view(packed.shape[0], scale.shape[1], -1)
    return _int4_values(levels.float(), scale, shape)


def _int4_values(levels: torch.Tensor, scale: torch.Tensor,
                 shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Levels (out x groups x group) times their group's scale, unpadded to ``shape`` (fp32)."""
    flat = (levels * scale.float()[..., None]).view(levels.shape[0], -1)
    return flat[:, :math.prod(shape[1:])].reshape(tuple(shape))


def storage_kind(key: str, tensor: torch.Tensor, precision: str) -> str:
    """How :func:`save_checkpoint` stores one state-dict entry under ``precision``:
    ``"int8"``/``"int4"`` (conv/linear weights), ``"fp16"`` or ``"fp32"`` (integers, batch-norm
    statistics, and everything under fp32)."""
    if precision == "fp32" or not tensor.is_floating_point() or key.endswith(_KEEP_FP32_SUFFIXES):
        return "fp32"
    if precision in ("int8", "int4") and tensor.ndim >= 2:
        return precision
    return "fp16"


@torch.no_grad()
def stored_value(tensor: torch.Tensor, kind: str) -> torch.Tensor:
    """``tensor`` as it reads back after being stored as ``kind`` (same dtype and device)."""
    if kind == "int8":
        quantised, scale = quantise_int8(tensor)
        restored = dequantise_int8(quantised, scale)
    elif kind == "int4":
        restored = _int4_values(*_int4_levels(tensor, INT4_GROUP), tensor.shape)
    elif kind == "fp16":
        restored = tensor.half()
    else:
        return tensor
    return restored.to(tensor.dtype)


@torch.no_grad()
def round_weights_to_storage(model: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """Overwrite, in place, every parameter that ``precision`` stores in less than fp32 with the
    value it reads back as; returns the originals (name -> copy) for :func:`restore_weights`.

    Quantisation-aware training rounds before each forward pass and restores before the optimiser
    step, so the gradient is taken at the stored weights (straight-through estimate) while the
    full-precision weights keep accumulating small updates."""
    originals = {}
    for name, param in model.named_parameters():
        kind = storage_kind(name, param, precision)
        if kind != "fp32":
            originals[name] = param.detach().clone()
            param.copy_(stored_value(param, kind))
    return originals


@torch.no_grad()
def restore_weights(model: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    """Undo :func:`round_weights_to_storage`."""
    for name, param in model.named_parameters():
        if name in originals:
            param.copy_(originals[name])


@contextlib.contextmanager
def storage_rounded_weights(model: nn.Module, precision: str | None) -> Iterator[None]:
    """Within the block, ``model`` runs on its weights as ``precision`` storage rounds them
    (nothing changes when ``precision`` is empty or None); the originals come back on exit."""
    originals = round_weights_to_storage(model, precision) if precision else None
    try:
        yield
    finally:
        if originals is not None:
            restore_weights(model, originals)


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
    state, scales, int4_scales, int4_shapes = {}, {}, {}, {}
    for key, tensor in model.state_dict().items():
        key = key.removeprefix("_orig_mod.")
        tensor = tensor.detach().to("cpu").clone()
        kind = storage_kind(key, tensor, precision)
        if kind == "int8":
            tensor, scales[key] = quantise_int8(tensor)
        elif kind == "int4":
            int4_shapes[key] = list(tensor.shape)
            tensor, int4_scales[key] = quantise_int4(tensor)
        elif kind == "fp16":
            tensor = tensor.half()
        state[key] = tensor.contiguous()
    payload = {
        "format": FORMAT,
        "format_version": 2 if int4_scales else 1,
        "model": _plain(config, "model"),
        "precision": precision,
        "state_dict": state,
        "state_sha256": state_digest(state),
        "int8_scales": scales,
        "int8_scales_sha256": state_digest(scales),
        **({"int4_scales": int4_scales, "int4_scales_sha256": state_digest(int4_scales),
            "int4_shapes": int4_shapes} if int4_scales else {}),
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


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A sha256 over the names, dtypes, shapes and raw bytes of a state dict's tensors."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _pickled_globals(data: bytes) -> list[str] | None:
    """Classes/functions a pickle stream would import, or None if the bytes are no complete pickle.

    Read with ``pickletools`` (which only parses, never executes) to say *why* a file is refused.
    """
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                names.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # truncated or not a pickle at all
        return None
    return names


def _pickle_part(data: bytes) -> bytes:
    """The pickle stream of a file: ``data.pkl`` inside a torch zip file, else the bytes themselves."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return archive.read(member) if member else b""
    except (zipfile.BadZipFile, OSError, ValueError):
        return data


def _explain_load_failure(name: str, data: bytes, error: Exception) -> str:
    """A one-line reason why ``torch.load(weights_only=True)`` could not read ``data``."""
    if not data:
        return f"{name} is empty (0 bytes): not a checkpoint"
    refused = _REFUSED_GLOBAL.search(str(error))
    unsafe = [refused.group(1)] if refused else None
    if unsafe is None and isinstance(error, pickle.UnpicklingError):
        found = _pickled_globals(_pickle_part(data)) or []
        unsafe = [g for g in found if not g.startswith(("torch.", "collections.OrderedDict"))]
    if unsafe:
        return (
            f"{name} was refused for safety: it contains pickled Python objects "
            f"({', '.join(sorted(set(unsafe)))}) that could run arbitrary code when loaded; "
            "ltpa checkpoints hold only tensors and plain data (weights_only loading)"
        )
    if data[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(io.BytesIO(data)):
        return (
            f"{name} is truncated or damaged: it starts like a PyTorch checkpoint but its zip "
            "directory is missing or unreadable"
        )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # torch's weights_only message opens with generic advice; the actual reason follows this tag.
    tagged = [i for i, line in enumerate(lines) if line.startswith("Please file an issue")]
    detail = lines[tagged[0] + 1] if tagged and tagged[0] + 1 < len(lines) else (lines[0] if lines else "")
    first_line = detail.removeprefix("WeightsUnpickler error:").strip()
    return (
        f"{name} is not a readable PyTorch checkpoint (corrupt, truncated or another format): "
        f"{type(error).__name__}: {first_line}"
    )


def _source_name(source: str | Path | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """Read and validate a checkpoint file (or its bytes) without building the model."""
    name = _source_name(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise CheckpointError(f"checkpoint {name} does not exist")
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # zip/EOF/unpickling errors from torch.load vary by version
        raise CheckpointError(_explain_load_failure(name, data, error)) from None
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
    if not isinstance(payload["model"], dict) or not isinstance(payload["model"].get("name"), str):
        raise CheckpointError(f"{name} has a malformed 'model' section (no model name)")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{name} has a malformed 'state_dict' section (expected name -> tensor)")
    scales = payload.get("int8_scales") or {}
    if not isinstance(scales, dict) or not all(isinstance(t, torch.Tensor) for t in scales.values()):
        raise CheckpointError(f"{name} has a malformed 'int8_scales' section (expected name -> tensor)")
    int4_scales = payload.get("int4_scales") or {}
    if not _int4_section_is_wellformed(int4_scales, payload.get("int4_shapes") or {}, state):
        raise CheckpointError(
            f"{name} has a malformed int4 section "
            "(scales and shapes must name the same packed weights)"
        )
    # Digests are checked when present (files written before they existed still load).
    for what, tensors, digest_key in (("weights", state, "state_sha256"),
                                      ("int8 scales", scales, "int8_scales_sha256"),
                                      ("int4 scales", int4_scales, "int4_scales_sha256")):
        expected_digest = payload.get(digest_key)
        if expected_digest is not None and state_digest(tensors) != expected_digest:
            raise CheckpointError(
                f"{name} is corrupt: its {what} do not match the sha256 stored when it was saved "
                "(the file was damaged or edited after saving)"
            )
    return payload


def _int4_section_is_wellformed(scales: Any, shapes: Any, state: dict[str, torch.Tensor]) -> bool:
    """Whether int4 scales (name -> tensor) and shapes (name -> list of >= 2 positive ints)
    describe the same weights, all of them present in the state dict."""
    if not isinstance(scales, dict) or not isinstance(shapes, dict):
        return False
    if set(scales) != set(shapes) or not set(scales) <= set(state):
        return False
    if not all(isinstance(t, torch.Tensor) for t in scales.values()):
        return False
    return all(isinstance(shape, list) and len(shape) >= 2
               and all(isinstance(d, int) and d > 0 for d in shape) for shape in shapes.values())


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def upgrade_model_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model arguments of older files, made explicit: an argument recorded since (see
    ``ltpa.registry.RECORDED_DEFAULTS``) gets the value such files were built with, e.g. the
    paper's unscaled dot product for ``dp_scale`` and the raw residual stream for
    ``tap_features``."""
    return {**recorded_defaults(name, legacy=True), **kwargs}


def load_checkpoint(
    source: str | Path | bytes, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the file alone; returns ``(model in eval mode, metadata)``."""
    name = _source_name(source)
    payload = read_checkpoint(source)
    config = payload["model"]
    try:
        kwargs = upgrade_model_kwargs(config["name"], config.get("kwargs", {}))
        model = create_model(config["name"], **kwargs)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{name} describes a model ltpa cannot build: {error}") from None
    scales = payload.get("int8_scales") or {}
    int4_scales, int4_shapes = payload.get("int4_scales") or {}, payload.get("int4_shapes") or {}
    state = {}
    for key, tensor in payload["state_dict"].items():
        if key in scales:
            tensor = dequantise_int8(tensor, scales[key])
        elif key in int4_scales:
            try:
                tensor = dequantise_int4(tensor, int4_scales[key], int4_shapes[key])
            except RuntimeError as error:
                raise CheckpointError(f"{name}: int4 weight {key} cannot be unpacked: {error}") from None
        state[key] = tensor.float() if tensor.is_floating_point() else tensor
    # Name the offending tensors: load_state_dict's own message is many lines long.
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} (model expects {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_few(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of the wrong shape: {_few(mismatched, 3)}")
    if problems:
        raise CheckpointError(
            f"{name}: weights do not fit model {config['name']!r} "
            f"{config.get('kwargs', {})}: {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    return model, payload["meta"]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (used in model cards and view records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
