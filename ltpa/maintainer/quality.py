"""Attention quality on the zoo's cards: how well each shipped model's maps find the object.

A card's ``attention_quality`` holds, for each of its attention stages (and their combination),
the mean Jaccard index of its masks under every mask rule at the rule's fixed threshold and the
pointing game, measured on a folder of images with ground-truth masks (the project measures the
328 Weizmann horses, GUIDE.md's data). Baselines carry their post-hoc map instead (CAM on a GAP
model, Grad-CAM on a plain one), and every section repeats the centre prior scored on the same
images, the floor a map must beat. The per-stage test-set entropy is the card's
``attention_entropy``, measured when the file was shipped.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltpa.maintainer.shipping import CARDS_DIR
from ltpa.registry import get_spec
from ltpa.report import markdown_table
from ltpa.segmentation import METHOD_LABELS, SegmentationResult, evaluate_folders, scores_by_map
from ltpa.zoo import read_manifest, using_zoo, write_manifest

QUALITY_KEY = "attention_quality"
HORSES = ("the 328 Weizmann horses (images and figure-ground masks, resized and JPEG-encoded "
          "for the device machine), maps upsampled bilinearly to each mask")


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {"pointing": round(float(entry["pointing_game"]), 4),
            "jaccard": {rule: round(float(value), 4) for rule, value in entry["jaccard"].items()}}


def quality_sections(scores: dict[str, dict[str, Any]], dataset: str,
                     thresholds: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One card section per scored model, from ``ltpa.segmentation.scores_by_map``.

    Args:
        scores: the headline numbers per map source (attention stages, CAM, Grad-CAM and the
            centre prior).
        dataset: what the images are (recorded in each section).
        thresholds: each rule's fixed threshold (recorded, so the numbers can be reproduced).

    Returns:
        ``{model id: {"dataset", "images", "thresholds", "maps": {stage or method: {"pointing",
        "jaccard": {rule: mean}}}, "centre_prior": {...}}}``.

    Raises:
        ValueError: the scores hold no centre prior (a section without its floor misleads).
    """
    centre = next((entry for entry in scores.values() if entry["method"] == "centre_prior"), None)
    if centre is None:
        raise ValueError("attention quality needs the centre prior scored on the same images")
    sections: dict[str, dict[str, Any]] = {}
    for entry in scores.values():
        if entry["method"] == "centre_prior":
            continue
        section = sections.setdefault(entry["model"], {
            "dataset": dataset, "images": int(entry["images"]), "thresholds": dict(thresholds),
            "maps": {}, "centre_prior": _rounded(centre)})
        name = entry["stage"] if entry["method"] == "attention" else METHOD_LABELS[entry["method"]]
        section["maps"][name] = _rounded(entry)
    return sections


def measure_zoo_quality(zoo: Path, images_dir: Path, masks_dir: Path, dataset: str = HORSES,
                        device: str | None = None) -> tuple[list[dict[str, Any]], SegmentationResult]:
    """Score every shipped model of ``zoo`` on ``images_dir`` / ``masks_dir`` and write the
    sections into its manifest (cards of models without a map keep none). Every card CAM applies
    to (VGG-GAP, ResNet-164) is scored by its CAM and every plain VGG card by its Grad-CAM, so a
    folder of seeds gets all.
    Run cards under ``zoo/cards`` (a folder of trained runs) get the same sections.

    Args:
        zoo: the zoo folder (its manifest and files).
        images_dir: the images.
        masks_dir: their ground-truth masks, matched by file stem.
        dataset: what the images are.
        device: where the maps are computed (default: the best available).

    Returns:
        The updated cards and the evaluation they came from.
    """
    with using_zoo(zoo):  # the evaluation loads shipped ids from this zoo
        cards = read_manifest(zoo)["models"]
        cam_ids = [c["id"] for c in cards if get_spec(c["registry_name"]).cam_applies]
        grad_cam_ids = [c["id"] for c in cards if c["registry_name"] == "vgg"]
        compare = ["centre_prior"] + (["cam"] if cam_ids else []) + (["grad_cam"] if grad_cam_ids else [])
        # Every baseline card (a folder of seeds has several) gets its own post-hoc map.
        result = evaluate_folders(images_dir, masks_dir, compare=compare, cam_model_id=cam_ids,
                                  grad_cam_model_id=grad_cam_ids, device=device)
    sections = quality_sections(scores_by_map(result), dataset, result.settings.thresholds)
    updated = []
    for card in cards:
        card = {k: v for k, v in card.items() if k != QUALITY_KEY}
        if card["id"] in sections:
            card[QUALITY_KEY] = sections[card["id"]]
        updated.append(card)
    write_manifest(updated, zoo)
    # A folder of trained runs (``ltpa zoo train --zoo``) keeps each run's card beside the
    # manifest too: promote ships those, so they carry the section as well.
    for card in updated:
        card_file = zoo / CARDS_DIR / f"{card['id']}.json"
        if QUALITY_KEY in card and card_file.is_file():
            saved = json.loads(card_file.read_text())
            saved[QUALITY_KEY] = card[QUALITY_KEY]
            card_file.write_text(json.dumps(saved, indent=2) + "\n")
    return updated, result


def quality_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    """A card's attention quality as table rows (each map, then the centre prior), with the
    stage's test-set entropy where the card has it; empty for a card without the section."""
    section = card.get(QUALITY_KEY)
    if not section:
        return []
    entropy = card.get("attention_entropy") or {}
    rows = []
    for name, scores in [*section["maps"].items(), ("centre prior", section["centre_prior"])]:
        rows.append({"map": name,
                     "test entropy": None if name not in entropy else round(float(entropy[name]), 3),
                     "pointing": scores["pointing"],
                     **{f"J {rule}": value for rule, value in scores["jaccard"].items()}})
    return rows


def quality_markdown(cards: list[dict[str, Any]]) -> str:
    """The attention-quality table of docs/zoo.md: one row per shipped model and map, then the
    centre prior once (every card's prior was scored on the same images)."""
    rows, prior = [], None
    for card in cards:
        for row in quality_rows(card):
            if row["map"] == "centre prior":
                prior = row
                continue
            rows.append({"model": f"`{card['id']}`", **row})
    if not rows:
        return "No shipped card records its attention quality yet (`ltpa zoo quality`)."
    rows.append({"model": "", **prior, "map": "**centre prior**"})
    return markdown_table([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
