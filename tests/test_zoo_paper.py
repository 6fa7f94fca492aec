"""The paper table: the shipped zoo against the paper's Table 1, seed means pooled over the cards
of the same model and recipe, and the paper's models the zoo does not ship."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from ltpa.maintainer.baselines import read_cards, reproduction_dir
from ltpa.maintainer.paper import NOT_IN_PAPER, NOT_SHIPPED, paper_comparison, paper_table_rows
from ltpa.registry import get_spec, recorded_defaults
from ltpa.zoo import DEFAULT_ZOO_DIR, PAPER_CIFAR10_ERROR, paper_cifar10_error, read_manifest, write_manifest

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
    paper_rows = [row for row in rows if not row.deviation]
    by_name = {row.registry_name: row for row in paper_rows}
    assert [row.registry_name for row in paper_rows] == list(PAPER_CIFAR10_ERROR)  # the paper's order
    shipped_names = {card["registry_name"] for card in shipped
                     if paper_cifar10_error(card["registry_name"], card["kwargs"]) is not None}
    assert {r.registry_name for r in paper_rows if r.shipped} == set(PAPER_CIFAR10_ERROR) & shipped_names
    # A shipped deviation (another normalisation) has a row of its own, right after its network's,
    # with no paper figure.
    deviations = [row for row in rows if row.deviation]
    assert [row.shipped_id for row in deviations] == [
        c["id"] for c in shipped if c["registry_name"] in PAPER_CIFAR10_ERROR
        and paper_cifar10_error(c["registry_name"], c["kwargs"]) is None]
    for row in deviations:
        assert row.paper_error is None and row.mean_minus_paper is None
        assert rows[rows.index(row) - 1].registry_name == row.registry_name
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
        if card.get("selection"):  # chosen on the validation split, among its seeds
            assert "on the validation split" in row.selection and card["trained_as"] in row.selection
        else:
            assert card.get("promotion_note", "no note in the manifest") in row.selection
    # Today's zoo: three seeds of each fast-recipe VGG, the paper's best (att2) among them; the
    # paper gives VGG-att1 no CIFAR-10 figure, so it has no row.
    for name in ("vgg_att2_concat_pc", "vgg_att3_concat_pc", "vgg"):
        assert by_name[name].seeds == 3, name
    assert "vgg_att1_concat_pc" not in by_name
    assert "vgg_att3_concat_pc_w1" not in by_name["vgg_att3_concat_pc"].seed_cards.values()
    assert "vgg_att3_concat_pc_zoo1" not in by_name["vgg_att3_concat_pc"].seed_cards.values()
    table = {r["paper model"]: r for r in paper_table_rows(rows)}
    att2 = table["(VGG-att2)-concat-pc"]
    assert att2["shipped as"] == "vgg_att2_concat_pc" and att2["paper error %"] == 5.23
    assert att2["seeds"] == 3 and att2["seed mean − paper"] == round(by_name["vgg_att2_concat_pc"].mean_error - 5.23, 2)
    vgg = table["VGG"]
    assert vgg["shipped as"] == "vgg" and vgg["our build"] == "width 0.5, int4"
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


def _sigmoid_sum(card: dict) -> dict:
    """The card of the same network trained with sigmoid_sum, the zoo's deviation from the paper."""
    return {**card, "kwargs": {**card["kwargs"], "normalisation": "sigmoid_sum"}}


def test_the_papers_figure_is_for_its_softmax_models_only() -> None:
    assert paper_cifar10_error("vgg_att3_concat_pc", {"width": 0.7}) == 6.34
    assert paper_cifar10_error("vgg_att3_concat_pc", {"normalisation": "softmax"}) == 6.34
    assert paper_cifar10_error("vgg_att3_concat_pc", {"normalisation": "sigmoid_sum"}) is None
    assert paper_cifar10_error("vgg") == 7.77 and paper_cifar10_error("resnet_att2_concat_pc") is None


