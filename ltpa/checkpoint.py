"""One checkpoint format for every model: constructor arguments, weights and metadata in one file.

The file is a plain dict readable with ``torch.load(weights_only=True)`` (tensors, str, numbers,
lists, dicts only), so loading never executes pickled code. ``precision`` chooses how weights are
stored (fp32, fp16, int8, int4: ``ltpa.quantisation``); loading always gives an fp32 model. int4
files are format version 2, so an ltpa too old to unpack them says so instead of failing on the
packed tensors.

Checkpoints are untrusted input (an uploaded or downloaded file), so reading is defensive:

* the file's size and, for torch's zip format, every member's declared size are checked before
  anything is decompressed or unpickled (a small file must not inflate to gigabytes);
* a file that needs arbitrary Python objects (pickled classes or functions, in the zip or in
  torch's older non-zip format) is refused for safety, naming what it would have imported;
* the model section (registry name, arguments, their ranges) is validated before any model is
  built, and the model is first built on PyTorch's ``meta`` device (no memory) to check that the
  weights fit it; only then is the real model allocated;
* PyTorch's zip reader does not verify the bytes of stored tensors, so the file also carries a
  sha256 of its weights (``state_sha256``), checked on every read (older files still load).

``load_state_file`` reads other torch files of ltpa (a training run's ``state.pt``) with the same
guards.
"""
from __future__ import annotations

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
from typing import Any

import torch
from torch import nn

from ltpa.quantisation import (
    PRECISIONS,
    dequantise_int4,
    dequantise_int8,
    quantise_int4,
    quantise_int8,
    storage_kind,
)
from ltpa.registry import create_model, get_spec, list_models, recorded_defaults
from ltpa.choices import check_choice

FORMAT = "ltpa-checkpoint"
FORMAT_VERSION = 2  # the newest this ltpa reads; files without int4 tensors are still written as 1
# The largest file read at all: a width-4 VGG-att in fp32 with its optimiser state is ~2.5 GB.
MAX_FILE_BYTES = 4 << 30
# The pickle of a checkpoint holds metadata and tensor references only: kilobytes, not megabytes.
MAX_PICKLE_BYTES = 64 << 20
# Zip members beyond the file's own size: torch stores tensors uncompressed, so a member much
# larger than its compressed bytes is a decompression bomb, not a checkpoint.
MAX_INFLATION_BYTES = 64 << 20
# Ranges of model arguments a file may ask for (beyond them a file is a typo or an attack):
# width 4 is ~300M parameters for VGG; ResNet-1001 is the deepest of the ResNet papers.
MAX_WIDTH = 4.0
MAX_NUM_CLASSES = 100_000
MAX_RESNET_DEPTH = 1001
# What torch's weights_only unpickler says when a pickle names a class or function it refuses.
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


class CheckpointError(ValueError):
    """A file that is not a readable ltpa checkpoint."""


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced a checkpoint.

    Returns:
        ``{"python", "torch", "torchvision"}`` as plain strings.
    """
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def git_revision() -> str:
    """The current git commit of the ltpa source tree.

    Returns:
        The commit hash, or ``"unknown"`` outside a git checkout.
    """
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
    """Write a model with its metadata to one checkpoint file (atomically).

    Args:
        path: the file to write (its folder is created).
        model: a model built by ``ltpa.create_model`` (compiled models too).
        meta: plain metadata (str, numbers, lists, dicts): classes, normalisation, input size...
        precision: how weights are stored, one of ``PRECISIONS`` (see ``ltpa.quantisation``).

    Returns:
        ``path``.

    Raises:
        ValueError: an unknown precision, a model not built by ``create_model``, or metadata
            that is not plain data.
    """
    check_choice("precision", precision, PRECISIONS)
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
    """A sha256 over the names, dtypes, shapes and raw bytes of a state dict's tensors.

    Args:
        state: name -> tensor.

    Returns:
        The hex digest (independent of the dict's order).
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _source_name(source: str | Path | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes) else str(source)


def _read_bytes(source: str | Path | bytes, what: str = "checkpoint") -> bytes:
    """The bytes of a file (or the bytes given), refusing a missing or oversized file."""
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"{what} {path} does not exist")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(f"{path} is too large to be an ltpa {what} ({size / 2**30:.1f} GiB; "
                                  f"the limit is {MAX_FILE_BYTES / 2**30:.0f} GiB)")
        data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise CheckpointError(f"{_source_name(source)} is too large to be an ltpa {what}")
    return data


