"""The Models page through AppTest: cards, errors against the paper, curves from the logs,
per-class accuracy and confusion matrix, and graceful gaps when a card lacks them."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app_helpers import (MODELS, as_read, captions, decode_plotly, errors, figures_titled, start_app,
                         start_with_empty_zoo)
from ltpa.maintainer.paper import paper_comparison, paper_table_rows
from ltpa.zoo import PAPER_CIFAR10_ERROR
from pages.ui import state

PAPER = {"vgg": 7.77, "vgg_gap": 9.87, "vgg_att3_concat_pc": 6.34}


@pytest.fixture()
def rich_zoo(tiny_zoo_dir, tmp_path, monkeypatch):
    """The tiny zoo with the measured fields a trained zoo's cards carry, and training logs."""
    folder = tmp_path / "zoo"
    shutil.copytree(tiny_zoo_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "logs").mkdir()
    rng = np.random.default_rng(0)
    for index, card in enumerate(manifest["models"]):
        confusion = rng.integers(0, 30, size=(10, 10)) + np.eye(10, dtype=int) * (800 + 10 * index)
        card["test_error"] = round(5.0 + index, 2)
        card["confusion"] = confusion.tolist()
        card["per_class_accuracy"] = dict(zip(card["class_names"], (confusion.diagonal() / confusion.sum(1)).tolist()))
        card["training"] = {"command": f"ltpa train-zoo --ids {card['id']}", "epochs": 3,
                            "wall_time_s": 120.0, "hardware": "test GPU", "images_per_s": 1000.0}
        card["log"] = f"logs/{card['id']}.json"
        epochs = [{"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.5 + 0.1 * e,
                   "test_loss": None if e == 2 else 2.2 / e, "test_acc": None if e == 2 else 0.45 + 0.1 * e,
                   "lr": 0.1, "epoch_time_s": 40.0,
                   "entropy": {stage: 1.0 - 0.1 * e for stage in card["stages"]}} for e in (1, 2, 3)]
        (folder / card["log"]).write_text(json.dumps({"epochs": epochs}))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("LTPA_ZOO", str(folder))
    return manifest["models"]


def _models_page(at):
    at.switch_page(MODELS).run()
    assert not at.exception, at.exception
    assert not errors(at)
    return at


def test_table_sets_our_errors_against_the_paper(rich_zoo):
    at = _models_page(start_app())
    table = at.dataframe[0].value.set_index("id")
    for card in rich_zoo:
        assert table.loc[card["id"], "test error % (ours)"] == card["test_error"]
        paper = PAPER.get(card["id"])
        if paper is None:
            assert np.isnan(table.loc[card["id"], "test error % (paper)"])
        else:
            assert table.loc[card["id"], "test error % (paper)"] == paper
            assert table.loc[card["id"], "ours − paper"] == pytest.approx(card["test_error"] - paper)
    (figure,) = figures_titled(at, "Test error: ours vs paper")
    ours = figure["data"][0]
    np.testing.assert_allclose(decode_plotly(ours["y"]), [c["test_error"] for c in rich_zoo])
    assert any("JPEG" in m.value for m in at.markdown)


def test_paper_table_sets_the_shipped_zoos_seed_means_against_table_1(monkeypatch):
    monkeypatch.delenv("LTPA_ZOO", raising=False)  # the real shipped zoo and its reproduction cards
    at = _models_page(start_app())
    assert at.radio(key="models.accuracy_view").value == "files"  # the shipped files first
    at.radio(key="models.accuracy_view").set_value("paper").run()
    assert not at.exception and not errors(at)
    expected = paper_comparison()
    table = at.dataframe[0].value.set_index("paper model")
    labels = [r["paper model"] for r in paper_table_rows(expected)]
    assert list(table.index) == labels
    for row, label in zip(expected, labels):
        shown = table.loc[label]
        if row.deviation:  # a shipped deviation from the paper's model: no paper figure to meet
            assert label.startswith(row.paper_name) and shown["shipped as"] == row.shipped_id
            assert shown["seeds"] == row.seeds and pd.isna(shown["seed mean − paper"])
            continue
        assert shown["paper error %"] == PAPER_CIFAR10_ERROR[row.registry_name]
        if not row.shipped:
            assert shown["shipped as"] == "not shipped" and shown["seeds"] == 0
            assert np.isnan(shown["seed mean error %"])
            continue
        assert shown["shipped as"] == row.shipped_id
        assert shown["shipped file error %"] == row.shipped_error
        assert shown["seed mean error %"] == pytest.approx(round(row.mean_error, 2))
        assert shown["seeds"] == row.seeds
        assert shown["seed mean − paper"] == pytest.approx(round(row.mean_error - row.paper_error, 2))
    assert table.loc["(VGG-att2)-concat-pc", "shipped as"] == "vgg_att2_concat_pc"
    assert table.loc["(VGG-att3)-concat-pc", "seeds"] >= 3
    assert any("JPEG" in c and "Table 1" in c and "quoted from the manifest" in c for c in captions(at))
    # The gap table still follows; the files view comes back with its chart.
    assert "attention model" in at.dataframe[1].value.columns
    at.radio(key="models.accuracy_view").set_value("files").run()
    assert "test error % (ours)" in at.dataframe[0].value.columns
    assert figures_titled(at, "Test error: ours vs paper")


