"""Which seed ships: a rule on the validation split, recorded on the card and checkable
(ltpa.maintainer.selection, ``ltpa zoo select``, ``ltpa zoo promote --selection``)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltpa.cli import main as cli
from ltpa.maintainer import shipping
from ltpa.maintainer.baselines import read_cards
from ltpa.maintainer.recipes import RECIPES
from ltpa.maintainer.selection import (SELECTION_KEY, choose, selection_problems, selection_record,
                                       validation_error)
from ltpa.zoo import DEFAULT_ZOO_DIR, read_manifest
from sample_images import make_folder


def test_rules_choose_on_the_validation_error_and_break_ties_by_seed() -> None:
    errors = {"m_seed2": 7.5, "m": 7.9, "m_seed1": 7.2}
    assert choose(errors, "lowest_validation_error") == "m_seed1"
    assert choose(errors, "median_validation_error") == "m_seed2"
    assert choose({"m_seed3": 7.0, "m_seed1": 7.0, "m": 8.0}, "lowest_validation_error") == "m_seed1"
    # An even count: the lower of the two middle ones.
    assert choose({"a_seed1": 1.0, "a_seed2": 2.0, "a_seed3": 3.0, "a_seed4": 4.0}, "median_validation_error") == "a_seed2"
    with pytest.raises(ValueError, match="unknown selection rule 'best_on_test'; rules: lowest_validation_error"):
        choose(errors, "best_on_test")
    with pytest.raises(ValueError, match="m_seed1 records no validation error: the rule cannot be checked"):
        choose({"m": 7.0, "m_seed1": None}, "lowest_validation_error")
    with pytest.raises(ValueError, match="no runs"):
        choose({}, "lowest_validation_error")


def test_validation_error_is_read_from_cards_checkpoint_metrics_and_logs() -> None:
    assert validation_error({"validation_error_flip": 7.25, "validation_error": 8.0}) == 7.25
    assert validation_error({"validation_error": 8.0}) == 8.0
    assert validation_error({"metrics": {"validation_error_flip": 6.5}}) == 6.5
    assert validation_error({"epochs": [{"val_acc": 0.5}, {"val_acc": 0.9, "val_acc_flip": 0.925}]}) == 7.5
    assert validation_error({"epochs": [{"val_acc": None}]}) is None
    assert validation_error({"validation_error": float("nan")}) is None


def _shipped(record: dict, error: float = 7.2) -> dict:
    return {"id": "m", "trained_as": "m_seed1", "validation_error_flip": error, SELECTION_KEY: record}


def test_a_recorded_selection_is_checked_against_the_kept_seed_cards() -> None:
    errors = {"m": 7.9, "m_seed1": 7.2, "m_seed2": 7.5}
    record = selection_record(errors, "lowest_validation_error")
    assert record["chosen"] == "m_seed1" and record["candidates"] == errors
    kept = [{"id": "m", "validation_error_flip": 7.9}, {"id": "m_seed2", "validation_error_flip": 7.5}]
    assert selection_problems(_shipped(record), kept) == []
    assert selection_problems({"id": "old", "promotion_note": "best on the test set"}, []) == []
    problems = {
        "missing seed card": selection_problems(_shipped(record), kept[:1]),
        "changed error": selection_problems(_shipped(record), [kept[0], {"id": "m_seed2", "validation_error_flip": 6.0}]),
        "no error": selection_problems(_shipped(record), [kept[0], {"id": "m_seed2"}]),
        "rule picks another": selection_problems(_shipped({**record, "rule": "median_validation_error"}), kept),
        "unknown rule": selection_problems(_shipped({**record, "rule": "best_on_test"}), kept),
        "malformed": selection_problems(_shipped({"rule": "lowest_validation_error"}), kept),
        "not a candidate": selection_problems({**_shipped(record), "trained_as": "m_seed9"}, kept),
    }
    expected = {
        "missing seed card": "the card of seed run 'm_seed2', a candidate of its selection, is missing",
        "changed error": "'m_seed2' has validation error 6% in its card, 7.5 in the selection",
        "no error": "'m_seed2' records no validation error, so its selection cannot be checked",
        "rule picks another": "its rule (median_validation_error) picks 'm_seed2', but 'm_seed1' is shipped",
        "unknown rule": "unknown selection rule 'best_on_test'",
        "malformed": "its selection record is malformed",
        "not a candidate": "the shipped run 'm_seed9' is not among its selection's candidates",
    }
    for case, lines in problems.items():
        assert lines and all(line.startswith("zoo card 'm': ") for line in lines), (case, lines)
        assert any(expected[case] in line for line in lines), (case, lines)
    # A shipped run missing from its candidates also leaves its own seed card unaccounted for.
    assert len(problems["not a candidate"]) == 2 and all(len(v) == 1 for k, v in problems.items()
                                                          if k != "not a candidate")


def test_the_shipped_zoo_has_no_selection_problems() -> None:
    kept = read_cards(DEFAULT_ZOO_DIR.parent / "reproduction")
    for card in read_manifest(DEFAULT_ZOO_DIR)["models"]:
        assert selection_problems(card, kept) == [], card["id"]


def test_select_then_promote_ships_the_chosen_seed_and_keeps_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data = make_folder(tmp_path / "data", {"train": 16, "test": 4})
    # A one-epoch vgg_gap recipe with a validation split, so its seeds record validation errors.
    for key, value in (("epochs", 1), ("qat_epochs", 1), ("validation", 0.25)):
        monkeypatch.setitem(RECIPES["vgg_gap"], key, value)
    monkeypatch.setattr(shipping, "FIXTURE_DIR", data / "test")
    seeds, zoo, kept = tmp_path / "seeds", tmp_path / "zoo", tmp_path / "reproduction"
    for seed in (0, 1, 2):
        assert cli(["zoo", "train", "--ids", "vgg_gap", "--data", str(data), "--runs", str(tmp_path / "runs"),
                    "--no-compile", "--device", "cpu", "--zoo", str(seeds), "--seed", str(seed)]) == 0
    cards = sorted((seeds / "cards").glob("*.json"))
    errors = {json.loads(p.read_text())["id"]: validation_error(json.loads(p.read_text())) for p in cards}
    assert set(errors) == {"vgg_gap", "vgg_gap_seed1", "vgg_gap_seed2"}
    assert all(0.0 <= e <= 100.0 for e in errors.values())
    record_path = tmp_path / "selection.json"
    capsys.readouterr()
    assert cli(["zoo", "select", *map(str, cards), "--out", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    chosen = choose(errors, "lowest_validation_error")
    assert record["chosen"] == chosen and f"chosen: {chosen}" in capsys.readouterr().out
    # Promoting another seed than the record chose is refused.
    other = next(run for run in errors if run != chosen)
    with pytest.raises(ValueError, match=f"the selection chose '{chosen}', not '{other}'"):
        shipping.promote_run(seeds / "cards" / f"{other}.json", "vgg_gap", zoo, kept, selection=record)
    assert cli(["zoo", "promote", str(seeds / "cards" / f"{chosen}.json"), "--as", "vgg_gap", "--zoo", str(zoo),
                "--retire-to", str(kept), "--selection", str(record_path)]) == 0
    (card,) = read_manifest(zoo)["models"]
    assert card["trained_as"] == chosen and card[SELECTION_KEY] == record
    assert sorted(c["id"] for c in read_cards(kept)) == sorted(run for run in errors if run != chosen)
    assert selection_problems(card, read_cards(kept)) == []


def test_select_names_a_path_that_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert cli(["zoo", "select", str(tmp_path / "empty")]) == 2
    assert "neither a run folder with log.json nor a card file" in capsys.readouterr().err


def test_every_page_names_a_card_whose_seed_selection_cannot_be_confirmed(
        tiny_zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from app_helpers import as_read, start_app
    from pages.ui import state

    zoo = tmp_path / "models"
    shutil.copytree(tiny_zoo_dir, zoo)
    manifest = json.loads((zoo / "manifest.json").read_text())
    card = manifest["models"][0]
    card.update(trained_as=f"{card['id']}_seed1", validation_error_flip=7.2)
    card[SELECTION_KEY] = selection_record({f"{card['id']}_seed1": 7.2, f"{card['id']}_seed2": 7.5},
                                           "lowest_validation_error")
    (zoo / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LTPA_ZOO", str(zoo))
    at = start_app()
    lines = [as_read(w.value) for w in at.warning]
    assert any(f"Zoo entry **{card['id']}**: how its seed was chosen cannot be confirmed" in line
               and f"'{card['id']}_seed2'" in line and "is missing from the reproduction folder" in line
               for line in lines), lines
    assert at.session_state[state.MODEL_ID] == card["id"]  # still a choice
    # Once the other seed's card is kept beside the zoo, the warning goes.
    (tmp_path / "reproduction" / "cards").mkdir(parents=True)
    (tmp_path / "reproduction" / "cards" / f"{card['id']}_seed2.json").write_text(
        json.dumps({"id": f"{card['id']}_seed2", "validation_error_flip": 7.5}))
    again = start_app()
    assert not [w for w in again.warning if "cannot be confirmed" in w.value]
