"""Manifest cards the registry cannot build, or whose file or sha256 is missing or malformed: a
named problem from ``ltpa.zoo.manifest_problems`` and a named warning in the app, never a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app_helpers import start_app, warnings
from ltpa.zoo import DEFAULT_ZOO_DIR, MANIFEST_NAME, manifest_problems
from pages.ui import state


def test_the_shipped_manifest_has_no_problems(monkeypatch) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    assert manifest_problems() == []
    assert manifest_problems(DEFAULT_ZOO_DIR) == []


def test_the_tiny_zoo_has_no_problems(tiny_zoo: Path) -> None:
    assert manifest_problems() == []


# card id -> (how the card is broken, words the one message about it must contain)
BROKEN = {
    "bad_name": (lambda c: c.update(registry_name="vgg_att9_concat_pc"),
                 ["'vgg_att9_concat_pc'", "registered models:", "vgg_att3_concat_pc"]),
    "no_name": (lambda c: c.pop("registry_name"), ["no registry_name"]),
    "bad_kwarg": (lambda c: c["kwargs"].update(depth=164), ["cannot build", "does not accept depth"]),
    "bad_value": (lambda c: c["kwargs"].update(width=-1), ["cannot build", "width must be positive"]),
    "bad_type": (lambda c: c["kwargs"].update(width="wide"), ["cannot build", "'wide'"]),
    "kwargs_list": (lambda c: c.update(kwargs=[1, 2]), ["kwargs must be a mapping"]),
    "no_file": (lambda c: c.update(file="missing.pt"), ["'missing.pt' does not exist"]),
    "no_sha": (lambda c: c.pop("sha256"), ["has no sha256"]),
    "bad_sha": (lambda c: c.update(sha256="abc123"), ["'abc123'", "not 64 lowercase hex digits"]),
}


def _zoo_with(source: Path, tmp_path: Path, broken: dict) -> tuple[Path, list[dict]]:
    """A copy of the zoo at ``source`` with, added, a copy of its first card broken per case."""
    folder = tmp_path / "zoo"
    shutil.copytree(source, folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    first = manifest["models"][0]
    for card_id, (damage, _) in broken.items():
        card = json.loads(json.dumps(first))
        card["id"] = card_id
        damage(card)
        manifest["models"].append(card)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder, manifest["models"]


def test_each_broken_card_gives_one_named_message(tiny_zoo_dir: Path, tmp_path: Path, monkeypatch) -> None:
    # The real manifest's cards, with the tiny zoo's files standing in for the shipped ones.
    folder = tmp_path / "real"
    folder.mkdir()
    real = json.loads((DEFAULT_ZOO_DIR / MANIFEST_NAME).read_text())
    for card in real["models"]:
        shutil.copy(next(tiny_zoo_dir.glob("*.pt")), folder / card["file"])
    (folder / MANIFEST_NAME).write_text(json.dumps(real))
    zoo, _ = _zoo_with(folder, tmp_path, BROKEN)
    monkeypatch.setenv("LTPA_ZOO", str(zoo))
    problems = manifest_problems()
    assert manifest_problems(zoo) == problems
    assert len(problems) == len(BROKEN), problems
    for (card_id, (_, words)), problem in zip(BROKEN.items(), problems):
        assert problem.startswith(f"zoo card '{card_id}': "), problem
        assert "\n" not in problem
        for word in words:
            assert word in problem, (word, problem)


def test_the_app_warns_about_an_unbuildable_card_and_keeps_the_others(tiny_zoo_dir: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    zoo, _ = _zoo_with(tiny_zoo_dir, tmp_path, {"bad_name": BROKEN["bad_name"]})
    monkeypatch.setenv("LTPA_ZOO", str(zoo))
    at = start_app()  # asserts no exception
    named = [w for w in warnings(at) if "Zoo entry **bad_name** is skipped" in w]
    assert len(named) == 1, warnings(at)
    assert "vgg_att9_concat_pc" in named[0] and "registered models" in named[0]
    options = at.selectbox(key="model.backbone").options
    assert options == ["VGG", "ResNet"]
    at.selectbox(key="model.backbone").select("resnet").run()
    assert not at.exception
    assert at.session_state[state.MODEL_ID] == "resnet_att2_concat_pc"
    at.selectbox(key="model.backbone").select("vgg").run()
    at.selectbox(key="model.attention_kind").select("none").run()
    assert not at.exception and at.session_state[state.MODEL_ID] == "vgg"
    # The Models page leaves it out of its table too.
    at.switch_page("pages/2_Models.py").run()
    assert not at.exception
    assert "bad_name" not in list(at.dataframe[0].value["id"])
    assert sum("Zoo entry **bad_name** is skipped" in w for w in warnings(at)) == 1


@pytest.mark.parametrize("page", ["pages/1_Compare.py", "pages/3_Masks.py"])
def test_other_pages_warn_once_too(tiny_zoo_dir: Path, tmp_path: Path, monkeypatch, page: str) -> None:
    zoo, _ = _zoo_with(tiny_zoo_dir, tmp_path, {"bad_kwarg": BROKEN["bad_kwarg"]})
    monkeypatch.setenv("LTPA_ZOO", str(zoo))
    at = start_app()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert sum("Zoo entry **bad_kwarg** is skipped" in w and "depth" in w for w in warnings(at)) == 1, warnings(at)