def test_paper_table_of_a_zoo_without_measurements(tiny_zoo):
    at = _models_page(start_app())
    at.radio(key="models.accuracy_view").set_value("paper").run()
    assert not at.exception and not errors(at)
    table = at.dataframe[0].value.set_index("paper model")
    assert table.loc["(VGG-att3)-concat-pc", "shipped as"] == "vgg_att3_concat_pc"
    assert table.loc["(VGG-att3)-concat-pc", "seeds"] == 0
    assert table.loc["ResNet-164", "shipped as"] == "not shipped"


def test_attention_sits_beside_its_baseline_with_the_reproduction_runs(rich_zoo, tmp_path):
    error = {c["id"]: c["test_error"] for c in rich_zoo}
    # A second seed of the baseline, kept (card only) in reproduction/ beside the zoo folder.
    repeat = dict(next(c for c in rich_zoo if c["id"] == "vgg"), id="vgg_seed1", test_error=9.5)
    repeat["training"] = {**repeat["training"], "config": {"seed": 1, "epochs": 3}}
    (tmp_path / "reproduction" / "cards").mkdir(parents=True)
    (tmp_path / "reproduction" / "cards" / "vgg_seed1.json").write_text(json.dumps(repeat))
    at = _models_page(start_app())
    gaps = at.dataframe[1].value.set_index("attention model")
    assert list(gaps.index) == ["(VGG-att3)-concat-pc", "(VGG-att3)-concat-dp",
                                 "(RN-att2)-concat-pc (depth 11)"]  # the tiny zoo's small ResNet
    pc = gaps.loc["(VGG-att3)-concat-pc"]
    assert pc["baseline"] == "VGG"
    assert pc["baseline error %"] == f"{error['vgg']:.2f} (seed 0), 9.50 (seed 1)"
    assert pc["mean gap (points)"] == pytest.approx(
        round(error["vgg_att3_concat_pc"] - (error["vgg"] + 9.5) / 2, 2))
    assert pc["gap per seed"] == f"{error['vgg_att3_concat_pc'] - error['vgg']:+.2f} (seed 0)"
    assert pc["baseline seed spread"] == pytest.approx(round(9.5 - error["vgg"], 2))
    # The tiny zoo has no ResNet-164: the attention ResNet is listed without a gap.
    assert gaps.loc["(RN-att2)-concat-pc (depth 11)", "baseline error %"] == "—"
    assert np.isnan(gaps.loc["(RN-att2)-concat-pc (depth 11)", "mean gap (points)"])


def test_card_shows_curves_per_class_and_confusion_from_the_files(rich_zoo):
    at = _models_page(start_app())
    card = rich_zoo[0]  # the model picker starts on the first model
    (curves,) = figures_titled(at, "Training of")
    test_error = next(t for t in curves["data"] if t["name"] == "test error")
    np.testing.assert_allclose(decode_plotly(test_error["x"]), [1, 2, 3])
    shown = [None if v is None else float(v) for v in test_error["y"]] if isinstance(test_error["y"], list) \
        else decode_plotly(test_error["y"]).tolist()
    assert shown[0] == pytest.approx(100 * (1 - 0.55)) and shown[1] is None or np.isnan(shown[1])
    assert {t["name"] for t in curves["data"]} >= {f"entropy {s}" for s in card["stages"]}
    (confusion,) = figures_titled(at, "Confusion matrix")
    rates = decode_plotly(confusion["data"][0]["z"])
    counts = np.asarray(card["confusion"], dtype=float)
    np.testing.assert_allclose(rates, counts / counts.sum(1, keepdims=True))
    (per_class,) = figures_titled(at, "Per-class accuracy:")
    np.testing.assert_allclose(decode_plotly(per_class["data"][0]["y"]),
                               [100 * v for v in card["per_class_accuracy"].values()])