def _check_zip_members(name: str, data: bytes) -> None:
    """Refuse a zip whose members would inflate far beyond the file (checked from the zip
    directory alone, before anything is decompressed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a (readable) zip: torch.load reports it, _explain_load_failure words it
    total = sum(member.file_size for member in members)
    pickles = [m for m in members if m.filename.endswith(".pkl")]
    largest_pickle = max((m.file_size for m in pickles), default=0)
    if largest_pickle > MAX_PICKLE_BYTES or total > len(data) + MAX_INFLATION_BYTES:
        raise CheckpointError(
            f"{name} was refused: its zip members would inflate to {total / 2**20:.0f} MiB from a "
            f"{len(data) / 2**20:.1f} MiB file (pickle {largest_pickle / 2**20:.0f} MiB); an ltpa "
            "checkpoint stores its tensors uncompressed, so this is not one"
        )


def _pickled_globals(data: bytes) -> list[str] | None:
    """Classes/functions a pickle stream would import, or None if the bytes are no complete pickle.

    Read with ``pickletools`` (which only parses, never executes) to say *why* a file is refused.
    torch's older non-zip format is several pickles one after another: all of them are read.
    """
    names: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(data)
    parsed_any = False
    while stream.tell() < len(data):
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]) if len(strings) >= 2 else "<unknown>")
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # truncated, or the raw tensor bytes after the old format's pickles
            break
        parsed_any = True
    return names if parsed_any else None


def _pickle_part(data: bytes) -> bytes:
    """The pickle stream of a file: ``data.pkl`` inside a torch zip file, else the bytes themselves."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            return archive.read(member) if member else b""
    except (zipfile.BadZipFile, OSError, ValueError):
        return data


def _explain_load_failure(name: str, data: bytes, error: Exception) -> str:
    """A one-line reason why ``torch.load(weights_only=True)`` could not read ``data``.

    torch's own message advises retrying with ``weights_only=False``; for an untrusted file that
    is the one thing not to do, so its advice is never repeated."""
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
            "ltpa files hold only tensors and plain data"
        )
    if data[:4] == b"PK\x03\x04" and not zipfile.is_zipfile(io.BytesIO(data)):
        return (
            f"{name} is truncated or damaged: it starts like a PyTorch checkpoint but its zip "
            "directory is missing or unreadable"
        )
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "arbitrary code" not in line]
    # torch's weights_only message opens with generic advice; the actual reason follows this tag.
    tagged = [i for i, line in enumerate(lines) if line.startswith("Please file an issue")]
    detail = lines[tagged[0] + 1] if tagged and tagged[0] + 1 < len(lines) else (lines[0] if lines else "")
    first_line = detail.removeprefix("WeightsUnpickler error:").strip()
    return (
        f"{name} is not a readable PyTorch checkpoint (corrupt, truncated or another format): "
        f"{type(error).__name__}: {first_line}"
    )


def _safe_torch_load(name: str, data: bytes) -> Any:
    """``torch.load(weights_only=True)`` of checked bytes; any failure is a one-line CheckpointError."""
    _check_zip_members(name, data)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # zip/EOF/unpickling errors from torch.load vary by version
        raise CheckpointError(_explain_load_failure(name, data, error)) from None


