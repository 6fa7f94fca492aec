"""Training, evaluation and the shipped zoo, end to end on CPU."""
from __future__ import annotations

import argparse
import gzip
import json
import re
import shlex
from dataclasses import asdict
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ltpa
from sample_images import COLOURS, make_folder
from ltpa.cli import main as cli
from ltpa.compiling import repeated_blocks
from ltpa.data import DatasetError, DeviceLoader, ImageSet, load_dataset
from ltpa.maintainer.recipes import RECIPES, parse_settings, recipe_config, settings_arguments
from ltpa.maintainer.shipping import FIXTURE_DIR, fixture_predictions, train_zoo
from ltpa.maintainer import shipping
from ltpa import training
from ltpa.training import STATE_FILE, TrainConfig, Trainer, evaluate, one_cycle, replays_cuda_graphs
from ltpa.zoo import list_zoo, load_zoo_model, read_manifest, DEFAULT_ZOO_DIR
from ltpa.checkpoint import PRECISIONS, file_sha256

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), {"train": 12, "test": 4})


def train_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "vgg_att3_concat_pc", "--data", str(data), "--out", str(out), "--width", "0.125",
            "--epochs", str(epochs), "--batch-size", "12", "--device", "cpu", "--lr", "0.05"]


def test_train_cli_then_eval_loads_the_checkpoint(tiny_data: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert cli(train_args(tiny_data, out, 2)) == 0
    log = json.loads((out / "log.json").read_text())
    # The last line names every scoring the run logged (the recipe's headline is the TTA one).
    last = log["epochs"][-1]
    errors = [100 * (1 - last[key]) for key in ("test_acc", "test_acc_flip", "test_acc_tta")]
    assert (f"done: {out}/model.pt, test error {errors[0]:.2f}% (flip {errors[1]:.2f}%, "
            f"flip+translate {errors[2]:.2f}%)") in capsys.readouterr().out
    assert [row["epoch"] for row in log["epochs"]] == [1, 2]
    for row in log["epochs"]:
        assert set(row) >= {"train_loss", "train_acc", "test_acc", "lr", "epoch_time_s", "entropy"}
    # The recipe scores every 5 epochs and after the last: epoch 1 has no held-out scores.
    first, last = log["epochs"]
    assert first["entropy"] == {} and first["test_acc"] is None
    assert set(last["entropy"]) == {"layer7", "layer10", "layer13"}
    assert all(0.0 <= v <= 1.0 for v in last["entropy"].values())
    model, meta = ltpa.load_checkpoint(out / "model.pt")
    assert meta["class_names"] == sorted(COLOURS)
    assert meta["training"]["epochs"] == 2
    report_dir = tmp_path / "eval"
    assert cli(["eval", str(out / "model.pt"), "--data", str(tiny_data), "--device", "cpu",
                "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "eval.json").read_text())
    assert report["images"] == 12
    assert np.array(report["confusion"]).sum() == 12
    assert 0.0 <= report["top1_error"] <= 100.0
    assert (report_dir / "confusion.csv").read_text().splitlines()[0].startswith("true")


def test_final_errors_name_each_scoring_a_row_holds() -> None:
    from ltpa.training import final_errors_text
    assert final_errors_text({"test_acc": 0.9, "test_acc_flip": 0.91, "val_acc": 0.8,
                              "val_acc_flip": None}) == \
        "test error 10.00% (flip 9.00%); validation error 20.00%"
    assert final_errors_text({"epoch": 1, "test_acc": None}) == ""


def test_resume_continues_from_the_saved_epoch(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stop_after_first = {"epochs": 0}

    def interrupt(row: dict) -> None:
        stop_after_first["epochs"] += 1
        raise KeyboardInterrupt

    config = TrainConfig(model="vgg_att3_concat_dp", data=str(tiny_data), out=str(out), width=0.125,
                         epochs=3, batch_size=12, device="cpu")
    with pytest.raises(KeyboardInterrupt, match="resume"):
        Trainer(config, on_epoch=interrupt).run()
    saved = torch.load(out / STATE_FILE, weights_only=True)
    assert saved["epoch"] == 1  # the interrupted run lost nothing it had finished
    assert cli(["train", "--resume", str(out)]) == 0
    log = json.loads((out / "log.json").read_text())["epochs"]
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert torch.load(out / STATE_FILE, weights_only=True)["epoch"] == 3


def test_resumed_run_matches_an_uninterrupted_one(tiny_data: Path, tmp_path: Path) -> None:
    base = dict(model="vgg", data=str(tiny_data), width=0.125, epochs=2, batch_size=12, device="cpu")
    Trainer(TrainConfig(out=str(tmp_path / "straight"), **base)).run()

    def interrupt(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(out=str(tmp_path / "split"), **base), on_epoch=interrupt).run()
    Trainer(TrainConfig(out=str(tmp_path / "split"), **base)).run()
    straight = torch.load(tmp_path / "straight" / STATE_FILE, weights_only=True)["model"]
    split = torch.load(tmp_path / "split" / STATE_FILE, weights_only=True)["model"]
    for key in straight:
        assert torch.allclose(straight[key].float(), split[key].float(), atol=1e-5), key


def test_resuming_refuses_settings_that_define_another_run(tiny_data: Path, tmp_path: Path) -> None:
    base = dict(model="vgg_gap", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                epochs=2, batch_size=12, device="cpu")

    def interrupt(row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(**base), on_epoch=interrupt).run()
    for changed, message in (({"lr": 0.5}, "lr (saved 0.1, now 0.5)"),
                             ({"epochs": 3}, "epochs (saved 2, now 3)"),
                             ({"width": 0.25}, "width (saved 0.125, now 0.25)"),
                             ({"seed": 1}, "seed")):
        with pytest.raises(ValueError, match=re.escape(message)):
            Trainer(TrainConfig(**{**base, **changed})).run()
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["epoch"] == 1  # untouched
    # Where and how fast it runs may change; more epochs only when asked for.
    Trainer(TrainConfig(**{**base, "eval_every": 2, "device": "auto"})).run()
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["epoch"] == 2
    Trainer(TrainConfig(**{**base, "epochs": 3}), extend=True).run()
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["epoch"] == 3


def test_train_zoo_resumes_an_interrupted_variant_on_another_machine(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "zoo"
    train_epoch = Trainer._train_epoch

    def lost_at_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", lost_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_zoo(["vgg_gap"], str(tiny_data), runs, zoo, device="cpu", compile_model=False,
                  epochs=2, variant="fast", settings={"lr": 0.05})
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    capsys.readouterr()
    # Elsewhere: the same recipe, now with CUDA graphs asked for (how fast, not what is learnt).
    (card,) = train_zoo(["vgg_gap"], str(tiny_data), runs, zoo, device="cpu", compile_model=False,
                        epochs=2, variant="fast",
                        settings={"lr": 0.05, "compile_mode": "reduce-overhead"})
    log = json.loads((runs / "vgg_gap_fast" / "log.json").read_text())["epochs"]
    assert [row["epoch"] for row in log] == [1, 2] and card["training"]["epochs"] == 2
    assert card["training"]["config"]["compile_mode"] == "reduce-overhead"
    assert f"resuming {runs / 'vgg_gap_fast'} after epoch 1" in capsys.readouterr().err


def test_train_zoo_refuses_to_continue_a_run_of_another_recipe(tiny_data: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    args = ["zoo", "train", "--ids", "vgg_gap", "--data", str(tiny_data), "--runs", str(tmp_path / "runs"),
            "--zoo", str(tmp_path / "zoo"), "--epochs", "1", "--no-compile", "--device", "cpu",
            "--variant", "fast"]
    assert cli(args + ["--set", "lr=0.05"]) == 0
    # The same variant name for another change would silently mix two recipes in one run.
    assert cli(args + ["--set", "lr=0.2"]) == 2
    assert "lr (saved 0.05, now 0.2)" in capsys.readouterr().err


def test_quantisation_aware_run_ships_the_accuracy_it_logged(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "qat"
    assert cli(train_args(tiny_data, out, 2) + ["--qat", "int4", "--qat-epochs", "1"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["qat"] == "int4" and log["config"]["qat_epochs"] == 1
    model, meta = ltpa.load_checkpoint(out / "model.pt")  # the run's own file keeps fp32 weights
    int4, _ = ltpa.load_checkpoint(ltpa.save_checkpoint(tmp_path / "int4.pt", model, meta, "int4"))
    _, test = load_dataset(str(tiny_data))
    loader = DeviceLoader(test, 100, meta["mean"], meta["std"], train=False)
    # The last epoch was evaluated with the weights rounded as int4 storage rounds them.
    logged = log["epochs"][-1]["test_loss"]
    int4_loss, fp32_loss = evaluate(int4, loader, 3).loss, evaluate(model, loader, 3).loss
    assert int4_loss == pytest.approx(logged, rel=1e-5)
    # ...not with the fp32 weights: those miss the logged loss by more (how much depends on the
    # run; without dropout in the recipe, by about 1e-5 of it on this tiny model).
    assert abs(fp32_loss - logged) > abs(int4_loss - logged)


@pytest.mark.parametrize("settings, message", [
    ({"qat": "int3", "qat_epochs": 1}, "qat must be one of"),
    ({"qat": "int4", "qat_epochs": 0}, "qat_epochs must be between 1 and epochs"),
    ({"qat": "int4", "qat_epochs": 5}, "qat_epochs must be between 1 and epochs"),
    ({"compile_mode": "fastest"}, "compile_mode must be one of"),
])
def test_bad_training_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(epochs=4, **settings)


def test_every_zoo_recipe_is_a_valid_run_and_shortening_keeps_its_qat_share() -> None:
    for model_id in RECIPES:
        config, precision = recipe_config(model_id, "cifar10", "runs/x")
        assert precision in PRECISIONS and config.model == RECIPES[model_id]["model"]
    config, precision = recipe_config("vgg_att3_concat_pc", "cifar10", "runs/x", epochs=10)
    assert (config.epochs, config.qat, config.qat_epochs, precision) == (10, "int4", 2, "int4")
    config, precision = recipe_config("resnet164", "cifar10", "runs/x", epochs=3, seed=4)
    assert (config.epochs, config.qat, config.qat_epochs, config.seed, precision) == (3, "int4", 1, 4, "int4")
    # The small-step ResNet recipes keep the ResNet recipe they were trained beside (label
    # smoothing 0.1, cutout 12) and differ from it only in the step and schedule settings.
    # That is the first zoo's ResNet recipe, which today's fast recipe replaced.
    from ltpa.maintainer.recipes import FIRST_ZOO_RECIPES
    first_zoo = FIRST_ZOO_RECIPES["resnet_att2_concat_dp"]
    changed = {"epochs": 200, "batch_size": 128, "lr": 0.1, "label_smoothing": 0.1, "cutout": 12}
    assert RECIPES["resnet_att2_concat_dp_b128"] == {**first_zoo, **changed} and first_zoo["batch_size"] == 512
    assert (first_zoo["label_smoothing"], first_zoo["cutout"], first_zoo["epochs"]) == (0.0, 16, 160)
    zoo, _ = recipe_config("resnet_att2_concat_dp", "cifar10", "runs/x")
    assert (zoo.epochs, zoo.batch_size, zoo.label_smoothing, zoo.cutout, zoo.compile_scope) == (
        40, 512, 0.0, 16, "blocks")


def test_train_zoo_repeats_a_recipe_under_another_seed(tiny_data: Path, tmp_path: Path) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "seeds"
    assert cli(["zoo", "train", "--ids", "vgg_gap", "--data", str(tiny_data), "--runs", str(runs),
                "--zoo", str(zoo), "--epochs", "1", "--seed", "2", "--no-compile",
                "--device", "cpu"]) == 0
    card = json.loads((zoo / "cards" / "vgg_gap_seed2.json").read_text())
    assert card["file"] == "vgg_gap_seed2.pt" and (zoo / card["file"]).is_file()
    assert card["training"]["config"]["seed"] == 2 and "--seed 2" in card["training"]["command"]
    assert card["precision"] == RECIPES["vgg_gap"]["precision"]
    assert json.loads((runs / "vgg_gap_seed2" / "log.json").read_text())["config"]["seed"] == 2


def test_train_zoo_ships_a_named_variant_of_a_recipe(tiny_data: Path, tmp_path: Path) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "reproduction"
    assert cli(["zoo", "train", "--ids", "vgg_gap", "--data", str(tiny_data), "--runs", str(runs),
                "--zoo", str(zoo), "--epochs", "1", "--seed", "1", "--variant", "wd1e-4",
                "--set", "weight_decay=1e-4", "--set", "label-smoothing=0", "--set", "precision=fp16",
                "--no-compile", "--device", "cpu"]) == 0
    card = json.loads((zoo / "cards" / "vgg_gap_wd1e-4_seed1.json").read_text())
    assert card["file"] == "vgg_gap_wd1e-4_seed1.pt" and (zoo / card["file"]).is_file()
    config = card["training"]["config"]
    assert (config["weight_decay"], config["label_smoothing"], config["seed"]) == (1e-4, 0.0, 1)
    assert config["batch_size"] == RECIPES["vgg_gap"]["batch_size"]  # the rest is the recipe's
    assert card["precision"] == "fp16"
    assert card["training"]["command"].endswith(
        "--seed 1 --variant wd1e-4 --set weight_decay=0.0001 --set label_smoothing=0.0 "
        "--set precision=fp16")


def test_zoo_promote_ships_a_seed_under_the_zoo_id_and_keeps_the_replaced_card(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A one-epoch vgg_gap recipe, so runs of it count as trained with the zoo recipe; the fixed
    # test images are the tiny set's (the fixture predictions need the model's classes).
    monkeypatch.setitem(RECIPES["vgg_gap"], "epochs", 1)
    monkeypatch.setitem(RECIPES["vgg_gap"], "qat_epochs", 1)
    monkeypatch.setattr(shipping, "FIXTURE_DIR", tiny_data / "test")
    zoo, seeds, retired = tmp_path / "zoo", tmp_path / "seeds", tmp_path / "reproduction"
    common = ["--ids", "vgg_gap", "--data", str(tiny_data), "--runs", str(tmp_path / "runs"),
              "--no-compile", "--device", "cpu"]
    assert cli(["zoo", "train", *common, "--zoo", str(zoo)]) == 0
    shipping.finalize_zoo(zoo)
    old = read_manifest(zoo)["models"][0]
    assert cli(["zoo", "train", *common, "--zoo", str(seeds), "--seed", "1"]) == 0
    seed_card = seeds / "cards" / "vgg_gap_seed1.json"

    with pytest.raises(ValueError, match="vgg_gap is shipped already: .*--retire-as"):
        shipping.promote_run(seed_card, "vgg_gap", zoo)
    assert cli(["zoo", "promote", str(seed_card), "--as", "vgg_gap", "--zoo", str(zoo),
                "--retire-as", "vgg_gap_first", "--retire-to", str(retired),
                "--note", "the better of two seeds"]) == 0

    (card,) = read_manifest(zoo)["models"]
    trained = json.loads(seed_card.read_text())
    assert (card["id"], card["file"], card["log"]) == ("vgg_gap", "vgg_gap.pt", "logs/vgg_gap.json.gz")
    assert card["trained_as"] == "vgg_gap_seed1" and card["training"]["config"]["seed"] == 1
    assert card["promotion_note"] == "the better of two seeds"
    assert card["sha256"] == trained["sha256"] == file_sha256(zoo / "vgg_gap.pt")
    assert card["test_error"] == trained["test_error"]
    assert card["fixture"]["predictions"] == fixture_predictions(zoo / "vgg_gap.pt", tiny_data / "test")
    assert (zoo / "logs" / "vgg_gap.json.gz").read_bytes() == (seeds / "logs" / "vgg_gap_seed1.json.gz").read_bytes()
    # The replaced run keeps its card and log (no weights) under the new id.
    kept = json.loads((retired / "cards" / "vgg_gap_first.json").read_text())
    assert kept["sha256"] == old["sha256"] and kept["test_error"] == old["test_error"]
    assert (kept["id"], kept["log"]) == ("vgg_gap_first", "logs/vgg_gap_first.json.gz") and "fixture" not in kept
    assert json.loads(gzip.decompress((retired / kept["log"]).read_bytes()))["config"]["seed"] == 0
    assert sorted(p.name for p in zoo.glob("*.pt")) == ["vgg_gap.pt"]


def test_zoo_retire_takes_a_model_out_and_keeps_its_card_and_log(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipping, "FIXTURE_DIR", tiny_data / "test")
    zoo, kept = tmp_path / "zoo", tmp_path / "reproduction"
    common = ["--data", str(tiny_data), "--runs", str(tmp_path / "runs"), "--zoo", str(zoo),
              "--epochs", "1", "--no-compile", "--device", "cpu"]
    assert cli(["zoo", "train", "--ids", "vgg_gap", *common]) == 0
    # A normalisation other than the paper's is named in the card: the model is a deviation.
    assert cli(["zoo", "train", "--ids", "vgg_att3_concat_pc", *common, "--variant", "sig",
                "--set", "normalisation=sigmoid_sum", "--set", "width=0.25"]) == 0
    shipping.finalize_zoo(zoo)
    cards = {c["id"]: c for c in read_manifest(zoo)["models"]}
    assert cards["vgg_att3_concat_pc_sig"]["paper_name"] == "(VGG-att3)-concat-pc, sigmoid_sum normalisation"
    assert cards["vgg_gap"]["paper_name"] == "VGG-GAP"

    assert cli(["zoo", "retire", "vgg_gap", "--as", "vgg_gap_first", "--zoo", str(zoo),
                "--retire-to", str(kept)]) == 0
    assert [c["id"] for c in read_manifest(zoo)["models"]] == ["vgg_att3_concat_pc_sig"]
    assert not (zoo / "vgg_gap.pt").exists() and not (zoo / "logs" / "vgg_gap.json.gz").exists()
    card = json.loads((kept / "cards" / "vgg_gap_first.json").read_text())
    assert card["sha256"] == cards["vgg_gap"]["sha256"] and card["test_error"] == cards["vgg_gap"]["test_error"]
    assert card["log"] == "logs/vgg_gap_first.json.gz" and (kept / card["log"]).is_file() and "fixture" not in card
    with pytest.raises(ValueError, match="'vgg_gap' is not shipped in .*shipped: vgg_att3_concat_pc_sig"):
        shipping.retire_model("vgg_gap", zoo, kept, "again")
    with pytest.raises(ValueError, match="vgg_gap_first.json exists"):
        shipping.retire_model("vgg_att3_concat_pc_sig", zoo, kept, "vgg_gap_first")
    with pytest.raises(ValueError, match="takes letters, digits"):
        shipping.retire_model("vgg_att3_concat_pc_sig", zoo, kept, "../escape")
    assert cli(["zoo", "retire", "nope", "--as", "x", "--zoo", str(zoo), "--retire-to", str(kept)]) == 2
    assert [c["id"] for c in read_manifest(zoo)["models"]] == ["vgg_att3_concat_pc_sig"]


def test_a_card_trained_by_ltpa_train_is_checked_by_its_recreate_command() -> None:
    from ltpa.maintainer.recreate import recreate_command

    config = asdict(recipe_config("vgg_fast", "/d", "/o", seed=1)[0])
    card = {"id": "vgg_fast_seed1", "precision": "int4", "kwargs": {},
            "training": {"command": "ltpa train vgg --data /d --seed 1 --qat int4 --qat-epochs 12",
                         "config": config}}
    with pytest.raises(ValueError, match="vgg_fast_seed1: trained by 'ltpa train vgg.*no recreate_command"):
        recreate_command(card)
    # The zoo command it was given still trains it: kept as it is.
    card["recreate_command"] = "ltpa zoo train --ids vgg_fast --data /d --seed 1"
    assert recreate_command(card) == card["recreate_command"]
    # Once the recipe has moved on, the settings it needs are added to that command.
    card["training"]["config"] = {**config, "epochs": 70}
    assert recreate_command(card) == (
        "ltpa zoo train --ids vgg_fast --data /d --seed 1 --variant earlier-recipe --set epochs=70")


def test_a_command_in_the_earlier_spelling_is_recreated_in_todays() -> None:
    from ltpa.maintainer.baselines import read_cards, reproduction_dir
    from ltpa.maintainer.recreate import current_spelling, recreate_command

    assert current_spelling("ltpa train-zoo --ids vgg_fast --seed 1") == "ltpa zoo train --ids vgg_fast --seed 1"
    assert current_spelling("ltpa zoo train --ids vgg_fast") == "ltpa zoo train --ids vgg_fast"
    assert current_spelling("ltpa train vgg") == "ltpa train vgg"
    # Today's recipe, recorded as `ltpa train-zoo` (a command that no longer runs): its card
    # gets the command that does, with nothing else changed.
    config = asdict(recipe_config("vgg_fast", "/d", "/o", seed=1)[0])
    card = {"id": "vgg_fast_seed1", "precision": "int4", "kwargs": {},
            "training": {"command": "ltpa train-zoo --ids vgg_fast --data /d --seed 1", "config": config}}
    assert recreate_command(card) == "ltpa zoo train --ids vgg_fast --data /d --seed 1"
    with pytest.raises(SystemExit):  # the earlier spelling is no command now
        cli(["train-zoo", "--help"])
    # Every kept card's command runs as written, or it has a recreate_command in today's spelling.
    for kept in read_cards(reproduction_dir()):
        command = kept.get("recreate_command") or kept["training"]["command"]
        assert not command.startswith("ltpa train-zoo"), kept["id"]


def test_zoo_promote_refuses_another_recipe_another_model_and_a_changed_file(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(RECIPES["vgg_gap"], "epochs", 1)
    monkeypatch.setitem(RECIPES["vgg_gap"], "qat_epochs", 1)
    out = tmp_path / "reproduction"
    assert cli(["zoo", "train", "--ids", "vgg_gap", "--data", str(tiny_data), "--runs", str(tmp_path / "runs"),
                "--zoo", str(out), "--variant", "wd1e-4", "--set", "weight_decay=1e-4",
                "--no-compile", "--device", "cpu"]) == 0
    card = out / "cards" / "vgg_gap_wd1e-4.json"
    zoo = tmp_path / "zoo"
    with pytest.raises(ValueError, match=r"not trained with the zoo recipe of vgg_gap: weight_decay "
                                         r"\(saved 0.0001, now 0.0005\)"):
        shipping.promote_run(card, "vgg_gap", zoo)
    with pytest.raises(ValueError, match=r"zoo recipe of vgg: model \(saved 'vgg_gap', now 'vgg'\)"):
        shipping.promote_run(card, "vgg", zoo)
    with pytest.raises(ValueError, match="no zoo recipe 'vgg_w1'"):
        shipping.promote_run(card, "vgg_w1", zoo)
    with (out / "vgg_gap_wd1e-4.pt").open("ab") as file:
        file.write(b"\0")
    with pytest.raises(ValueError, match="does not match the sha256"):
        shipping.promote_run(card, "vgg_gap", zoo)
    (out / "cards" / "bare.json").write_text(json.dumps({"id": "bare"}))
    assert cli(["zoo", "promote", str(out / "cards" / "bare.json"), "--as", "vgg_gap", "--zoo", str(zoo)]) == 2
    assert cli(["zoo", "promote", str(out / "cards" / "none.json"), "--as", "vgg_gap", "--zoo", str(zoo)]) == 2
    with pytest.raises(ValueError, match="not a card written by ltpa zoo train .*file, log, sha256"):
        shipping.promote_run(out / "cards" / "bare.json", "vgg_gap", zoo)
    assert not zoo.exists()  # nothing was shipped


@pytest.mark.parametrize("pairs, message", [
    (["weight_decay"], "KEY=VALUE"),
    (["seed=3"], "argument of its own"),
    (["=3"], "KEY=VALUE"),
    (["epochs=2.5"], "epochs takes an int"),
    (["nesterov=maybe"], "nesterov takes a bool"),
    (["precision=int2"], "precision takes one of"),
])
def test_bad_recipe_settings_are_refused(pairs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings(pairs)


def test_model_arguments_are_recipe_settings_too() -> None:
    settings = parse_settings(["tap_features=residual", "lr=0.05", "dropout=0.25", "depth=56"])
    assert settings == {"overrides": {"tap_features": "residual", "dropout": 0.25, "depth": 56},
                        "lr": 0.05}
    assert parse_settings(shlex.split(settings_arguments(settings).replace("--set ", ""))) == settings
    config, _ = recipe_config("resnet_att2_concat_pc", "cifar10", "runs/x", settings=settings)
    # The recipe's own model setting (stage classifiers on a concat head) stays beside them.
    assert config.overrides == {"stage_classifiers": True, "tap_features": "residual", "dropout": 0.25,
                                "depth": 56}
    assert config.lr == 0.05
    with pytest.raises(ValueError, match="neither a training setting .* nor an argument of model "
                                         "vgg_gap \\(width\\)"):
        recipe_config("vgg_gap", "cifar10", "runs/x", settings=parse_settings(["dropout=0.25"]))


def test_train_zoo_ships_a_variant_of_a_model_argument(tiny_data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    runs, zoo = tmp_path / "runs", tmp_path / "reproduction"
    args = ["zoo", "train", "--data", str(tiny_data), "--runs", str(runs), "--zoo", str(zoo),
            "--epochs", "1", "--no-compile", "--device", "cpu", "--variant", "drop0.25",
            "--set", "dropout=0.25"]
    # vgg_gap has no dropout: nothing trains, not even the vgg recipe listed first.
    assert cli(args + ["--ids", "vgg,vgg_gap"]) == 2
    assert "argument of model vgg_gap" in capsys.readouterr().err and not runs.exists()
    assert cli(args + ["--ids", "vgg"]) == 0
    card = json.loads((zoo / "cards" / "vgg_drop0.25.json").read_text())
    assert card["kwargs"]["dropout"] == 0.25
    assert card["training"]["config"]["overrides"] == {"dropout": 0.25}
    assert card["training"]["command"].endswith("--variant drop0.25 --set dropout=0.25")


def test_recipe_settings_are_read_as_their_types() -> None:
    assert parse_settings(["lr=0.05", "epochs=12", "nesterov=false", "qat=", "amp=yes"]) == {
        "lr": 0.05, "epochs": 12, "nesterov": False, "qat": "", "amp": True}
    with pytest.raises(ValueError, match="needs both a name"):
        train_zoo(["vgg"], "data", Path("runs"), Path("zoo"), settings={"lr": 0.05})
    with pytest.raises(ValueError, match="needs both a name"):
        train_zoo(["vgg"], "data", Path("runs"), Path("zoo"), variant="fast")
    with pytest.raises(ValueError, match="variant name takes"):
        train_zoo(["vgg"], "data", Path("runs"), Path("zoo"), variant="a/b", settings={"lr": 0.05})


@pytest.mark.parametrize("mode, expected", [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_compile_mode_reaches_torch_compile(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            mode: str, expected: str | None) -> None:
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(kwargs))
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         epochs=1, batch_size=12, device="cpu", compile=True, compile_mode=mode)
    Trainer(config).run()
    assert seen == [{"mode": expected}]


def test_a_compiled_run_logs_the_compilers_phase_times(tiny_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo.utils as dynamo_utils

    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: None)
    table = (["bytecode_tracing", "async_compile.wait", "unlisted"], ["1.234", "5.0", "9"])
    monkeypatch.setattr(dynamo_utils, "compile_times", lambda repr, aggregate: table)
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         epochs=2, batch_size=12, device="cpu", compile=True)
    Trainer(config).run()
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["compile_phases_s"] == {"bytecode_tracing": 1.23, "async_compile.wait": 5.0}
    assert "compile_setup" in log["setup_phases_s"]


def test_compile_phases_are_empty_when_the_compiler_does_not_report_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch._dynamo.utils as dynamo_utils

    def missing(**kwargs):
        raise TypeError("no such table")

    monkeypatch.setattr(dynamo_utils, "compile_times", missing)
    assert training.compile_phases() == {}


def test_cuda_graph_modes_on_cuda_only() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert replays_cuda_graphs(True, "reduce-overhead", cuda)
    assert replays_cuda_graphs(True, "max-autotune", cuda)
    assert not replays_cuda_graphs(True, "reduce-overhead", cpu)
    assert not replays_cuda_graphs(True, "default", cuda)
    assert not replays_cuda_graphs(True, "max-autotune-no-cudagraphs", cuda)
    assert not replays_cuda_graphs(False, "reduce-overhead", cuda)


def test_cuda_graph_runs_mark_every_training_batch_and_score_eagerly(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A graph replay overwrites the previous replay's outputs: each training batch must start a
    # new step. Evaluation runs the compiled model eagerly (no recompilation for eval mode).
    marks, stances, scored_under = [], [], []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: None)
    monkeypatch.setattr(training, "replays_cuda_graphs", lambda *args: True)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    real_stance, real_evaluate = torch.compiler.set_stance, training.evaluate

    def recording_stance(stance, **kwargs):
        stances.append(stance)
        return real_stance(stance, **kwargs)

    def recording_evaluate(*args, **kwargs):
        scored_under.append(stances[-1] if stances else None)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(torch.compiler, "set_stance", recording_stance)
    monkeypatch.setattr(training, "evaluate", recording_evaluate)
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         epochs=2, batch_size=12, device="cpu", compile=True,
                         compile_mode="reduce-overhead")
    trainer = Trainer(config)
    trainer.run()
    assert len(trainer.train_loader) > 1 and len(marks) == 2 * len(trainer.train_loader)
    # Two validation passes and the test pass, each under the eager stance.
    assert scored_under == ["force_eager"] * 3


def test_one_cycle_schedule_warms_up_then_decays_to_zero() -> None:
    values = [one_cycle(step, 100, 0.2, 0.0) for step in range(100)]
    assert values[19] == pytest.approx(1.0)
    assert values[:20] == sorted(values[:20])
    assert values[20:] == sorted(values[20:], reverse=True)
    assert values[-1] < 0.02


def test_device_loader_augments_training_batches_only() -> None:
    images = torch.arange(4 * 3 * 32 * 32, dtype=torch.int64).remainder(256).to(torch.uint8)
    data = ImageSet(images.view(4, 3, 32, 32), torch.arange(4), ["a", "b", "c", "d"])
    mean, std = [0.5] * 3, [0.25] * 3
    plain = next(iter(DeviceLoader(data, 4, mean, std, train=False)))[0]
    expected = (data.images.float() / 255 - 0.5) / 0.25
    assert torch.allclose(plain, expected, atol=1e-5)
    augmented = next(iter(DeviceLoader(data, 4, mean, std, train=True, cutout=8,
                                       generator=torch.Generator().manual_seed(1))))[0]
    assert augmented.shape == plain.shape
    assert not torch.equal(augmented, plain)
    assert (augmented == 0).flatten(1).sum(1).min() >= 3 * 8  # a cutout square per image


def test_dataset_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="neither a dataset name"):
        load_dataset(str(tmp_path / "nowhere"))
    make_folder(tmp_path / "only_train", {"train": 2})
    with pytest.raises(DatasetError, match="missing folder .*test"):
        load_dataset(str(tmp_path / "only_train"))
    make_folder(tmp_path / "empty", {"train": 2, "test": 1})
    (tmp_path / "empty" / "train" / "yellow").mkdir()
    with pytest.raises(DatasetError, match="no images: yellow"):
        load_dataset(str(tmp_path / "empty"))
    make_folder(tmp_path / "mismatch", {"train": 2, "test": 1})
    (tmp_path / "mismatch" / "test" / "blue").rename(tmp_path / "mismatch" / "test" / "violet")
    with pytest.raises(DatasetError, match="do not match the training classes"):
        load_dataset(str(tmp_path / "mismatch"))


def test_cli_reports_bad_input_in_one_line(tiny_data: Path, tmp_path: Path, capsys) -> None:
    assert cli(["train", "no_such_model", "--data", str(tiny_data), "--out", str(tmp_path / "x")]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli(train_args(tiny_data, tmp_path / "gpu", 1)[:-6] + ["--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert cli(["train", "--resume", str(tmp_path / "never")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert cli(["eval", str(tmp_path / "missing.pt"), "--data", str(tiny_data)]) == 2
    assert "neither a checkpoint file, a run folder nor a shipped model" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "ltpa", "train", "--help"], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "--resume" in result.stdout


# --- the shipped zoo -------------------------------------------------------------------------

SHIPPED = read_manifest(DEFAULT_ZOO_DIR)["models"]


def test_the_zoo_ships_the_required_models_within_budget() -> None:
    ids = {card["id"] for card in SHIPPED}
    # Today: the fast-recipe VGGs over the tapped stages and the normalisation, and the first
    # zoo's ResNets and GAP baseline (VGG-att3-dp left for the asset budget: docs/zoo.md).
    assert {"vgg_att1_concat_pc", "vgg_att2_concat_pc", "vgg_att3_concat_pc",
            "vgg_att3_concat_pc_sigmoid_sum", "vgg", "vgg_gap", "resnet_att2_concat_pc",
            "resnet_att2_concat_dp", "resnet164"} <= ids
    files = [p for p in (REPO / "assets").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 32 * 1024 * 1024
    assert max(p.stat().st_size for p in files) <= 12 * 1024 * 1024


@pytest.mark.parametrize("card", SHIPPED, ids=[c["id"] for c in SHIPPED])
def test_every_shipped_model_loads_matches_its_sha256_and_its_recorded_predictions(
        card: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTPA_ZOO", str(DEFAULT_ZOO_DIR))
    path = DEFAULT_ZOO_DIR / card["file"]
    assert file_sha256(path) == card["sha256"]
    loaded = load_zoo_model(card["id"], verify=True)
    assert loaded.class_names == card["class_names"]
    assert "JPEG" in card["dataset"]
    for field in ("test_error", "per_class_accuracy", "params", "map_sizes", "training", "log"):
        assert field in card, field
    assert (DEFAULT_ZOO_DIR / card["log"]).is_file()
    fixture = card["fixture"]
    assert len(fixture["labels"]) == len(fixture["predictions"]) == 200
    assert fixture_predictions(path, FIXTURE_DIR) == fixture["predictions"]
    # The fixed images are real CIFAR-10 test images: a trained model gets most of them right.
    correct = np.mean(np.array(fixture["predictions"]) == np.array(fixture["labels"]))
    assert correct > 0.8


def test_zoo_listing_follows_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTPA_ZOO", str(DEFAULT_ZOO_DIR))
    assert [e.id for e in list_zoo()] == [c["id"] for c in SHIPPED]


def test_every_card_command_recreates_the_recorded_recipe() -> None:
    """A card's training command (or, once the recipes have changed since, its recreate_command),
    run again, trains exactly the configuration the card records and builds the model its file
    holds (settings a card predates take their defaults, which is what those runs did)."""
    from ltpa.maintainer.baselines import read_cards, reproduction_dir
    from ltpa.maintainer.recreate import command_config
    from ltpa.registry import default_arguments

    cards = read_manifest(DEFAULT_ZOO_DIR)["models"] + read_cards(reproduction_dir())
    assert len(cards) >= 18
    ignore = (*training.RESUMABLE_CHANGES, "overrides")  # model arguments: checked against the file
    for card in cards:
        config, precision, _ = command_config(card.get("recreate_command") or card["training"]["command"])
        recorded = asdict(TrainConfig.from_dict(card["training"]["config"]))
        assert {k: v for k, v in recorded.items() if k not in ignore} == {
            k: v for k, v in asdict(config).items() if k not in ignore}, card["id"]
        built = {**default_arguments(config.model), **config.overrides}
        assert all(built[k] == v for k, v in card["kwargs"].items() if k in built and k != "width"), card["id"]
        assert card["precision"] == precision, card["id"]
    # The zoo's own cards are trained by today's recipe of their id as it stands.
    from ltpa.maintainer.recipes import recipe_config

    for card in read_manifest(DEFAULT_ZOO_DIR)["models"]:
        saved = card["training"]["config"]
        config, precision = recipe_config(card["id"], saved["data"], saved["out"], seed=saved["seed"])
        recorded = asdict(TrainConfig.from_dict(saved))
        assert {k: v for k, v in recorded.items() if k not in training.RESUMABLE_CHANGES} == {
            k: v for k, v in asdict(config).items() if k not in training.RESUMABLE_CHANGES}, card["id"]
        assert card["precision"] == precision, card["id"]


def test_a_card_the_recipes_have_moved_past_gets_a_recreate_command(tmp_path: Path) -> None:
    from ltpa.maintainer.baselines import reproduction_dir
    from ltpa.maintainer.recreate import command_config, recreate_command, refresh_recreate_commands

    (tmp_path / "cards").mkdir()
    for card_id in ("resnet_att2_concat_pc_residual", "vgg_fast_seed1"):
        card = json.loads((reproduction_dir(DEFAULT_ZOO_DIR) / "cards" / f"{card_id}.json").read_text())
        card.pop("recreate_command", None)
        (tmp_path / "cards" / f"{card_id}.json").write_text(json.dumps(card))
    # Trained under the earlier ResNet recipe, with the residual taps it predates as an argument.
    assert refresh_recreate_commands(tmp_path) == ["resnet_att2_concat_pc_residual"]
    residual = json.loads((tmp_path / "cards" / "resnet_att2_concat_pc_residual.json").read_text())
    assert residual["training"]["command"] == "ltpa train-zoo --ids resnet_att2_concat_pc --data /tmp/d/cifar10"
    # Today's ResNet recipe is the fast one: the 160-epoch settings are spelt out, in today's
    # spelling of the command, and so is the model it predates stage classifiers in.
    assert residual["recreate_command"] == (
        "ltpa zoo train --ids resnet_att2_concat_pc --data /tmp/d/cifar10 --variant earlier-recipe "
        "--set stage_classifiers=false --set tap_features=residual --set epochs=160 --set label_smoothing=0.1 --set cutout=12 "
        "--set qat= --set qat_epochs=0 --set validation=0.0 --set flip=False --set aux_weight=0.0 "
        "--set entropy_weight=0.0 --set precision=int8")
    config, precision, args = command_config(residual["recreate_command"])
    assert (config.epochs, config.label_smoothing, config.cutout, config.overrides, config.qat) == (
        160, 0.1, 12, {"stage_classifiers": False, "tap_features": "residual"}, "")
    assert precision == "int8" and args.variant == "earlier-recipe"
    assert refresh_recreate_commands(tmp_path) == []  # nothing left to do
    assert recreate_command(json.loads((tmp_path / "cards" / "vgg_fast_seed1.json").read_text())) is None
    with pytest.raises(ValueError, match="not an ltpa zoo train command"):
        command_config("ltpa train vgg --data x")


def test_save_interval_writes_the_state_after_the_first_and_last_epochs_and_the_log_every_epoch(
        tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen = []

    def written(row: dict) -> None:  # called after each epoch's files are written
        state_epoch = training.load_state(out / STATE_FILE)["epoch"]
        logged = len(json.loads((out / "log.json").read_text())["epochs"])
        seen.append((row["epoch"], state_epoch, logged))

    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(out), width=0.125, epochs=3,
                         batch_size=12, device="cpu", validation=0.0, save_interval_s=1e6)
    Trainer(config, on_epoch=written).run()
    assert seen == [(1, 1, 1), (2, 1, 2), (3, 3, 3)]

    def stop_at_2(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    other = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt, match="the last saved epoch \\(written at most 1e\\+06 s apart\\)"):
        Trainer(TrainConfig(**{**asdict(config), "out": str(other)}), on_epoch=stop_at_2).run()
    assert training.load_state(other / STATE_FILE)["epoch"] == 1  # resumes from epoch 1
    with pytest.raises(ValueError, match="--save-interval-s must be"):
        TrainConfig(save_interval_s=-1.0)


def test_compile_scope_blocks_compiles_repeated_blocks_and_is_refused_without_them(
        tiny_data: Path, tmp_path: Path) -> None:
    with torch.device("meta"):
        resnet = training.create_model("resnet164", num_classes=10)
    assert len(repeated_blocks(resnet)) == 54  # 3 stages of 18 bottlenecks
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         epochs=1, batch_size=12, device="cpu", compile=True, compile_scope="blocks")
    with pytest.raises(ValueError, match="vgg has no repeated blocks"):
        Trainer(config).run()
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="compile_scope must be one of model, blocks"):
        TrainConfig(compile_scope="regions")