def test_a_promoted_card_says_which_run_it_was_and_why(rich_zoo):
    folder = Path(os.environ["LTPA_ZOO"])
    manifest = json.loads((folder / "manifest.json").read_text())
    first = manifest["models"][0]  # the model picker starts on the first model
    first["trained_as"] = f"{first['id']}_ls0-cut16_seed1"
    first["promotion_note"] = "the better of two seeds on the test set"
    first["training"]["config"] = {"seed": 1}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    at = _models_page(start_app())
    assert (f"Shipped from the run `{first['id']}_ls0-cut16_seed1` (seed 1): the better of two "
            "seeds on the test set") in [i.value for i in at.info]
    # A card trained under its own id says nothing of the kind.
    at.selectbox(key="model.backbone").select("resnet").run()
    assert not [i.value for i in at.info if i.value.startswith("Shipped from the run")]


def test_model_chosen_here_is_the_home_pages_model(rich_zoo):
    at = _models_page(start_app())
    at.selectbox(key="model.backbone").select("resnet").run()
    assert at.session_state[state.MODEL_ID] == "resnet_att2_concat_pc"
    assert figures_titled(at, "Training of (RN-att2)-concat-pc")
    at.switch_page("app.py").run()
    assert at.selectbox(key="model.backbone").value == "resnet"
    assert at.session_state[state.MODEL_ID] == "resnet_att2_concat_pc"
    assert at.subheader[0].value.startswith("Prediction:")


def test_cards_without_measurements_leave_clear_gaps(tiny_zoo):
    at = _models_page(start_app())
    infos = [i.value for i in at.info]
    assert "No shipped model has a measured test error yet." in infos
    assert "No attention model in the zoo has a measured error beside a baseline." in infos
    assert "No training log is shipped with this model." in infos
    assert "No confusion matrix in this card." in infos


def test_models_page_with_an_empty_zoo(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, MODELS)


def _reproduction_run(rich_zoo, tmp_path, run_id: str, epochs) -> dict:
    """A card and log in reproduction/ beside the zoo: a variant of the first shipped model."""
    first = rich_zoo[0]
    entry = dict(first, id=run_id, test_error=4.0, log=f"logs/{run_id}.json")
    entry["training"] = {**first["training"], "config": {"epochs": 3, "label_smoothing": 0.0}}
    folder = tmp_path / "reproduction"
    (folder / "cards").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "cards" / f"{run_id}.json").write_text(json.dumps(entry))
    (folder / entry["log"]).write_text(epochs if isinstance(epochs, str) else json.dumps({"epochs": epochs}))
    return entry