def load_state_file(path: str | Path) -> dict[str, Any]:
    """Read a torch file of plain data and tensors (e.g. a training run's ``state.pt``) safely.

    Args:
        path: the file.

    Returns:
        Its dict, loaded on the CPU with ``weights_only`` unpickling.

    Raises:
        CheckpointError: a missing, oversized, damaged or unsafe file (pickled objects), or one
            that does not hold a dict; the message is one line.
    """
    name = str(path)
    payload = _safe_torch_load(name, _read_bytes(path, what="state file"))
    if not isinstance(payload, dict):
        raise CheckpointError(f"{name} holds a {type(payload).__name__}, not the dict of an ltpa "
                              "state file")
    return payload


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """Read and validate a checkpoint file (or its bytes) without building the model.

    Args:
        source: a path or the file's bytes.

    Returns:
        The checkpoint dict (format, model, state_dict, meta, ...).

    Raises:
        CheckpointError: the file is missing, unsafe, damaged, not an ltpa checkpoint, or its
            model section asks for a model ltpa will not build.
    """
    name = _source_name(source)
    data = _read_bytes(source)
    payload = _safe_torch_load(name, data)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{name} is a PyTorch file but not an ltpa checkpoint (no format={FORMAT!r} marker); "
            "save models with ltpa.save_checkpoint"
        )
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{name} uses checkpoint format {version!r}; this ltpa reads up to "
            f"{FORMAT_VERSION}: upgrade ltpa"
        )
    for key in ("model", "state_dict", "meta"):
        if key not in payload:
            raise CheckpointError(f"{name} is missing its {key!r} section")
    check_model_section(payload["model"], name)
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise CheckpointError(f"{name} has a malformed 'state_dict' section (expected name -> tensor)")
    if not isinstance(payload["meta"], dict):
        raise CheckpointError(f"{name} has a malformed 'meta' section (expected a dict)")
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


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_model_section(config: Any, name: str = "the checkpoint") -> tuple[str, dict[str, Any]]:
    """Validate a checkpoint's model section before anything is built.

    Args:
        config: the file's ``model`` section, ``{"name": ..., "kwargs": {...}}``.
        name: the file's name, for messages.

    Returns:
        (registry name, keyword arguments for ``create_model``, older files' recorded defaults
        made explicit).

    Raises:
        CheckpointError: an unknown model name, unknown arguments, a non-finite or out-of-range
            width, num_classes or depth, or arguments that are not plain values.
    """
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise CheckpointError(f"{name} has a malformed 'model' section (no model name)")
    registry_name = config["name"]
    if registry_name not in list_models():
        raise CheckpointError(f"{name} describes an unknown model {registry_name[:60]!r}; "
                              f"registered models: {', '.join(list_models())}")
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{name} has a malformed 'model' section (kwargs is not a dict)")
    kwargs = dict(kwargs)
    num_classes = kwargs.pop("num_classes", 10)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
            or not 2 <= num_classes <= MAX_NUM_CLASSES:
        raise CheckpointError(f"{name} asks for num_classes={num_classes!r}; ltpa builds models "
                              f"of 2 to {MAX_NUM_CLASSES} classes")
    accepted = get_spec(registry_name).overridable
    unknown = sorted(str(k) for k in kwargs if k not in accepted)
    if unknown:
        raise CheckpointError(f"{name} passes unknown argument(s) {', '.join(unknown)[:200]} to "
                              f"{registry_name}; it accepts: {', '.join(accepted)}")
    width = kwargs.get("width", 1.0)
    if not _finite_number(width) or not 0 < width <= MAX_WIDTH:
        raise CheckpointError(f"{name} asks for width={width!r}; valid widths are in "
                              f"(0, {MAX_WIDTH:g}]")
    depth = kwargs.get("depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or not 11 <= depth <= MAX_RESNET_DEPTH or (depth - 2) % 9):
        raise CheckpointError(f"{name} asks for depth={depth!r}; valid ResNet depths are 9n+2 "
                              f"from 11 to {MAX_RESNET_DEPTH}")
    for key, value in kwargs.items():
        if not (value is None or isinstance(value, (bool, str)) or _finite_number(value)):
            raise CheckpointError(f"{name} gives {registry_name} argument {key} the value "
                                  f"{str(value)[:60]!r}; expected a finite number, text or true/false")
    return registry_name, {"num_classes": num_classes, **upgrade_model_kwargs(registry_name, kwargs)}


def upgrade_model_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model arguments of older files, made explicit.

    An argument recorded since (see ``ltpa.registry.RECORDED_DEFAULTS``) gets the value such
    files were built with, e.g. the paper's unscaled dot product for ``dp_scale`` and the raw
    residual stream for ``tap_features``.

    Args:
        name: the registry name.
        kwargs: the file's arguments.

    Returns:
        The arguments with every recorded default present.
    """
    return {**recorded_defaults(name, legacy=True), **kwargs}


def _weights_fit(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading into ``model`` (missing, unexpected, wrong shapes)."""
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
    return problems


def _build(registry_name: str, kwargs: dict[str, Any], name: str, device: str | None = None) -> nn.Module:
    try:
        if device == "meta":
            with torch.device("meta"):
                return create_model(registry_name, **kwargs)
        return create_model(registry_name, **kwargs)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{name} describes a model ltpa cannot build: {error}") from None


def load_checkpoint(
    source: str | Path | bytes, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the file alone.

    Args:
        source: a checkpoint path or its bytes.
        device: where the model goes.

    Returns:
        (the fp32 model in eval mode, the file's metadata).

    Raises:
        CheckpointError: see :func:`read_checkpoint`; also weights that do not fit the model the
            file describes (checked on the ``meta`` device, before the real model is allocated).
    """
    name = _source_name(source)
    payload = read_checkpoint(source)
    registry_name, kwargs = check_model_section(payload["model"], name)
    scales = payload.get("int8_scales") or {}
    int4_scales, int4_shapes = payload.get("int4_scales") or {}, payload.get("int4_shapes") or {}
    # Shapes as they will load (int4 weights are packed in the file): checked before unpacking.
    shapes = {key: torch.empty(int4_shapes[key], device="meta") if key in int4_scales else tensor
              for key, tensor in payload["state_dict"].items()}
    problems = _weights_fit(_build(registry_name, kwargs, name, device="meta"), shapes)
    if problems:
        raise CheckpointError(
            f"{name}: weights do not fit model {registry_name!r} "
            f"{payload['model'].get('kwargs', {})}: {'; '.join(problems)}"
        )
    state = {}
    for key, tensor in payload["state_dict"].items():
        if key in scales:
            try:
                tensor = dequantise_int8(tensor, scales[key])
            except RuntimeError as error:
                raise CheckpointError(f"{name}: int8 weight {key} cannot be unpacked: {error}") from None
        elif key in int4_scales:
            try:
                tensor = dequantise_int4(tensor, int4_scales[key], int4_shapes[key])
            except RuntimeError as error:
                raise CheckpointError(f"{name}: int4 weight {key} cannot be unpacked: {error}") from None
        state[key] = tensor.float() if tensor.is_floating_point() else tensor
    model = _build(registry_name, kwargs, name)
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    return model, payload["meta"]


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (used in model cards and view records).

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
