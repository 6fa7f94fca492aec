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
# Top-1 CIFAR-10 test errors (%) reported by Jetley et al. (ICLR 2018), by registry name.
PAPER_CIFAR10_ERROR = {
    "vgg": 7.77, "vgg_gap": 9.87, "vgg_att2_concat_pc": 5.23, "vgg_att3_concat_pc": 6.34,
    "resnet164": 5.46,
}


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


def describe_model(model: torch.nn.Module, input_size: int = 32) -> dict[str, Any]:
    """Parameters, stage names and map sizes of a model at ``input_size`` (one dummy forward)."""
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

    ``meta`` is the checkpoint's metadata (class names, mean/std, input size, dataset, training);
    ``extra`` adds or overrides fields (e.g. measured ``test_error``, ``per_class_accuracy``).
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
    """Write the manifest listing ``cards`` (replacing any previous one)."""
    path = (folder or zoo_dir()) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"models": cards}, indent=2) + "\n")
    return path