def test_training_runs_are_compared_with_the_models_other_runs(rich_zoo, tmp_path):
    first = rich_zoo[0]
    _reproduction_run(rich_zoo, tmp_path, "variant_ls0",
                      [{"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.6 + 0.1 * e} for e in (1, 2)])
    _reproduction_run(rich_zoo, tmp_path, "variant_broken", "{not json")
    at = _models_page(start_app())
    runs = at.multiselect(key=f"models.compare_runs.{first['id']}")
    # The chosen model beside its other runs; a damaged log is named and left out.
    assert runs.value == [first["id"], "variant_broken", "variant_ls0"]
    assert "variant_broken" in at.warning[0].value
    (figure,) = figures_titled(at, "Training runs compared: test error (%)")
    assert [t["name"] for t in figure["data"]] == [first["id"], "variant_ls0"]
    np.testing.assert_allclose(decode_plotly(figure["data"][1]["y"]), [30.0, 20.0])
    at.selectbox(key="models.compare_metric").select("train loss").run()
    (figure,) = figures_titled(at, "Training runs compared: train loss")
    np.testing.assert_allclose(decode_plotly(figure["data"][1]["y"]), [1.0, 0.5])
    # Any logged run can be added, and all can be taken away.
    other = rich_zoo[1]["id"]
    runs.set_value([other]).run()
    (figure,) = figures_titled(at, "Training runs compared")
    assert [t["name"] for t in figure["data"]] == [other]
    at.multiselect(key=f"models.compare_runs.{first['id']}").set_value([]).run()
    assert not figures_titled(at, "Training runs compared")
    assert "Choose runs to compare." in [i.value for i in at.info]
    assert not at.exception


def test_a_log_with_text_for_numbers_is_named_not_a_crash(rich_zoo, tmp_path):
    first = rich_zoo[0]
    _reproduction_run(rich_zoo, tmp_path, "variant_text", [{"epoch": 1, "test_acc": "high"}])
    at = _models_page(start_app())
    assert any("not numbers" in w.value for w in at.warning)
    assert not figures_titled(at, "Training runs compared")
    at.multiselect(key=f"models.compare_runs.{first['id']}").set_value([first["id"]]).run()
    assert figures_titled(at, "Training runs compared") and not at.exception


def test_a_damaged_shipped_log_is_named_and_the_card_still_shows(rich_zoo):
    first = rich_zoo[0]
    (Path(os.environ["LTPA_ZOO"]) / first["log"]).write_text('{"epochs": "many"}')
    at = _models_page(start_app())
    assert any(first["log"] in w.value and "cannot be read" in w.value for w in at.warning)
    assert not figures_titled(at, "Training of") and figures_titled(at, "Confusion matrix")
    # The comparison leaves that run out and says so.
    assert any(first["id"] in w.value for w in at.warning if "Unreadable" in w.value)


def test_log_axis_reads_as_numbers_and_confusion_labels_have_room(rich_zoo, tmp_path):
    first = rich_zoo[0]
    _reproduction_run(rich_zoo, tmp_path, "variant_ls0",
                      [{"epoch": e, "train_loss": 1.0 / e, "test_acc": 0.6 + 0.1 * e} for e in (1, 2, 3)])
    at = _models_page(start_app())
    (figure,) = figures_titled(at, "Training runs compared: test error (%)")
    axis = figure["layout"]["yaxis"]
    assert axis["type"] == "log"
    ticks = list(decode_plotly(axis["tickvals"]))
    # Whole numbers at 1-2-5 steps around the data (10 to 30 %), each labelled in full.
    assert {10.0, 20.0}.issubset(ticks) and all(t in (1, 2, 5) or str(int(t))[0] in "125" for t in ticks)
    assert list(axis["ticktext"]) == [f"{t:g}" for t in ticks]
    (confusion,) = figures_titled(at, "Confusion matrix")
    assert confusion["layout"]["xaxis"]["automargin"] and confusion["layout"]["yaxis"]["automargin"]
    assert confusion["layout"]["margin"]["l"] >= 90 and confusion["layout"]["margin"]["b"] >= 90
    assert not at.exception


def test_card_shows_its_attention_quality_beside_the_centre_prior(rich_zoo):
    folder = Path(os.environ["LTPA_ZOO"])
    manifest = json.loads((folder / "manifest.json").read_text())
    first = manifest["models"][0]  # the model picker starts on the first model
    scores = {"pointing": 0.75, "jaccard": {"fraction": 0.1, "top": 0.44, "mass": 0.3, "otsu": 0.43}}
    prior = {"pointing": 0.96, "jaccard": {"fraction": 0.426, "top": 0.422, "mass": 0.42, "otsu": 0.428}}
    first["attention_entropy"] = {"layer10": 0.87654}
    first["attention_quality"] = {"dataset": "test horses", "images": 7, "thresholds": {},
                                  "maps": {"layer10": scores}, "centre_prior": prior}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    at = _models_page(start_app())
    table = next(d.value for d in at.dataframe if "pointing" in d.value.columns)
    assert list(table["map"]) == ["layer10", "centre prior"]
    assert list(table["pointing"]) == [0.75, 0.96]
    assert table["test entropy"][0] == pytest.approx(0.877) and np.isnan(table["test entropy"][1])
    assert list(table["J top"]) == [0.44, 0.422]
    assert any("On test horses (7 images)" in c for c in captions(at))
    # A card without the section says why there is no table.
    at.selectbox(key="model.backbone").select("resnet").run()
    assert "This card records no attention quality: the model has no map to score." in [i.value for i in at.info]


def test_card_shows_how_its_seed_was_chosen_and_warns_when_that_cannot_be_checked(rich_zoo):
    folder = Path(os.environ["LTPA_ZOO"])
    manifest = json.loads((folder / "manifest.json").read_text())
    first = manifest["models"][0]  # the model picker starts on the first model
    run = f"{first['id']}_seed1"
    first.update(trained_as=run, validation_error_flip=7.2)
    first["selection"] = {"rule": "lowest_validation_error", "rule_text": "the seed with the lowest validation error",
                          "chosen": run, "candidates": {run: 7.2, f"{first['id']}_seed2": 7.5}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    at = _models_page(start_app())
    assert any("**How this seed was chosen**: the seed with the lowest validation error" in m.value
               for m in at.markdown)
    table = next(d.value for d in at.dataframe if "validation error %" in d.value.columns)
    assert list(table["run"]) == [run, f"{first['id']}_seed2"] and list(table["shipped"]) == [True, False]
    # The other seed's card is not in the reproduction folder: the choice cannot be confirmed.
    assert any(f"the card of seed run '{first['id']}_seed2'" in as_read(w.value) and "is missing" in w.value
               for w in at.warning)
