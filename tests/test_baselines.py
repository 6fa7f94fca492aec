"""Attention against its baseline: runs paired by backbone and recipe, seed by seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltpa.maintainer.baselines import (ZOO_RECIPE_LABEL, baseline_gaps, run_cards,
                                       gap_rows, gaps_markdown, read_cards, recipe_label,
                                       reproduction_dir, run_of, variant_of, zoo_recipe)
from ltpa.maintainer.runs import read_log_epochs, run_logs, run_summary
from ltpa.cli import main as cli
from ltpa.registry import recorded_defaults
from ltpa.zoo import DEFAULT_ZOO_DIR, read_manifest


def card(name: str, error: float | None, width: float = 0.5, epochs: int = 100, seed: int = 0,
         batch_size: int = 256, weight_decay: float = 5e-4, **kwargs) -> dict:
    """A card as ``create_model`` records it: defaults that changed over time are explicit."""
    kwargs = {**recorded_defaults(name), **kwargs}
    config = {"width": width, "epochs": epochs, "seed": seed, "batch_size": batch_size,
              "weight_decay": weight_decay}
    return {"id": f"{name}_{width}_{epochs}_{batch_size}_{weight_decay}_{seed}", "registry_name": name,
            "test_error": error, "kwargs": kwargs, "training": {"config": config}, "precision": "int8"}


def test_gaps_pair_each_attention_run_with_the_same_recipe_of_its_backbones_baseline() -> None:
    cards = [
        card("vgg_att3_concat_pc", 7.0), card("vgg_att3_concat_pc", 6.6, seed=1),
        card("vgg", 7.2), card("vgg", 7.6, seed=1), card("vgg", 5.0, width=1.0),
        card("vgg_gap", 6.0),  # another baseline: never the one attention is compared with
        card("resnet_att2_concat_dp", 8.0, width=1.0, epochs=160),
        card("resnet_att2_concat_dp", 9.5, width=1.0, epochs=160, tap_features="residual"),
        card("resnet164", 7.5, width=1.0, epochs=160),
        card("resnet164", 7.5, width=1.0, epochs=80, seed=3),  # another schedule: not paired
        card("resnet164", 7.1, width=1.0, epochs=160, seed=4, batch_size=128),  # nor is this one
        card("resnet164", 6.9, width=1.0, epochs=160, seed=5, weight_decay=1e-4),  # nor this
    ]
    gaps = {(g.attention, g.variant): g for g in baseline_gaps(cards)}
    assert set(gaps) == {("vgg_att3_concat_pc", ""), ("resnet_att2_concat_dp", ""),
                         ("resnet_att2_concat_dp", "residual taps")}
    vgg = gaps["vgg_att3_concat_pc", ""]
    assert vgg.baseline == "vgg"
    assert {k: vgg.settings[k] for k in ("width", "epochs", "batch_size")} == {
        "width": 0.5, "epochs": 100, "batch_size": 256}
    assert gaps["resnet_att2_concat_dp", ""].baseline_errors == {0: 7.5}
    assert vgg.attention_errors == {0: 7.0, 1: 6.6} and vgg.baseline_errors == {0: 7.2, 1: 7.6}
    assert vgg.mean_gap == pytest.approx(6.8 - 7.4)
    assert vgg.seed_gaps == pytest.approx({0: -0.2, 1: -1.0})
    assert vgg.baseline_spread == pytest.approx(0.4)
    residual = gaps["resnet_att2_concat_dp", "residual taps"]
    assert residual.baseline_errors == {0: 7.5} and residual.mean_gap == pytest.approx(2.0)
    assert residual.baseline_spread is None


def test_runs_without_a_baseline_or_a_measured_error_and_duplicates() -> None:
    cards = [card("vgg_att3_concat_dp", 7.1), card("vgg_att3_concat_dp", 7.1),  # listed twice
             card("vgg_att3_concat_dp", 6.9, seed=2), card("vgg", None),
             {"registry_name": "no_such_model", "test_error": 5.0}, {"id": "empty"}]
    assert run_of(cards[3]) is None and run_of(cards[4]) is None and run_of(cards[5]) is None
    damaged = card("vgg", 7.0)
    damaged["training"]["config"]["lr"] = [0.1]
    assert run_of(damaged) is None
    odd = card("vgg", 7.0)
    odd["training"]["config"]["lr"] = "fast"
    assert "lr 'fast'" in recipe_label(run_of(odd).recipe, "vgg")
    (gap,) = baseline_gaps(cards)
    assert gap.attention_errors == {0: 7.1, 2: 6.9} and gap.baseline_errors == {}
    assert gap.mean_gap is None and gap.seed_gaps == {}
    (row,) = gap_rows([gap])
    assert row["attention model"] == "(VGG-att3)-concat-dp" and row["baseline"] == "VGG"
    assert row["attention error %"] == "7.10 (seed 0), 6.90 (seed 2)"
    assert row["baseline error %"] == "—" and row["mean gap (points)"] is None


def test_old_cards_without_tap_features_count_as_residual_taps() -> None:
    old = card("resnet_att2_concat_pc", 7.7, width=1.0)
    del old["kwargs"]["tap_features"]  # as written before the option existed
    assert run_of(old).variant == "residual taps"
    assert run_of(card("resnet_att2_concat_pc", 7.6, tap_features="activated")).variant == ""
    assert run_of(card("vgg_att3_concat_dp", 7.0, dp_scale="none")).variant == "unscaled dp"


def test_read_cards_skips_damaged_files(tmp_path: Path) -> None:
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "a.json").write_text(json.dumps(card("vgg", 7.0)))
    (tmp_path / "cards" / "b.json").write_text("{not json")
    (tmp_path / "cards" / "c.json").write_text("[1, 2]")
    assert [c["registry_name"] for c in read_cards(tmp_path)] == ["vgg"]
    assert read_cards(tmp_path / "missing") == []


def test_shipped_and_reproduction_cards_give_the_readme_comparison(monkeypatch) -> None:
    monkeypatch.delenv("LTPA_ZOO", raising=False)
    assert reproduction_dir() == DEFAULT_ZOO_DIR.parent / "reproduction"
    shipped = read_manifest(DEFAULT_ZOO_DIR)["models"]
    repeats = read_cards(reproduction_dir())
    gaps = {(g.attention, g.variant, g.recipe_label): g for g in baseline_gaps(shipped + repeats)}
    error = {c["id"]: c["test_error"] for c in shipped + repeats}
    # The fast-recipe VGGs (per-stage classifiers on the attention models): VGG-att3-pc ships
    # seed 1, chosen on the validation split, beside seeds 0 and 2; VGG ships seed 2.
    fast = gaps["vgg_att3_concat_pc", "stage classifiers", ZOO_RECIPE_LABEL]
    assert fast.attention_errors == {0: error["vgg_att3_concat_pc_fast"], 1: error["vgg_att3_concat_pc"],
                                     2: error["vgg_att3_concat_pc_fast_seed2"]}
    assert fast.baseline_errors == {0: error["vgg_fast"], 1: error["vgg_fast_seed1"], 2: error["vgg"]}
    # The first zoo's 0.7-wide VGGs are compared among themselves: VGG-att3-pc shipped seed 2 and
    # VGG seed 0 then (both kept as ..._zoo1).
    first = gaps["vgg_att3_concat_pc", "", "width 0.7, 200 epochs, batch 256, lr 0.1, 40 QAT epochs"]
    assert first.attention_errors == {0: error["vgg_att3_concat_pc_seed0"], 1: error["vgg_att3_concat_pc_seed1"],
                                      2: error["vgg_att3_concat_pc_zoo1"], 3: error["vgg_att3_concat_pc_seed3"]}
    assert first.baseline_errors == {0: error["vgg_zoo1"], 1: error["vgg_seed1"], 2: error["vgg_seed2"],
                                     3: error["vgg_seed3"]}
    # Every shipped attention model has its same-recipe baseline.
    for entry in shipped:
        if entry["stages"]:
            assert any(g.baseline_errors for (attention, _, label), g in gaps.items()
                       if attention == entry["registry_name"] and label == ZOO_RECIPE_LABEL), entry["id"]
    # The fast-recipe ResNets: RN-att2-pc ships seed 0, ResNet-164 seed 1, RN-att2-indep-pc seed 2.
    rn_pc = gaps["resnet_att2_concat_pc", "stage classifiers", ZOO_RECIPE_LABEL]
    assert rn_pc.attention_errors == {0: error["resnet_att2_concat_pc"], 1: error["resnet_att2_concat_pc_fast_seed1"],
                                      2: error["resnet_att2_concat_pc_fast_seed2"]}
    assert rn_pc.baseline_errors == {0: error["resnet164_fast"], 1: error["resnet164"],
                                     2: error["resnet164_fast_seed2"]}
    assert gaps["resnet_att2_indep_pc", "", ZOO_RECIPE_LABEL].attention_errors == {
        0: error["resnet_att2_indep_pc_fast"], 1: error["resnet_att2_indep_pc_fast_seed1"],
        2: error["resnet_att2_indep_pc"]}
    # The first zoo's 160-epoch ResNets are compared among themselves: RN-att2-pc shipped seed 1
    # then, beside its seed 0 (both kept).
    first_rn = "160 epochs, QAT none, int8"
    assert gaps["resnet_att2_concat_pc", "", first_rn].attention_errors == {
        0: error["resnet_att2_concat_pc_ls0-cut16"], 1: error["resnet_att2_concat_pc_zoo1"]}
    assert gaps["resnet_att2_concat_pc", "", first_rn].baseline_errors == {
        0: error["resnet164_zoo1"], 1: error["resnet164_ls0-cut16_seed1"]}
    assert gaps["resnet_att2_concat_dp", "", first_rn].attention_errors == {
        0: error["resnet_att2_concat_dp_zoo1"], 1: error["resnet_att2_concat_dp_ls0-cut16_seed1"]}
    # The files the earlier ResNet recipe shipped are compared among themselves, ablations apart.
    earlier = "label smoothing 0.1, cutout 12"
    assert gaps["resnet_att2_concat_pc", "", f"160 epochs, {earlier}, QAT none, int8"].attention_errors == {
        0: error["resnet_att2_concat_pc_ls0.1-cut12"]}
    assert gaps["resnet_att2_concat_pc", "", f"160 epochs, {earlier}, QAT none, int8"].baseline_errors == {
        0: error["resnet164_ls0.1-cut12"], 1: error["resnet164_seed1"]}
    assert gaps["resnet_att2_concat_dp", "residual taps", f"160 epochs, {earlier}, QAT none, int8"
                ].attention_errors == {0: error["resnet_att2_concat_dp_residual"]}
    # Other recipes are compared among themselves: the full-width VGGs, and the batch-128 ResNets
    # over ResNet-164's two seeds of that recipe.
    full_width = gaps["vgg_att3_concat_pc", "", "width 1, 160 epochs, batch 256, lr 0.1, QAT none, int8"]
    assert full_width.baseline_errors == {0: error["vgg_w1"]}
    small_steps = gaps["resnet_att2_concat_pc", "", f"200 epochs, batch 128, lr 0.1, {earlier}, QAT none, int8"]
    assert small_steps.attention_errors == {0: error["resnet_att2_concat_pc_b128"]}
    assert small_steps.baseline_errors == {0: error["resnet164_b128"], 1: error["resnet164_b128_seed1"]}


def test_every_fast_recipe_file_is_its_seed_chosen_on_the_validation_split(monkeypatch) -> None:
    """The shipping rule: each fast-recipe zoo id ships the seed its recorded rule chooses from the
    validation errors of all its recipe's seeds we have cards for (at least three), never on the
    test set. The first zoo's files still shipped (chosen on the test set then, as their
    promotion notes say) are exactly the ones the recipes list as such."""
    from ltpa.maintainer.recipes import FIRST_ZOO_SHIPPED
    from ltpa.maintainer.selection import choose, selection_problems, validation_error

    monkeypatch.delenv("LTPA_ZOO", raising=False)
    shipped = read_manifest(DEFAULT_ZOO_DIR)["models"]
    kept = read_cards(reproduction_dir())
    runs = [(run, card) for card in shipped + kept if (run := run_of(card))]
    first_zoo = []
    for card in shipped:
        record = card.get("selection")
        if record is None:
            first_zoo.append(card["id"])
            continue
        assert selection_problems(card, kept) == [], card["id"]
        own = run_of(card)
        seeds = {other.get("trained_as", other["id"]): validation_error(other) for run, other in runs
                 if (run.registry_name, run.variant, run.recipe) == (own.registry_name, own.variant, own.recipe)}
        assert len(seeds) >= 3 and set(record["candidates"]) == set(seeds), card["id"]
        assert choose(seeds, record["rule"]) == card["trained_as"], card["id"]
    assert sorted(first_zoo) == sorted(FIRST_ZOO_SHIPPED)


def test_recipe_labels_say_how_a_run_differs_from_the_zoo_recipe() -> None:
    zoo = dict(zoo_recipe("resnet164"))
    assert zoo["batch_size"] == 512 and zoo["precision"] == "int4" and zoo_recipe("no_such") is None
    assert recipe_label(zoo_recipe("resnet164"), "resnet164") == ZOO_RECIPE_LABEL
    changed = tuple(sorted({**zoo, "weight_decay": 1e-4, "label_smoothing": 0.1}.items()))
    assert recipe_label(changed, "resnet164") == "weight decay 0.0001, label smoothing 0.1"
    # A card written before a setting existed takes that setting's default (what the run did).
    old = card("resnet164", 7.0, width=1.0, epochs=160, batch_size=512)
    del old["training"]["config"]["weight_decay"]
    assert dict(run_of(old).recipe)["weight_decay"] == 5e-4


def test_ltpa_baselines_prints_and_writes_the_table(tmp_path: Path, capsys) -> None:
    zoo = tmp_path / "models"
    zoo.mkdir()
    (zoo / "manifest.json").write_text(json.dumps({"models": [card("vgg_att3_concat_dp", 6.8),
                                                              card("vgg", 7.0)]}))
    (tmp_path / "reproduction" / "cards").mkdir(parents=True)
    (tmp_path / "reproduction" / "cards" / "vgg_seed1.json").write_text(
        json.dumps(card("vgg", 7.4, seed=1)))
    assert cli(["zoo", "baselines", "--zoo", str(zoo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| attention model | baseline | recipe |") and len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:2] == ["(VGG-att3)-concat-dp", "VGG"]
    assert "7.00 (seed 0), 7.40 (seed 1)" in cells and "-0.40" in cells and "0.40" in cells
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- section:baselines -->\nold\n<!-- /section:baselines -->\nend\n")
    assert cli(["zoo", "baselines", "--zoo", str(zoo), "--update-readme", str(readme)]) == 0
    assert readme.read_text() == ("intro\n<!-- section:baselines -->\n" + "\n".join(lines)
                                  + "\n<!-- /section:baselines -->\nend\n")
    assert gaps_markdown([]) == "No attention model has a measured error beside a baseline."


def test_run_logs_list_every_run_whose_log_is_there(tmp_path: Path) -> None:
    zoo, reproduction = tmp_path / "zoo", tmp_path / "reproduction"

    def with_log(entry: dict, folder: Path, log: str | None, write: bool = True) -> dict:
        if log is not None:
            entry["log"] = log
            if write:
                (folder / log).parent.mkdir(parents=True, exist_ok=True)
                (folder / log).write_text(json.dumps({"epochs": []}))
        return entry

    zoo.mkdir()
    (reproduction / "cards").mkdir(parents=True)
    shipped = with_log(dict(card("vgg", 7.0), id="vgg"), zoo, "logs/vgg.json")
    (zoo / "manifest.json").write_text(json.dumps({"models": [shipped]}))
    (tmp_path / "secret.json").write_text("{}")
    reproduction_cards = {
        "vgg_seed1": with_log(dict(card("vgg", 7.3, seed=1), id="vgg_seed1"), reproduction, "logs/a.json"),
        "vgg_ls0": with_log(dict(card("vgg", 7.1), id="vgg_ls0"), reproduction, "logs/b.json"),
        "vgg_nolog": with_log(dict(card("vgg", 7.1), id="vgg_nolog"), reproduction, None),
        "vgg_missing": with_log(dict(card("vgg", 7.1), id="vgg_missing"), reproduction,
                                "logs/gone.json", write=False),
        # A card's log path never leads out of its folder.
        "vgg_outside": with_log(dict(card("vgg", 7.1), id="vgg_outside"), reproduction, "../secret.json",
                                write=False),
        "vgg_unmeasured": with_log(dict(card("vgg", None), id="vgg_unmeasured"), reproduction, "logs/c.json"),
        # The same id as a shipped run: the shipped card wins.
        "vgg_again": with_log(dict(card("vgg", 9.9), id="vgg"), reproduction, "logs/d.json"),
    }
    reproduction_cards["vgg_ls0"]["training"]["config"]["label_smoothing"] = 0.0
    for name, entry in reproduction_cards.items():
        (reproduction / "cards" / f"{name}.json").write_text(json.dumps(entry))
    runs = {run.id: run for run in run_logs(zoo)}
    assert list(runs) == ["vgg", "vgg_ls0", "vgg_seed1"]  # shipped first, then by card file name
    assert runs["vgg"].path == (zoo / "logs" / "vgg.json").resolve()
    assert runs["vgg_seed1"].description.startswith("VGG · ") and runs["vgg_seed1"].description.endswith(
        " · seed 1")
    assert "label smoothing 0" in runs["vgg_ls0"].description
    assert all(run.registry_name == "vgg" for run in runs.values())


def test_shipped_and_reproduction_logs_are_all_listed() -> None:
    runs = {run.id: run for run in run_logs()}
    manifest = read_manifest()["models"]
    assert {entry["id"] for entry in manifest} <= set(runs)
    assert len(runs) == len(manifest) + len(read_cards(reproduction_dir()))
    # Labels say how each run's recipe differs from today's zoo recipe.
    assert runs["resnet_att2_concat_pc_ls0"].description == (
        "(RN-att2)-concat-pc · 160 epochs, cutout 12, QAT none, int8")
    assert runs["resnet_att2_concat_dp_residual"].description == (
        "(RN-att2)-concat-dp (residual taps) · 160 epochs, label smoothing 0.1, cutout 12, QAT none, int8")
    assert runs["resnet_att2_concat_pc"].description == "(RN-att2)-concat-pc (stage classifiers) · zoo recipe"
    assert runs["resnet164"].description == "ResNet-164 · zoo recipe · seed 1"


def test_runs_command_summarises_each_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    zoo = tmp_path / "zoo"
    (zoo / "logs").mkdir(parents=True)
    epochs = [{"epoch": 1, "test_acc": 0.80, "epoch_time_s": 30.0, "entropy": {"stage3": 0.9}},
              {"epoch": 2, "test_acc": None, "epoch_time_s": 30.0, "entropy": {}},
              {"epoch": 3, "test_acc": 0.93, "epoch_time_s": 60.0,
               "entropy": {"stage2": 0.4, "stage3": 0.7}},
              {"epoch": 4, "test_acc": 0.92, "epoch_time_s": 60.0, "entropy": {"stage2": 0.5}}]
    (zoo / "logs" / "pc.json").write_text(json.dumps({"epochs": epochs}))
    (zoo / "logs" / "bad.json").write_text("[1, 2]")
    models = [dict(card("resnet_att2_concat_pc", 7.9), id="pc", log="logs/pc.json"),
              dict(card("resnet164", 7.5), id="bad", log="logs/bad.json"),
              dict(card("vgg", 7.0), id="vgg", log="logs/pc.json")]
    (zoo / "manifest.json").write_text(json.dumps({"models": models}))
    runs = {run.id: run for run in run_logs(zoo)}
    row = run_summary(runs["pc"])
    assert row["epochs"] == 4 and row["last test error %"] == pytest.approx(8.0)
    assert row["lowest test error %"] == "7.00 (epoch 3)" and row["stored file error %"] == 7.9
    assert row["lowest attention entropy"] == "0.40 (stage2, epoch 3)"
    assert row["training min"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="not a training log"):
        run_summary(runs["bad"])
    assert cli(["zoo", "runs", "--zoo", str(zoo), "--model", "resnet_att2_concat_pc",
                "--model", "resnet164"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| pc | (RN-att2)-concat-pc") and "| 8.00 |" in lines[2]
    assert lines[3].startswith("| bad |") and "unreadable log" in lines[3] and "| 7.50 |" in lines[3]
    assert cli(["zoo", "runs", "--zoo", str(zoo), "--model", "no_such_model"]) == 2
    capsys.readouterr()
    # A folder that is no zoo is named, not listed as a zoo without runs.
    assert cli(["zoo", "runs", "--zoo", str(tmp_path / "empty")]) == 2
    assert f"ltpa zoo runs: error: no model zoo at {tmp_path / 'empty'}" in capsys.readouterr().err
    # A zoo whose cards name no log they have lists none.
    (zoo / "manifest.json").write_text(json.dumps({"models": [dict(card("vgg", 7.0), id="vgg")]}))
    assert cli(["zoo", "runs", "--zoo", str(zoo)]) == 0
    assert capsys.readouterr().out.strip() == "No run with a training log."


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"epochs": 3}', '{"epochs": [1]}', "{}"])
def test_a_file_that_is_not_a_training_log_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "log.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="log.json: not a training log"):
        read_log_epochs(path)
    with pytest.raises(ValueError, match="not a training log"):
        read_log_epochs(tmp_path / "missing.json")
    path.write_text('{"epochs": [{"epoch": 1}]}')
    assert read_log_epochs(path) == [{"epoch": 1}]


def test_any_changed_model_argument_makes_a_variant_of_its_own() -> None:
    cards = [card("vgg_att3_concat_pc", 7.0), card("vgg_att3_concat_pc", 6.0, dropout=0.3),
             card("vgg", 7.2), card("vgg", 5.0, dropout=0.3),
             card("resnet_att2_concat_pc", 7.5), card("resnet164", 7.4),
             card("resnet164", 6.0, depth=56, seed=1),  # another network: not the default's baseline
             card("resnet_att2_concat_pc", 6.5, depth=56, seed=1, tap_features="residual")]
    gaps = {(g.attention, g.variant): g for g in baseline_gaps(cards)}
    assert set(gaps) == {("vgg_att3_concat_pc", ""), ("vgg_att3_concat_pc", "dropout 0.3"),
                         ("resnet_att2_concat_pc", ""), ("resnet_att2_concat_pc", "residual taps, depth 56")}
    # An attention-only argument (tap_features) does not apply to the baseline; depth does.
    shallow = gaps["resnet_att2_concat_pc", "residual taps, depth 56"]
    assert shallow.baseline_variant == "depth 56" and shallow.baseline_errors == {1: 6.0}
    assert gaps["vgg_att3_concat_pc", ""].attention_errors == {0: 7.0}
    assert gaps["vgg_att3_concat_pc", "dropout 0.3"].attention_errors == {0: 6.0}
    # A changed argument the baseline shares puts the baseline built the same way beside it.
    dropout = gaps["vgg_att3_concat_pc", "dropout 0.3"]
    assert dropout.baseline_errors == {0: 5.0} and dropout.baseline_variant == "dropout 0.3"
    assert gap_rows([dropout])[0]["baseline"] == "VGG (dropout 0.3)"
    assert gaps["resnet_att2_concat_pc", ""].baseline_errors == {0: 7.4}
    # A width in the kwargs is the recipe's business, and the known variants keep their words.
    assert variant_of("vgg", {"width": 0.7}) == ""
    assert variant_of("resnet_att2_concat_dp", {"tap_features": "residual", "dp_scale": "none"}) == (
        "unscaled dp, residual taps")


def test_a_deviation_from_the_papers_normalisation_is_a_group_of_its_own() -> None:
    cards = [card("vgg_att3_concat_pc", 7.0), card("vgg_att3_concat_pc", 6.6, seed=1),
             card("vgg_att3_concat_pc", 6.9, seed=2, normalisation="softmax"),  # the paper's, said explicitly
             card("vgg_att3_concat_pc", 6.0, normalisation="sigmoid_sum"),
             card("vgg_att3_concat_pc", 6.2, seed=1, normalisation="sigmoid_sum"),
             card("vgg", 7.2), card("vgg", 7.6, seed=1)]
    assert variant_of("vgg_att3_concat_pc", {"normalisation": "sigmoid_sum"}) == "sigmoid_sum normalisation"
    assert variant_of("vgg_att3_concat_pc", {"normalisation": "softmax"}) == ""
    gaps = {(g.attention, g.variant): g for g in baseline_gaps(cards)}
    assert set(gaps) == {("vgg_att3_concat_pc", ""), ("vgg_att3_concat_pc", "sigmoid_sum normalisation")}
    paper = gaps["vgg_att3_concat_pc", ""]
    assert paper.attention_errors == {0: 7.0, 1: 6.6, 2: 6.9}
    # The deviation is set beside the same plain VGG (it has no maps to normalise), seed by seed.
    deviation = gaps["vgg_att3_concat_pc", "sigmoid_sum normalisation"]
    assert deviation.attention_errors == {0: 6.0, 1: 6.2} and deviation.baseline_errors == {0: 7.2, 1: 7.6}
    assert deviation.baseline == "vgg" and deviation.baseline_variant == ""
    assert deviation.mean_gap == pytest.approx(6.1 - 7.4)
    # Listed after the paper's model, named as the app names it.
    rows = gap_rows(baseline_gaps(cards))
    assert [r["attention model"] for r in rows] == [
        "(VGG-att3)-concat-pc", "(VGG-att3)-concat-pc (sigmoid_sum normalisation)"]
    assert rows[1]["baseline"] == "VGG"


def test_each_shipped_model_has_its_recipes_seed_errors(monkeypatch) -> None:
    from ltpa.maintainer.baselines import shipped_seed_errors

    monkeypatch.delenv("LTPA_ZOO", raising=False)
    errors = shipped_seed_errors()
    shipped = read_manifest(DEFAULT_ZOO_DIR)["models"]
    assert set(errors) == {card["id"] for card in shipped}
    kept = {card["id"]: card["test_error"] for card in read_cards(reproduction_dir())}
    # VGG-att3-pc ships seed 1; its seeds 0 and 2 are kept; the first zoo's runs of that network
    # (another recipe) and the sigmoid_sum deviation (another variant) stay out.
    att3 = next(card for card in shipped if card["id"] == "vgg_att3_concat_pc")
    assert errors["vgg_att3_concat_pc"] == {0: kept["vgg_att3_concat_pc_fast"], 1: att3["test_error"],
                                            2: kept["vgg_att3_concat_pc_fast_seed2"]}
    assert errors["vgg_att3_concat_pc_sigmoid_sum"][0] == kept["vgg_att3_concat_pc_sigmoid_sum_fast"]
    assert all(len(errors[model_id]) == 3 for model_id in ("vgg_att1_concat_pc", "vgg_att2_concat_pc", "vgg"))


def test_kept_logs_are_gzipped_byte_for_byte_the_same_and_read_back(tmp_path) -> None:
    from ltpa.maintainer.shipping import log_name, write_log

    log = tmp_path / "log.json"
    log.write_text(json.dumps({"epochs": [{"epoch": 1, "test_error": 50.0}]}))
    first = write_log(log, tmp_path / "a" / log_name("x"))
    second = write_log(log, tmp_path / "b" / log_name("x"))
    assert first.name == "x.json.gz" and first.read_bytes() == second.read_bytes()  # no time stamp
    assert len(first.read_bytes()) < len(log.read_bytes()) + 40
    assert read_log_epochs(first) == read_log_epochs(log) == [{"epoch": 1, "test_error": 50.0}]
    assert write_log(first, tmp_path / "plain.json").read_bytes() == log.read_bytes()
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.json.gz: not a training log"):
        read_log_epochs(tmp_path / "bad.json.gz")
    # Every log the zoo ships or keeps is gzipped, and every card's log is there.
    for folder in (DEFAULT_ZOO_DIR, reproduction_dir(DEFAULT_ZOO_DIR)):
        assert not list((folder / "logs").glob("*.json")), folder
    for card, folder in run_cards(DEFAULT_ZOO_DIR):
        assert card["log"].endswith(".json.gz") and read_log_epochs(folder / card["log"]), card["id"]
