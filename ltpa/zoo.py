"""The shipped model zoo: ``models/manifest.json`` lists model cards; the files sit beside it.

In a clone the zoo is ``assets/models`` at the top of the repository; in an installed package it
is the package data ``ltpa/_assets/models`` (pyproject.toml maps the top-level ``assets/`` folder
onto ``ltpa._assets``). ``LTPA_ZOO`` overrides the folder. Each card records the registry name and
configuration, class names, normalisation, input size, dataset, measured test error, per-class
accuracy, parameters, map sizes, the file's sha256, and how the model was trained.

A missing or empty zoo, a manifest that cannot be read, or a card naming a missing file is a
:class:`ZooError` that names the folder looked in. :func:`manifest_problems` lists, by card id,
the cards the registry cannot build or whose file or sha256 is missing or malformed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from ltpa.checkpoint import file_sha256, load_checkpoint
from ltpa.design_space import PAPER_NORMALISATION
from ltpa.preprocess import PixelModel
from ltpa.registry import create_model, get_spec

_PACKAGE_DIR = Path(__file__).resolve().parent
# A clone has pyproject.toml beside the package and the assets at the top level; an installed
# package carries them as its package data.
FROM_SOURCE_TREE = (_PACKAGE_DIR.parent / "pyproject.toml").is_file()
ASSETS_DIR = _PACKAGE_DIR.parent / "assets" if FROM_SOURCE_TREE else _PACKAGE_DIR / "_assets"
DEFAULT_ZOO_DIR = ASSETS_DIR / "models"
MANIFEST_NAME = "manifest.json"
ZOO_ENV = "LTPA_ZOO"
# Top-1 CIFAR-10 test errors (%) reported by Jetley et al. (ICLR 2018), by registry name. They are
# for the paper's softmax-normalised models: look them up with paper_cifar10_error, which knows
# that a card deviating from the paper's normalisation has no figure here.
PAPER_CIFAR10_ERROR = {
    "vgg": 7.77, "vgg_gap": 9.87, "vgg_att2_concat_pc": 5.23, "vgg_att3_concat_pc": 6.34,
    "resnet164": 5.46,
}


def paper_cifar10_error(registry_name: str, kwargs: Any = None) -> float | None:
    """The paper's CIFAR-10 test error for a model, when the paper reports one for it.

    Args:
        registry_name: the model's registry name (a card's ``registry_name``).
        kwargs: its model arguments (a card's ``kwargs``); a ``normalisation`` other than the
            paper's softmax makes it a deviation from the paper's model.

    Returns:
        The figure from :data:`PAPER_CIFAR10_ERROR`, or None for a model the paper does not report
        or a deviation from it (the paper's figure is not for that model, so nothing may be
        compared with it).
    """
    # A card's kwargs that are not a mapping are reported by build_problem, not here.
    normalisation = kwargs.get("normalisation", PAPER_NORMALISATION) if isinstance(kwargs, dict) \
        else PAPER_NORMALISATION
    return PAPER_CIFAR10_ERROR.get(registry_name) if normalisation == PAPER_NORMALISATION else None


class ZooError(ValueError):
    """The zoo is missing or empty, its manifest cannot be read, or a card names a missing file."""


def zoo_dir() -> Path:
    """The folder holding the manifest and the shipped checkpoints.

    Returns:
        ``$LTPA_ZOO`` when set, else the shipped zoo (source tree or installed package).
    """
    return Path(os.environ.get(ZOO_ENV) or DEFAULT_ZOO_DIR)


@contextlib.contextmanager
def using_zoo(folder: Path) -> Iterator[Path]:
    """Within the block, :func:`zoo_dir` (and every loader of shipped ids) reads ``folder``;
    ``$LTPA_ZOO`` is restored on exit.

    Args:
        folder: the zoo folder to use.

    Returns:
        A context manager yielding ``folder``.
    """
    previous = os.environ.get(ZOO_ENV)
    os.environ[ZOO_ENV] = str(folder)
    try:
        yield Path(folder)
    finally:
        if previous is None:
            os.environ.pop(ZOO_ENV, None)
        else:
            os.environ[ZOO_ENV] = previous


def _where(folder: Path) -> str:
    """``folder`` and how it was chosen, for error messages."""
    if os.environ.get(ZOO_ENV) and folder == zoo_dir():
        return f"{folder} (set by {ZOO_ENV})"
    if folder == DEFAULT_ZOO_DIR:
        source = "the source tree" if FROM_SOURCE_TREE else "the installed package"
        return f"{folder} (the shipped zoo, from {source}; {ZOO_ENV} picks another folder)"
    return str(folder)


@dataclass(frozen=True)
class ZooEntry:
    """One model card of the manifest."""

    id: str
    card: dict[str, Any]

    @property
    def path(self) -> Path:
        """The checkpoint file the card names (it may be missing: see :func:`load_zoo_model`)."""
        return zoo_dir() / str(self.card.get("file", ""))

    @property
    def registry_name(self) -> str:
        return self.card["registry_name"]

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])


@dataclass
class LoadedModel:
    """A zoo model ready for inference: a pixel-space model plus its card and checkpoint metadata."""

    entry: ZooEntry
    model: PixelModel
    meta: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return self.entry.class_names

    @property
    def input_size(self) -> int:
        return int(self.entry.card["input_size"])


def read_manifest(folder: Path | None = None) -> dict[str, Any]:
    """The parsed manifest of a zoo folder.

    Args:
        folder: the zoo folder (default: :func:`zoo_dir`).

    Returns:
        The manifest: ``{"models": [card, ...]}``, at least one card, each with an ``id``.

    Raises:
        ZooError: naming the folder when the manifest is missing, unreadable, malformed or
            lists no models.
    """
    folder = Path(folder or zoo_dir())
    path = folder / MANIFEST_NAME
    if not path.is_file():
        problem = "the folder does not exist" if not folder.is_dir() else f"it has no {MANIFEST_NAME}"
        raise ZooError(f"no model zoo at {_where(folder)}: {problem}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ZooError(f"cannot read the zoo manifest {path}: {error}") from None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, list) or not all(
            isinstance(card, dict) and isinstance(card.get("id"), str) for card in models):
        raise ZooError(f"{path} is not a zoo manifest: it needs a \"models\" list of cards, "
                       f"each with an \"id\"")
    if not models:
        raise ZooError(f"the model zoo at {_where(folder)} is empty: {path} lists no models")
    return manifest


def list_zoo() -> list[ZooEntry]:
    """Every shipped model, in manifest order.

    Returns:
        The entries (never empty).

    Raises:
        ZooError: when the zoo is missing, empty or its manifest cannot be read.
    """
    return [ZooEntry(card["id"], card) for card in read_manifest()["models"]]


_SHA256 = re.compile(r"[0-9a-f]{64}")


def build_problem(card: dict[str, Any]) -> str | None:
    """Why the registry cannot build the model a card describes, or None when it can.

    The model is built on the meta device (no memory, no weights), so this is cheap.

    Args:
        card: a manifest card.

    Returns:
        One line naming what is wrong (without the card id), or None.
    """
    name = card.get("registry_name")
    if not isinstance(name, str) or not name:
        return "it has no registry_name"
    try:
        get_spec(name)
    except ValueError as error:
        return f"its registry_name: {error}"
    kwargs = card.get("kwargs", {})
    if not isinstance(kwargs, dict):
        return f"its kwargs must be a mapping of arguments, not {kwargs!r}"
    try:
        with torch.device("meta"):
            create_model(name, **kwargs)
    except (TypeError, ValueError) as error:
        return f"the registry cannot build {name!r} with kwargs {kwargs!r}: {error}"
    return None


def manifest_problems(folder: Path | None = None) -> list[str]:
    """What is wrong with the cards of a zoo manifest, one line per problem.

    Checked for every card: the registry knows its ``registry_name`` and can build it with its
    ``kwargs`` (see :func:`build_problem`), its ``file`` exists in the zoo folder, and its
    ``sha256`` is 64 lowercase hex digits. A card may have several problems, except that an
    unbuildable model is reported once (an unknown name is not also reported as bad kwargs).

    Args:
        folder: the zoo folder (default: :func:`zoo_dir`).

    Returns:
        Messages of the form ``zoo card 'ID': what is wrong``, in manifest order; empty when
        every card is sound.

    Raises:
        ZooError: when the manifest itself is missing, unreadable or empty
            (see :func:`read_manifest`).
    """
    folder = Path(folder or zoo_dir())
    problems = []
    for card in read_manifest(folder)["models"]:
        where = f"zoo card {card['id']!r}"
        built = build_problem(card)
        if built:
            problems.append(f"{where}: {built}")
        file = card.get("file")
        if not isinstance(file, str) or not file:
            problems.append(f"{where}: it names no file")
        elif not (folder / file).is_file():
            problems.append(f"{where}: its file {file!r} does not exist in {folder}")
        sha256 = card.get("sha256")
        if sha256 is None:
            problems.append(f"{where}: it has no sha256")
        elif not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            problems.append(f"{where}: its sha256 {sha256!r} is not 64 lowercase hex digits")
    return problems


def get_entry(model_id: str) -> ZooEntry:
    """The card of one shipped model.

    Args:
        model_id: a zoo id (see ``ltpa models`` or the manifest).

    Returns:
        Its entry.

    Raises:
        ZooError: when the zoo is missing or empty.
        ValueError: for an id the zoo does not ship, listing those it does.
    """
    entries = {e.id: e for e in list_zoo()}
    if model_id not in entries:
        raise ValueError(f"no shipped model {model_id!r}; shipped models: {', '.join(entries)}")
    return entries[model_id]


def load_zoo_model(
    model_id: str, device: str | torch.device = "cpu", verify: bool = False
) -> LoadedModel:
    """Load a shipped model in eval mode.

    Args:
        model_id: a zoo id.
        device: where the model goes.
        verify: also check the file's sha256 against its card.

    Returns:
        The pixel-space model with its card and checkpoint metadata.

    Raises:
        ZooError: when the zoo is missing or empty, or the card names a file that is not there.
        ValueError: for an unknown id or a file that does not match its card.
    """
    entry = get_entry(model_id)
    if not entry.card.get("file") or not entry.path.is_file():
        raise ZooError(f"{zoo_dir() / MANIFEST_NAME} names {entry.card.get('file')!r} for "
                       f"{model_id}, but there is no such file in {zoo_dir()}")
    if verify and file_sha256(entry.path) != entry.card["sha256"]:
        raise ValueError(f"{entry.path} does not match the sha256 in its model card")
    model, meta = load_checkpoint(entry.path, device=device)
    pixel_model = PixelModel(model, entry.card["mean"], entry.card["std"]).to(device).eval()
    return LoadedModel(entry, pixel_model, meta)


def describe_model(model: torch.nn.Module, input_size: int = 32) -> dict[str, Any]:
    """Parameters, stage names and map sizes of a model (one dummy forward).

    Args:
        model: a registry model, or a wrapper holding one as ``.model``.
        input_size: side of the square dummy input.

    Returns:
        ``params``, ``stages`` and ``map_sizes`` (one ``[h, w]`` per stage).
    """
    inner = getattr(model, "model", model)
    was_training = inner.training
    inner.eval()
    device = next(inner.parameters()).device
    with torch.no_grad():
        out = inner(torch.zeros(1, 3, input_size, input_size, device=device))
    inner.train(was_training)
    return {
        "params": sum(p.numel() for p in inner.parameters()),
        "stages": list(out.stages),
        "map_sizes": [list(m.shape[-2:]) for m in out.maps],
    }


def make_card(
    model_id: str,
    checkpoint_path: Path,
    meta: dict[str, Any],
    model: torch.nn.Module,
    **extra: Any,
) -> dict[str, Any]:
    """A model card for a checkpoint file that sits in the zoo folder.

    Args:
        model_id: the card's id.
        checkpoint_path: the file (its name and sha256 go in the card).
        meta: the checkpoint's metadata (class names, mean/std, input size, dataset, training).
        model: the model the file holds.
        **extra: fields to add or override (e.g. measured ``test_error``, ``per_class_accuracy``).

    Returns:
        The card.
    """
    config = getattr(model, "ltpa_config", None) or getattr(model, "model").ltpa_config
    input_size = int(meta.get("input_size", 32))
    card = {
        "id": model_id,
        "file": Path(checkpoint_path).name,
        "registry_name": config["name"],
        "kwargs": config["kwargs"],
        "class_names": meta["class_names"],
        "mean": meta["mean"],
        "std": meta["std"],
        "input_size": input_size,
        "dataset": meta.get("dataset", ""),
        "sha256": file_sha256(checkpoint_path),
        "training": meta.get("training", {}),
        **describe_model(model, input_size),
    }
    card.update(extra)
    return card


def write_manifest(cards: list[dict[str, Any]], folder: Path | None = None) -> Path:
    """Write the manifest listing ``cards`` (replacing any previous one).

    Args:
        cards: the model cards, in manifest order.
        folder: the zoo folder (default: :func:`zoo_dir`).

    Returns:
        The manifest's path.
    """
    path = (folder or zoo_dir()) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": cards}, indent=2) + "\n")
    return path
