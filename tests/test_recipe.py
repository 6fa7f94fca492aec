"""The fast recipe: what `ltpa train` runs when only a model is named, and how flags change it."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from sample_images import make_folder
from ltpa.cli import main as cli
from ltpa.commands import train
from ltpa.recipe import ATTENTION_LEVERS, FAMILY_RECIPES, recipe_for
from ltpa.training import TrainConfig


def config_of(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return train.config_from_args(parser.parse_args([*argv, "--device", "cpu"]))


def test_ltpa_train_defaults_are_the_recipe_for_an_attention_vgg() -> None:
    config = config_of("vgg_att3_concat_pc")
    recipe = FAMILY_RECIPES["vgg"]
    assert {key: getattr(config, key) for key in recipe} == recipe
    assert (config.aux_weight, config.entropy_weight) == (0.25, 0.025)
    assert ATTENTION_LEVERS["vgg"] == {"aux_weight": 0.25, "entropy_weight": 0.025}
    # The last tapped layer's map is normalised with sigmoid_sum, the others with softmax.
    assert config.overrides == {"stage_classifiers": True,
                                "normalisation": "softmax,softmax,sigmoid_sum", "dropout": 0.0}
    assert config.validation > 0 and config.flip and config.tta_translate == 1
    assert not config.compile  # the recipe compiles on CUDA only
    assert config.out == "runs/vgg_att3_concat_pc"
    # Both families take orthogonalised filter steps (chosen on validation,
    # docs/attention_levers.md F-G for VGGs, M for ResNets), and both are scored with flip and
    # translate (I for VGGs, N for ResNets).
    assert (config.optimizer, config.filter_lr) == ("muon", 0.02)
    resnet = config_of("resnet_att2_concat_pc")
    assert (resnet.optimizer, resnet.filter_lr) == ("muon", 0.02) and resnet.tta_translate == 1
    baseline = config_of("resnet164")
    assert (baseline.optimizer, baseline.tta_translate) == ("muon", 1)
    assert "normalisation" not in resnet.overrides
    assert config_of("vgg_att1_concat_pc").overrides["normalisation"] == "sigmoid_sum"
    assert config_of("vgg_att2_concat_pc").overrides["normalisation"] == "softmax,sigmoid_sum"
    # An explicit normalisation wins over the recipe's.
    assert config_of("vgg_att3_concat_pc", "--set", "normalisation=softmax").overrides[
        "normalisation"] == "softmax"


def test_no_flip_turns_off_the_recipes_translated_scoring_unless_it_is_asked_for() -> None:
    no_flip = config_of("vgg_att3_concat_pc", "--no-flip")
    assert (no_flip.flip, no_flip.tta_translate) == (False, 0)
    with pytest.raises(ValueError, match="needs flip"):
        config_of("vgg_att3_concat_pc", "--no-flip", "--tta-translate", "1")


def test_baselines_get_the_schedule_but_no_attention_levers() -> None:
    config = config_of("vgg")
    assert config.width == FAMILY_RECIPES["vgg"]["width"]
    assert config.epochs == FAMILY_RECIPES["vgg"]["epochs"]
    assert config.aux_weight == 0 and config.entropy_weight == 0
    assert config.overrides == {"dropout": 0.0}  # a model setting, not an attention lever
    assert config.tta_translate == 1


def test_resnets_compile_block_by_block_and_indep_heads_need_no_extra_classifiers() -> None:
    resnet = config_of("resnet_att2_concat_pc")
    assert resnet.compile_scope == "blocks" and resnet.compile_mode == "default"
    assert not resnet.compile and not resnet.step_graph  # CPU: no compilation, no graphs
    on_cuda = recipe_for("resnet_att2_concat_pc", cuda=True)
    assert on_cuda["compile"] and on_cuda["step_graph"] and on_cuda["compile_scope"] == "blocks"
    assert TrainConfig(**{k: v for k, v in on_cuda.items()})  # a valid combination
    assert resnet.epochs == FAMILY_RECIPES["resnet"]["epochs"]
    # No model drops any of its descriptors, as ResNet-164 drops none of its pooled features
    # (docs/attention_levers.md P for ResNets, Q for VGGs); models without the setting get none.
    assert resnet.overrides == {"stage_classifiers": True, "dropout": 0.0}
    assert config_of("resnet_att2_indep_pc").overrides == {"dropout": 0.0}
    assert config_of("vgg_att3_concat_pc").overrides["dropout"] == 0.0
    assert config_of("vgg").overrides == {"dropout": 0.0}
    assert config_of("resnet164").overrides == {}  # its classifier has no dropout to set
    assert config_of("vgg_gap").overrides == {}  # nor has the GAP head
    assert config_of("resnet_att2_concat_pc", "--set", "dropout=0.5").overrides["dropout"] == 0.5
    assert config_of("vgg", "--set", "dropout=0.5").overrides["dropout"] == 0.5
    # ResNets keep the first lever weights (the lighter ones were measured on VGGs only).
    assert (resnet.aux_weight, resnet.entropy_weight) == (0.5, 0.05)
    indep = recipe_for("vgg_att3_indep_pc")
    assert indep["overrides"] == {"normalisation": "softmax,softmax,sigmoid_sum", "dropout": 0.0}
    assert indep["aux_weight"] > 0
    assert recipe_for("vgg", cuda=True)["compile"] and not recipe_for("vgg", cuda=False)["compile"]


def test_flags_override_the_recipe_and_recipe_none_gives_the_plain_defaults() -> None:
    config = config_of("vgg_att3_concat_pc", "--epochs", "7", "--aux-weight", "0",
                       "--set", "stage_classifiers=false", "--no-flip", "--width", "0.25")
    assert (config.epochs, config.aux_weight, config.width, config.flip) == (7, 0.0, 0.25, False)
    assert config.overrides == {"stage_classifiers": False,
                                "normalisation": "softmax,softmax,sigmoid_sum", "dropout": 0.0}
    assert config.entropy_weight == ATTENTION_LEVERS["vgg"]["entropy_weight"]  # the recipe's
    plain = config_of("vgg_att3_concat_pc", "--recipe", "none")
    expected = {**asdict(TrainConfig()), "model": "vgg_att3_concat_pc",
                "out": "runs/vgg_att3_concat_pc", "device": "cpu"}
    assert asdict(plain) == expected


def test_an_unknown_model_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="registered models: .*vgg_att3_concat_pc"):
        config_of("vgg_att9")


def test_a_default_run_trains_with_the_levers_and_logs_where_its_time_went(
        tmp_path: Path) -> None:
    data = make_folder(tmp_path / "data", {"train": 12, "test": 4})
    out = tmp_path / "run"
    assert cli(["train", "vgg_att3_concat_pc", "--data", str(data), "--out", str(out), "--width",
                "0.125", "--epochs", "2", "--batch-size", "12", "--device", "cpu"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["aux_weight"] > 0 and log["config"]["overrides"]["stage_classifiers"]
    assert log["setup_s"] > 0
    # Its phases add up to the setup (the rest is the meta-device probe and the seeding).
    phases = log["setup_phases_s"]
    assert list(phases) == ["data", "to_device", "lever_check", "model", "optimizer_loaders"]
    assert 0 < sum(phases.values()) <= log["setup_s"] + 0.01
    assert log["run_s"] >= log["setup_s"] + sum(row["epoch_time_s"] for row in log["epochs"])
    assert log["compile_phases_s"] is None  # no compilation on the CPU
    # The recipe validates every 5 epochs and after the last: epoch 1 is not scored, epoch 2 is.
    first, last = log["epochs"]
    assert "val_acc" not in first and last["val_acc"] is not None and last["eval_time_s"] > 0
    # Extending a resumed run: --epochs is the one setting it may change.
    assert cli(["train", "--resume", str(out), "--epochs", "3", "--device", "cpu"]) == 0
    assert [row["epoch"] for row in json.loads((out / "log.json").read_text())["epochs"]] == [1, 2, 3]


def test_data_parallel_runs_are_eager_unless_compile_is_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "get_device", lambda name: __import__("torch").device("cuda"))
    assert config_of("vgg").compile  # the recipe compiles on CUDA
    assert config_of("vgg").step_graph  # and captures the step
    eager = config_of("vgg", "--nproc", "2")
    assert not eager.compile and eager.compile_mode == "default" and not eager.step_graph
    asked = config_of("vgg", "--nproc", "2", "--compile", "--compile-mode", "reduce-overhead")
    assert asked.compile and asked.compile_mode == "reduce-overhead"


def test_the_next_zoo_is_the_fast_recipe_with_int4_training_for_every_model_of_issue_18(
        tmp_path: Path) -> None:
    from ltpa.maintainer.recipes import (FAST_ZOO_MODELS, FAST_ZOO_RECIPES, QAT_SHARE,
                                         ZOO_UNSET_OVERRIDES, recipe_config)
    from ltpa.maintainer.selection import validation_error

    expected = {"vgg_att1_concat_pc", "vgg_att2_concat_pc", "vgg_att3_concat_pc", "vgg_att3_indep_pc",
                "vgg_att3_concat_dp", "vgg_att3_concat_pc_sigmoid_sum", "vgg", "vgg_gap",
                "resnet_att2_concat_pc", "resnet_att2_concat_dp", "resnet_att2_indep_pc", "resnet164"}
    assert set(FAST_ZOO_RECIPES) == {f"{i}_fast" for i in expected}
    for recipe_id, recipe in FAST_ZOO_RECIPES.items():
        fast = recipe_for(recipe["model"], cuda=True)
        # The recipe itself, plus int4 over the last fifth of the epochs, with what the shipped
        # zoo was trained with: plain SGD, no translated scoring, the model's own normalisation
        # and dropout, and the first lever weights (the VGG recipe's filter step, TTA and
        # last-stage sigmoid_sum, the lighter levers and the ResNet heads' dropout 0 came later);
        # zoo runs compile in the run.
        pinned = ("compile", "compile_ahead", "overrides", "optimizer", "tta_translate",
                  "aux_weight", "entropy_weight")
        assert "compile_ahead" not in recipe, recipe_id
        assert recipe["optimizer"] == "sgd" and recipe["tta_translate"] == 0, recipe_id
        levers = (recipe.get("aux_weight"), recipe.get("entropy_weight"))
        assert levers == ((0.5, 0.05) if "aux_weight" in fast else (None, None)), recipe_id
        assert {k: recipe[k] for k in fast if k not in pinned} == \
            {k: v for k, v in fast.items() if k not in pinned}, recipe_id
        assert recipe["overrides"] == {
            **{k: v for k, v in fast["overrides"].items() if k not in ZOO_UNSET_OVERRIDES},
            **FAST_ZOO_MODELS[recipe_id.removesuffix("_fast")][1]}, recipe_id
        assert recipe["qat"] == "int4" and recipe["precision"] == "int4"
        assert recipe["qat_epochs"] == round(recipe["epochs"] * QAT_SHARE)
        config, _ = recipe_config(recipe_id, "cifar10", "runs/x", device="cpu")
        assert not config.step_graph  # graphs on CUDA only
        assert config.validation > 0  # the seed is chosen on the validation split
    assert FAST_ZOO_RECIPES["vgg_att3_concat_pc_sigmoid_sum_fast"]["overrides"] == {
        "stage_classifiers": True, "normalisation": "sigmoid_sum"}
    # A (shortened) run ships a card that records what its seed is chosen on.
    data = make_folder(tmp_path / "data", {"train": 20, "test": 4})
    assert cli(["zoo", "train", "--ids", "vgg_fast", "--data", str(data), "--runs", str(tmp_path / "runs"),
                "--zoo", str(tmp_path / "seeds"), "--epochs", "1", "--no-compile", "--device", "cpu"]) == 0
    card = json.loads((tmp_path / "seeds" / "cards" / "vgg_fast.json").read_text())
    assert card["precision"] == "int4" and validation_error(card) is not None
    assert card["training"]["config"]["qat_epochs"] == 1 and card["training"]["config"]["width"] == 0.5
