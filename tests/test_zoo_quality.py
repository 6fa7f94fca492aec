"""Attention quality on the zoo's cards (``ltpa zoo quality``, ltpa.maintainer.quality)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ltpa.cli import main
from ltpa.maintainer.quality import QUALITY_KEY, quality_rows, quality_sections
from ltpa.masks import RULES
from ltpa.zoo import DEFAULT_ZOO_DIR, read_manifest, write_manifest
from test_segment_eval import write_pairs


def test_every_shipped_model_with_a_map_carries_its_quality_beside_the_centre_prior() -> None:
    cards = read_manifest(DEFAULT_ZOO_DIR)["models"]
    for card in cards:
        section = card.get(QUALITY_KEY)
        stages = card.get("stages") or []
        if stages:
            assert section is not None, card["id"]
            # One tapped stage is its own combination: no "combined" row then.
            combined = ["combined"] if len(stages) > 1 else []
            assert set(section["maps"]) == {*stages, *combined}, card["id"]
        elif card["registry_name"] in ("vgg", "vgg_gap", "resnet164"):  # their post-hoc map
            assert set(section["maps"]) == {"Grad-CAM" if card["registry_name"] == "vgg" else "CAM"}
        else:
            assert section is None, card["id"]
            continue
        assert section["images"] == 328 and "Weizmann horses" in section["dataset"]
        assert set(section["thresholds"]) == set(RULES)
        for scores in [*section["maps"].values(), section["centre_prior"]]:
            assert 0.0 <= scores["pointing"] <= 1.0
            assert set(scores["jaccard"]) == set(RULES)
            assert all(0.0 <= value <= 1.0 for value in scores["jaccard"].values())
    # One set of images: every card's centre prior is the same.
    priors = {str(c[QUALITY_KEY]["centre_prior"]) for c in cards if c.get(QUALITY_KEY)}
    assert len(priors) == 1


def test_zoo_quality_writes_the_sections_into_the_manifest(tiny_zoo_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo_dir, zoo)
    images, masks_dir, _ = write_pairs(tmp_path, 3, seed=1, prefix="pair")
    before = read_manifest(zoo)["models"]
    assert main(["zoo", "quality", "--images", str(images), "--masks", str(masks_dir), "--zoo", str(zoo),
                 "--device", "cpu", "--dataset", "three generated squares"]) == 0
    after = {card["id"]: card for card in read_manifest(zoo)["models"]}
    assert list(after) == [card["id"] for card in before]  # same cards, same order
    for card in before:  # nothing else on a card changed
        assert {k: v for k, v in after[card["id"]].items() if k != QUALITY_KEY} == card
    att3 = after["vgg_att3_concat_pc"][QUALITY_KEY]
    assert att3["images"] == 3 and att3["dataset"] == "three generated squares"
    assert set(att3["maps"]) == {"layer7", "layer10", "layer13", "combined"}
    assert set(after["vgg_gap"][QUALITY_KEY]["maps"]) == {"CAM"}
    assert set(after["vgg"][QUALITY_KEY]["maps"]) == {"Grad-CAM"}
    rows = quality_rows(after["vgg_att3_concat_pc"])
    assert [row["map"] for row in rows] == ["layer7", "layer10", "layer13", "combined", "centre prior"]
    assert rows[-1]["pointing"] == att3["centre_prior"]["pointing"]
    out = capsys.readouterr().out
    assert "vgg_att3_concat_pc (3 images)" in out and "centre prior" in out


def test_quality_needs_the_centre_prior_and_a_card_without_it_has_no_rows() -> None:
    scores = {"m / layer13": {"method": "attention", "model": "m", "stage": "layer13", "images": 2,
                              "pointing_game": 0.5, "jaccard": {"top": 0.3}}}
    with pytest.raises(ValueError, match="centre prior"):
        quality_sections(scores, "two images", {"top": 25})
    scores["centre prior"] = {"method": "centre_prior", "model": "", "stage": "", "images": 2,
                              "pointing_game": 1.0, "jaccard": {"top": 0.4}}
    section = quality_sections(scores, "two images", {"top": 25})["m"]
    assert section["maps"] == {"layer13": {"pointing": 0.5, "jaccard": {"top": 0.3}}}
    assert section["centre_prior"] == {"pointing": 1.0, "jaccard": {"top": 0.4}}
    assert quality_rows({"id": "x"}) == []
    rows = quality_rows({"attention_entropy": {"layer13": 0.71234}, QUALITY_KEY: section})
    assert rows[0] == {"map": "layer13", "test entropy": 0.712, "pointing": 0.5, "J top": 0.3}
    assert rows[1]["map"] == "centre prior" and rows[1]["test entropy"] is None


def test_zoo_quality_scores_every_baseline_card_of_a_folder_of_seeds(tiny_zoo_dir: Path,
                                                                     tmp_path: Path) -> None:
    # A folder of seeds holds several VGG-GAP and plain VGG cards: each gets its own post-hoc map.
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo_dir, zoo)
    cards = read_manifest(zoo)["models"]
    seeds = [{**card, "id": card["id"] + "_seed1"} for card in cards
             if card["registry_name"] in ("vgg_gap", "vgg")]
    assert len(seeds) == 2
    write_manifest([*cards, *seeds], zoo)
    # A folder of trained runs keeps each run's card beside the manifest: it gets the section too.
    (zoo / "cards").mkdir()
    gap_seed = next(card for card in seeds if card["registry_name"] == "vgg_gap")
    (zoo / "cards" / f"{gap_seed['id']}.json").write_text(json.dumps(gap_seed))
    images, masks_dir, _ = write_pairs(tmp_path, 3, seed=2, prefix="pair")
    assert main(["zoo", "quality", "--images", str(images), "--masks", str(masks_dir), "--zoo", str(zoo),
                 "--device", "cpu", "--dataset", "three generated squares"]) == 0
    after = {card["id"]: card for card in read_manifest(zoo)["models"]}
    for seed in seeds:
        first = after[seed["id"].removesuffix("_seed1")][QUALITY_KEY]
        section = after[seed["id"]][QUALITY_KEY]
        assert set(section["maps"]) == {"CAM" if seed["registry_name"] == "vgg_gap" else "Grad-CAM"}
        # The same weights under another id: the same scores, and the same centre prior.
        assert section == first
    run_card = json.loads((zoo / "cards" / f"{gap_seed['id']}.json").read_text())
    assert run_card[QUALITY_KEY] == after[gap_seed["id"]][QUALITY_KEY]
