"""Finding the zoo, and a missing, empty or damaged zoo as a clear error naming where it looked."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ltpa import zoo
from ltpa.cli import main as cli
from ltpa.zoo import ZooError, get_entry, list_zoo, load_zoo_model, read_manifest

REPO = Path(__file__).resolve().parents[1]


def test_a_clone_uses_its_own_assets_and_ltpa_zoo_overrides_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    assert zoo.FROM_SOURCE_TREE
    assert zoo.zoo_dir() == zoo.DEFAULT_ZOO_DIR == REPO / "assets" / "models"
    assert zoo.ASSETS_DIR == REPO / "assets"
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path))
    assert zoo.zoo_dir() == tmp_path


def test_a_missing_zoo_folder_is_named(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path / "nowhere"))
    with pytest.raises(ZooError, match=f"^no model zoo at {tmp_path / 'nowhere'} \\(set by LTPA_ZOO\\): "
                                       f"the folder does not exist$"):
        list_zoo()


def test_a_folder_without_a_manifest_is_no_zoo(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path))
    with pytest.raises(ZooError, match=f"no model zoo at {tmp_path} \\(set by LTPA_ZOO\\): it has "
                                       f"no manifest.json"):
        get_entry("vgg")
    monkeypatch.delenv("LTPA_ZOO")
    with pytest.raises(ZooError, match=f"^no model zoo at {tmp_path}: it has no manifest.json$"):
        read_manifest(tmp_path)  # a folder given directly is named as it is


def test_the_shipped_zoo_missing_says_which_one_it_is(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    monkeypatch.setattr(zoo, "DEFAULT_ZOO_DIR", tmp_path / "models")
    with pytest.raises(ZooError, match=r"the shipped zoo, from the source tree; LTPA_ZOO picks another"):
        list_zoo()


def test_an_empty_manifest_is_an_empty_zoo_not_an_empty_list(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"models": []}))
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path))
    with pytest.raises(ZooError, match=f"is empty: {tmp_path / 'manifest.json'} lists no models"):
        list_zoo()


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot read the zoo manifest"),
    ("[1, 2]", "is not a zoo manifest"),
    ('{"models": {"vgg": {}}}', "is not a zoo manifest"),
    ('{"models": [{"file": "vgg.pt"}]}', "each with an \"id\""),
])
def test_a_damaged_manifest_is_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(ZooError, match=message) as info:
        read_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_a_card_naming_a_missing_file_fails_when_loaded(tiny_zoo_dir: Path, monkeypatch,
                                                       tmp_path: Path) -> None:
    broken = tmp_path / "zoo"
    shutil.copytree(tiny_zoo_dir, broken)
    card = read_manifest(broken)["models"][0]
    (broken / card["file"]).unlink()
    monkeypatch.setenv("LTPA_ZOO", str(broken))
    # The zoo still lists it (the app shows the others), and loading it names the file.
    assert card["id"] in [e.id for e in list_zoo()]
    with pytest.raises(ZooError, match=f"{broken / 'manifest.json'} names '{card['file']}' for "
                                       f"{card['id']}, but there is no such file in {broken}"):
        load_zoo_model(card["id"])
    other = read_manifest(broken)["models"][1]["id"]
    assert load_zoo_model(other).entry.id == other


def test_an_unknown_id_lists_the_shipped_ones(tiny_zoo: Path) -> None:
    with pytest.raises(ValueError, match="no shipped model 'resnet9'; shipped models: "
                                         "vgg_att3_concat_pc, vgg_att3_concat_dp, "):
        get_entry("resnet9")


def test_maintainer_commands_on_a_folder_that_is_no_zoo(tmp_path: Path, capsys) -> None:
    assert cli(["zoo", "baselines", "--zoo", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"ltpa zoo baselines: error: no model zoo at {tmp_path}: "
                                       f"it has no manifest.json\n")
