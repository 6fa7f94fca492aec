"""The shipped model zoo: ``assets/models/manifest.json`` lists model cards; files sit beside it.

``LTPA_ZOO`` overrides the folder. Each card records the registry name and configuration, class
names, normalisation, input size, dataset, measured test error, per-class accuracy, parameters,
map sizes, the file's sha256, and how the model was trained.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltpa.checkpoint import file_sha256, load_checkpoint
from ltpa.preprocess import PixelModel

DEFAULT_ZOO_DIR = Path(__file__).resolve().parents[1] / "assets" / "models"
MANIFEST_NAME = "manifest.json"


def zoo_dir() -> Path:
    """The folder holding the manifest and the shipped checkpoints."""
    return Path(os.environ.get("LTPA_ZOO", DEFAULT_ZOO_DIR))


@dataclass(frozen=True)
class ZooEntry:
    """One model card of the manifest."""

    id: str
    card: dict[str, Any]

    @property
    def path(self) -> Path:
        return zoo_dir() / self.card["file"]

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
    """The parsed manifest (an empty zoo when none is there yet)."""
    path = (folder or zoo_dir()) / MANIFEST_NAME
    if not path.is_file():
        return {"models": []}
    return json.loads(path.read_text())


def list_zoo() -> list[ZooEntry]:
    """Every shipped model, in manifest order."""
    return [ZooEntry(card["id"], card) for card in read_manifest()["models"]]


def get_entry(model_id: str) -> ZooEntry:
    """The card of one shipped model, or a ValueError listing those shipped."""
    entries = {e.id: e for e in list_zoo()}
    if model_id not in entries:
        shipped = ", ".join(entries) or "none (the zoo is empty)"
        raise ValueError(f"no shipped model {model_id!r}; shipped models: {shipped}")
    return entries[model_id]


def load_zoo_model(
    model_id: str, device: str | torch.device = "cpu", verify: bool = False
) -> LoadedModel:
    """Load a shipped model in eval mode; ``verify`` checks the file's sha256 against its card."""
    entry = get_entry(model_id)
    if verify and file_sha256(entry.path) != entry.card["sha256"]:
        raise ValueError(f"{entry.path} does not match the sha256 in its model card")
    model, meta = load_checkpoint(entry.path, device=device)
    pixel_model = PixelModel(model, entry.card["mean"], entry.card["std"]).to(device).eval()
    return LoadedModel(entry, pixel_model, meta)
