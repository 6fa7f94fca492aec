"""Zoo folders of untrained small models, for tests that need a manifest and real files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import ltpa
from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from ltpa.zoo import make_card, write_manifest


def write_untrained_zoo(folder: Path, models: dict[str, tuple[str, dict[str, Any]]]) -> Path:
    """Save one untrained model per ``{zoo id: (registry name, model arguments)}`` in ``folder``
    with its card, and the manifest listing them in that order (seeded, so the files repeat)."""
    torch.manual_seed(0)
    meta = {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": 32, "dataset": "untrained test fixture"}
    cards = []
    for model_id, (name, overrides) in models.items():
        model = ltpa.create_model(name, **overrides).eval()
        path = ltpa.save_checkpoint(folder / f"{model_id}.pt", model, meta)
        cards.append(make_card(model_id, path, meta, model, test_error=None))
    write_manifest(cards, folder)
    return folder
