"""The paper table: the shipped zoo against the paper's Table 1, seed means pooled over the cards
of the same model and recipe, and the paper's models the zoo does not ship."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from ltpa.maintainer.baselines import read_cards, reproduction_dir
from ltpa.maintainer.paper import NOT_SHIPPED, paper_comparison, paper_table_rows
from ltpa.registry import get_spec, recorded_defaults
from ltpa.zoo import DEFAULT_ZOO_DIR, PAPER_CIFAR10_ERROR, read_manifest, write_manifest

# Training settings that say where, how fast or from which seed a run was trained, not what it
# learnt: two cards that differ only in these are the same model and recipe.
NOT_RECIPE = {"model", "data", "data_root", "out", "overrides", "seed", "device", "channels_last",
              "compile", "compile_mode", "eval_every", "download", "image_size"}


def _same_model_and_recipe(a: dict, b: dict) -> bool:
    """Read straight from two cards' fields, independently of the library's reading."""
    def recipe(card: dict) -> dict:
        config = card["training"]["config"]
        return {k: v for k, v in config.items() if k not in NOT_RECIPE}
    return (a["registry_name"] == b["registry_name"] and a["kwargs"] == b["kwargs"]
            and a.get("precision") == b.get("precision") and recipe(a) == recipe(b))


def test_the_shipped_zoo_against_the_papers_table(monkeypatch) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    shipped = read_manifest(DEFAULT_ZOO_DIR)["models"]
    kept = read_cards(reproduction_dir(DEFAULT_ZOO_DIR))
    rows = paper_comparison()
    by_name = {row.registry_name: row for row in rows}
    assert [row.registry_name for row in rows] == list(PAPER_CIFAR10_ERROR)  # the paper's order
    shipped_names = {card["registry_name"] for card in shipped}
    assert {r.registry_name for r in rows if r.shipped} == set(PAPER_CIFAR10_ERROR) & shipped_names
    assert {"vgg", "vgg_att3_concat_pc", "resnet164"} <= shipped_names  # what the zoo ships today
    for name, row in by_name.items():
        assert row.paper_error == PAPER_CIFAR10_ERROR[name]
        assert row.paper_name == get_spec(name).paper_name
        if not row.shipped:
            continue
        card = next(c for c in shipped if c["id"] == row.shipped_id)
        assert row.shipped_error == card["test_error"]
        assert row.shipped_seed == card["training"]["config"]["seed"]
        # Every seed of the same model and recipe, the shipped card's error for its own seed.
        expected = {card["training"]["config"]["seed"]: (card["test_error"], card["id"])}
        for other in kept:
            if _same_model_and_recipe(card, other):
                expected.setdefault(other["training"]["config"]["seed"], (other["test_error"], other["id"]))
        assert row.seed_errors == {seed: error for seed, (error, _) in expected.items()}
        assert row.seed_cards == {seed: card_id for seed, (_, card_id) in expected.items()}
        assert row.seeds == len(expected)
        errors = [error for error, _ in expected.values()]
        assert row.mean_error == pytest.approx(statistics.fmean(errors))
        assert row.spread == (pytest.approx(max(errors) - min(errors)) if len(errors) > 1 else None)
        assert row.mean_minus_paper == pytest.approx(statistics.fmean(errors) - row.paper_error)
        # Runs of the same network with another recipe (another width, label smoothing) stay out.
        others = [c["id"] for c in kept if c["registry_name"] == name and not _same_model_and_recipe(card, c)]
        assert not set(others) & set(row.seed_cards.values())
        assert card.get("promotion_note", "no note in the manifest") in row.selection
    # Today's zoo: several seeds of each shipped paper model; the paper's best (att2) not shipped.
    assert by_name["vgg_att3_concat_pc"].seeds >= 3 and by_name["vgg"].seeds >= 3
    assert "vgg_att3_concat_pc_w1" not in by_name["vgg_att3_concat_pc"].seed_cards.values()
    assert not by_name["vgg_att2_concat_pc"].shipped
    table = {r["paper model"]: r for r in paper_table_rows(rows)}
    att2 = table["(VGG-att2)-concat-pc"]
    assert att2["shipped as"] == NOT_SHIPPED and att2["paper error %"] == 5.23
    assert att2["seeds"] == 0 and att2["seed mean error %"] is None and att2["seed mean − paper"] is None
    vgg = table["VGG"]
    assert vgg["shipped as"] == "vgg" and vgg["our build"] == "width 0.7, int4"
    assert vgg["seed mean error %"] == round(by_name["vgg"].mean_error, 2)
    assert vgg["seed mean − paper"] == round(by_name["vgg"].mean_error - 7.77, 2)


def _card(card_id: str, name: str, error: float | None, seed: int = 0, **settings) -> dict:
    config = {"width": 0.5, "epochs": 100, "seed": seed, "label_smoothing": 0.0, **settings}
    return {"id": card_id, "registry_name": name, "kwargs": {**recorded_defaults(name), "width": 0.5},
            "test_error": error, "training": {"epochs": 100, "config": config}, "precision": "int8"}


def test_seeds_pool_by_model_and_recipe_and_a_duplicate_keeps_the_shipped_error(tmp_path: Path) -> None:
    zoo = tmp_path / "models"
    shipped = dict(_card("vgg", "vgg", 7.0, seed=2), trained_as="vgg_seed2",
                   promotion_note="the median of three seeds on the validation split")
    write_manifest([shipped, _card("vgg_att3_concat_pc", "vgg_att3_concat_pc", None),
                    _card("resnet_att2_concat_pc", "resnet_att2_concat_pc", 6.0)], zoo)
    cards = tmp_path / "reproduction" / "cards"
    cards.mkdir(parents=True)
    kept = [_card("vgg_seed0", "vgg", 7.4), _card("vgg_seed1", "vgg", 7.2, seed=1),
            _card("vgg_seed2", "vgg", 9.9, seed=2),  # the shipped run's own card: counted once
            _card("vgg_ls", "vgg", 5.0, seed=3, label_smoothing=0.1),  # another recipe
            dict(_card("vgg_fp32", "vgg", 5.0, seed=4), precision="fp32"),  # another precision
            _card("vgg_att3_concat_pc_seed1", "vgg_att3_concat_pc", 6.5, seed=1)]
    for card in kept:
        (cards / f"{card['id']}.json").write_text(json.dumps(card))
    (cards / "damaged.json").write_text("{not json")
    rows = {row.registry_name: row for row in paper_comparison(zoo)}
    vgg = rows["vgg"]
    assert vgg.seed_cards == {0: "vgg_seed0", 1: "vgg_seed1", 2: "vgg"}
    assert vgg.seed_errors == {0: 7.4, 1: 7.2, 2: 7.0}
    assert vgg.mean_error == pytest.approx(7.2) and vgg.spread == pytest.approx(0.4)
    assert vgg.mean_minus_paper == pytest.approx(7.2 - 7.77) and vgg.recipe_label
    assert vgg.selection == "run vgg_seed2: the median of three seeds on the validation split"
    # A shipped card without a measured error still pools the seeds that have one.
    att3 = rows["vgg_att3_concat_pc"]
    assert att3.shipped and att3.shipped_error is None and att3.seed_errors == {1: 6.5}
    assert att3.spread is None and att3.selection == "no note in the manifest on how it was chosen"
    # The paper's models the zoo lacks; a shipped model the paper has no figure for is no row.
    assert [name for name, row in rows.items() if not row.shipped] == ["vgg_gap", "vgg_att2_concat_pc",
                                                                       "resnet164"]
    assert "resnet_att2_concat_pc" not in rows
    table = {r["paper model"]: r for r in paper_table_rows(list(rows.values()))}
    assert table["VGG"]["errors by seed"] == "7.40 (seed 0), 7.20 (seed 1), 7.00 (seed 2)"
    assert table["VGG"]["seed spread (max − min)"] == 0.4 and table["VGG"]["seeds"] == 3
    assert table["ResNet-164"]["shipped as"] == NOT_SHIPPED and table["ResNet-164"]["our build"] is None