def test_a_deviation_from_the_papers_normalisation_is_its_own_row_without_a_paper_figure(tmp_path: Path) -> None:
    zoo = tmp_path / "models"
    att3 = _card("vgg_att3_concat_pc", "vgg_att3_concat_pc", 6.8)
    # Listed before the softmax model it deviates from: the paper's row still comes first.
    write_manifest([_sigmoid_sum(_card("vgg_att3_concat_pc_sigmoid_sum", "vgg_att3_concat_pc", 6.0)), att3,
                    _sigmoid_sum(_card("vgg_att2_concat_pc_sigmoid_sum", "vgg_att2_concat_pc", 5.0)),
                    _card("vgg", "vgg", 7.0)], zoo)
    cards = tmp_path / "reproduction" / "cards"
    cards.mkdir(parents=True)
    explicit = _card("vgg_att3_concat_pc_seed2", "vgg_att3_concat_pc", 7.2, seed=2)
    explicit["kwargs"]["normalisation"] = "softmax"  # the paper's, said explicitly: the same model
    for card in (_sigmoid_sum(_card("vgg_att3_concat_pc_sigmoid_sum_seed1", "vgg_att3_concat_pc", 6.2, seed=1)),
                 _card("vgg_att3_concat_pc_seed1", "vgg_att3_concat_pc", 7.0, seed=1), explicit):
        (cards / f"{card['id']}.json").write_text(json.dumps(card))
    rows = paper_comparison(zoo)
    assert [(row.registry_name, row.shipped_id) for row in rows] == [
        ("vgg", "vgg"), ("vgg_gap", None),
        ("vgg_att2_concat_pc", None), ("vgg_att2_concat_pc", "vgg_att2_concat_pc_sigmoid_sum"),
        ("vgg_att3_concat_pc", "vgg_att3_concat_pc"), ("vgg_att3_concat_pc", "vgg_att3_concat_pc_sigmoid_sum"),
        ("resnet164", None)]
    # The paper's model pools its softmax seeds only, and only it is set against the paper.
    paper = rows[4]
    assert paper.deviation == "" and paper.paper_error == 6.34
    assert paper.seed_cards == {0: "vgg_att3_concat_pc", 1: "vgg_att3_concat_pc_seed1", 2: "vgg_att3_concat_pc_seed2"}
    assert paper.mean_minus_paper == pytest.approx(7.0 - 6.34)
    # The deviation: its own seeds, no paper figure, nothing set against the paper's.
    deviation = rows[5]
    assert deviation.paper_name == "(VGG-att3)-concat-pc, sigmoid_sum normalisation"
    assert deviation.deviation == "sigmoid_sum normalisation" and deviation.paper_error is None
    assert deviation.seed_cards == {0: "vgg_att3_concat_pc_sigmoid_sum", 1: "vgg_att3_concat_pc_sigmoid_sum_seed1"}
    assert deviation.mean_error == pytest.approx(6.1) and deviation.mean_minus_paper is None
    # Only a deviation shipped: the paper's model is not shipped, and the deviation follows it.
    assert not rows[2].shipped and rows[2].paper_error == 5.23
    assert rows[3].paper_error is None and rows[3].seed_errors == {0: 5.0}
    table = paper_table_rows(rows)
    assert table[5]["paper model"] == f"(VGG-att3)-concat-pc, sigmoid_sum normalisation ({NOT_IN_PAPER})"
    assert table[5]["paper error %"] is None and table[5]["seed mean − paper"] is None
    assert table[5]["our build"] == "width 0.5, int8, sigmoid_sum normalisation"
    assert table[5]["errors by seed"] == "6.00 (seed 0), 6.20 (seed 1)"
    assert table[4]["paper model"] == "(VGG-att3)-concat-pc" and table[4]["our build"] == "width 0.5, int8"
    assert table[4]["seed mean − paper"] == round(7.0 - 6.34, 2)
    assert table[2]["shipped as"] == NOT_SHIPPED and table[2]["paper error %"] == 5.23
    assert len({r["paper model"] for r in table}) == len(table)  # one name per row: the app indexes by it
