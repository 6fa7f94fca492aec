"""bench/train_zoo.sh turns its GPU plans into the right ``ltpa zoo train`` calls."""
from __future__ import annotations

import os
import sys
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stand_in_python(tmp_path: Path, **variables: str) -> dict[str, str]:
    """An environment whose python3 prints its arguments: each call's log then holds its command
    line. ``variables`` are added; PRECISION, VARIANT, SETTINGS and ROBUSTNESS are unset unless given."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text('#!/bin/sh\necho "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PRECISION", "VARIANT", "SETTINGS", "ROBUSTNESS")}
    return {**env, "PATH": f"{shim}:{os.environ['PATH']}", **variables}


def test_train_zoo_plans_become_train_zoo_calls(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = stand_in_python(tmp_path, PRECISION="int8")
    result = subprocess.run(
        ["bash", str(REPO / "bench" / "train_zoo.sh"), "DATA", str(out),
         "0=resnet_att2_concat_pc,vgg:1@3", "3=vgg_att3_concat_pc:2,vgg_w1", "1=resnet164_b128:1"],
        env=env, capture_output=True, text=True, check=True)
    assert "all recipes finished (status 0)" in result.stdout
    calls = {log.name: log.read_text().split() for log in out.glob("train_*.log")}
    common = ["--data", "DATA", "--runs", str(out / "runs"), "--precision", "int8"]

    def call(model_id: str, zoo: str, gpu: int, *extra: str) -> list[str]:
        return ["-m", "ltpa", "zoo", "train", "--ids", model_id, *common[:4], "--zoo", str(out / zoo),
                "--device", f"cuda:{gpu}", *common[4:], *extra]

    assert calls == {
        "train_resnet_att2_concat_pc.log": call("resnet_att2_concat_pc", "zoo", 0),
        "train_vgg_seed1.log": call("vgg", "seeds", 0, "--epochs", "3", "--seed", "1"),
        "train_vgg_att3_concat_pc_seed2.log": call("vgg_att3_concat_pc", "seeds", 3, "--seed", "2"),
        "train_vgg_w1.log": call("vgg_w1", "reproduction", 3),
        "train_resnet164_b128_seed1.log": call("resnet164_b128", "reproduction", 1, "--seed", "1"),
    }


def test_train_zoo_variants_ship_to_reproduction(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = stand_in_python(tmp_path, VARIANT="wd1e-4", SETTINGS="weight_decay=1e-4 label_smoothing=0")
    subprocess.run(["bash", str(REPO / "bench" / "train_zoo.sh"), "DATA", str(out),
                    "2=resnet164,resnet164:1"], env=env, capture_output=True, text=True, check=True)
    calls = {log.name: log.read_text().split() for log in out.glob("train_*.log")}
    variant = ["--variant", "wd1e-4", "--set", "weight_decay=1e-4", "--set", "label_smoothing=0"]
    base = ["-m", "ltpa", "zoo", "train", "--ids", "resnet164", "--data", "DATA", "--runs",
            str(out / "runs"), "--zoo", str(out / "reproduction"), "--device", "cuda:2"]
    assert calls == {"train_resnet164_wd1e-4.log": base + variant,
                     "train_resnet164_wd1e-4_seed1.log": base + ["--seed", "1"] + variant}


def test_train_zoo_measures_the_curves_of_every_file_it_trained(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = stand_in_python(tmp_path, ROBUSTNESS="1")
    (tmp_path / "bin" / "python3").write_text('#!/bin/sh\necho "zoo=$LTPA_ZOO $@"\n')
    for folder in ("zoo", "seeds"):  # what the two calls below would have shipped
        (out / folder / "cards").mkdir(parents=True)
    result = subprocess.run(["bash", str(REPO / "bench" / "train_zoo.sh"), "DATA", str(out),
                             "0=vgg_fast,vgg_fast:1"], env=env, capture_output=True, text=True, check=True)
    for folder in ("zoo", "seeds"):
        assert f"FGSM curves of {out / folder} in {out / 'robustness' / folder}" in result.stdout
        assert (out / f"robustness_{folder}.log").read_text().split() == [
            f"zoo={out / folder}", "-m", "ltpa", "robustness", "--data", "DATA", "--device", "cuda:0",
            "--out", str(out / "robustness" / folder), "--no-figure"]
    assert not (out / "robustness_reproduction.log").exists()  # nothing was trained there


def test_train_speed_prints_per_step_loop_and_eval_throughput() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_speed.py"), "--device", "cpu", "--ids",
         "vgg_gap", "--steps", "1", "--batch-size", "4"],
        capture_output=True, text=True, check=True, timeout=300)
    lines = result.stdout.splitlines()
    assert "train images/s (per step) | train images/s (loop) | eval images/s" in lines[1]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:3] == ["vgg_gap", "0.5", "4"]  # the zoo recipe's width
    assert all(float(c.replace(",", "")) > 0 for c in cells[3:])


def test_app_latency_times_every_page_s_interactions(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from app_latency import build_tiny_zoo

    zoo = build_tiny_zoo(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "app_latency.py"), "--zoo", str(zoo), "--repeats", "1",
         "--no-busy", "--max-side", "320"],
        capture_output=True, text=True, check=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    timed = {(cells[0].strip(), cells[1].strip()): cells[2].strip() for cells in rows if cells[0].strip() != "page"}
    for page, interaction in [("home", "upload"), ("home", "model switch"), ("masks", "threshold"), ("masks", "rule"),
                              ("masks", "stage"), ("adversarial", "FGSM: epsilon"),
                              ("adversarial", "attack kind (FGSM <-> I-FGSM)"),
                              ("adversarial", "targeted I-FGSM: target class")]:
        assert float(timed[(page, interaction)]) > 0, (page, interaction)


def test_soak_reports_first_peak_and_final_memory(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from app_latency import build_tiny_zoo

    zoo = build_tiny_zoo(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "soak.py"), "--zoo", str(zoo), "--sessions", "2", "--megapixels", "0.5"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "session  2: resident" in result.stdout
    summary = next(line for line in result.stdout.splitlines() if line.startswith("resident memory:"))
    assert "after the first session" in summary and "peak" in summary and "final" in summary
    downloads = next(line for line in result.stdout.splitlines() if "downloads (" in line)
    assert int(downloads.split(";")[1].split()[0]) >= 2 * 5  # at least the Adversarial page's five, per session
    assert result.stdout.strip().splitlines()[-1] in ("PASS", "FAIL")


def test_recipe_speed_reports_whole_runs_with_their_flops(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from sample_images import make_folder

    data = make_folder(tmp_path / "data", {"train": 10, "test": 2})
    report = tmp_path / "speed.json"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "recipe_speed.py"), "--data", str(data), "--runs",
         str(tmp_path / "runs"), "--models", "vgg_att3_concat_pc", "--json", str(report), "--",
         "--epochs", "1", "--width", "0.125", "--batch-size", "8", "--device", "cpu"],
        capture_output=True, text=True, check=True, timeout=300)
    import json

    (row,) = json.loads(report.read_text())["runs"]
    # The whole process is longer than what the trainer logs; FLOPs are those of the run's
    # own model (stage classifiers and loss terms of the recipe included).
    assert row["wall_s"] > row["setup_s"] + row["epochs_s"] > 0
    assert row["startup_s"] > 0 and row["exit_s"] >= 0 and row["setup_phases_s"]["data"] > 0
    assert row["startup_s"] + row["setup_s"] + row["epochs_s"] + row["exit_s"] <= row["wall_s"] + 0.2
    assert row["train_images_per_epoch"] > 0 and row["train_images_per_epoch"] % 8 == 0  # whole batches
    assert row["gflop_per_train_image"] > 0
    assert row["test_error"] is not None and set(row["test_entropy"]) == {"layer7", "layer10", "layer13"}
    # The VGG recipe also scores mirrored and translated views.
    assert row["test_error_flip"] is not None and row["test_error_tta"] is not None
    assert "--seed 0" in row["command"] and row["share_of_measured_bf16_peak"] is None


def test_the_ablation_runs_the_recipe_or_the_short_schedule() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import argparse

    import attention_ablation as ablation

    recipe = argparse.Namespace(schedule="recipe", epochs=None, width=None, data="D", tta_translate=0)
    line = ablation.command("base", 1, recipe, Path("runs"))
    assert "--recipe" not in line and "--epochs" not in line and "--seed" in line
    assert "--tta-translate" not in line
    # A variant's own schedule comes after the shared flags, so it wins (argparse keeps the last).
    recipe.tta_translate = 1
    line = ablation.command("e45", 0, recipe, Path("runs"))
    assert line[line.index("--tta-translate") + 1] == "1" and line[-2:] == ["--epochs", "45"]
    short = argparse.Namespace(schedule="short", epochs=None, width=None, data="D", tta_translate=0)
    line = ablation.command("aux0.5", 0, short, Path("runs"))
    assert line[line.index("--recipe") + 1] == "none" and line[line.index("--epochs") + 1] == "20"
    assert "stage_classifiers=true" in line
    # The ResNets' earlier SGD recipe stays reachable (the recipe itself now takes muon steps).
    line = ablation.command("resnet_att2_sgd", 0, recipe, Path("runs"))
    assert line[line.index("--optimizer") + 1] == "sgd" and "resnet_att2_concat_pc" in line


def test_every_ablation_variant_is_a_valid_run_of_its_model() -> None:
    # A variant's flags go through ltpa train's own parser and configuration, and its model is
    # built with the run's model settings: a misspelt flag or setting fails here, not on the GPU.
    sys.path.insert(0, str(REPO / "bench"))
    import argparse

    import attention_ablation as ablation
    from ltpa.commands import train
    from ltpa.registry import create_model

    recipe = argparse.Namespace(schedule="recipe", epochs=None, width=None, data="D", tta_translate=1)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    configs = {}
    for variant, (model, _) in ablation.VARIANTS.items():
        line = ablation.command(variant, 0, recipe, Path("runs"))
        configs[variant] = config = train.config_from_args(parser.parse_args(line[3:]))
        assert config.model == model and config.tta_translate == 1, variant
        create_model(config.model, num_classes=2, width=0.125, **config.overrides)
    # The VGG recipe's attention settings on RN-att2 keep the recipe's stage classifiers, and, as
    # every RN-att2 variant run before the recipe dropped the head's dropout, the authors' 0.5.
    config = configs["resnet_att2_vgg_levers"]
    assert config.overrides == {"stage_classifiers": True, "normalisation": "softmax,sigmoid_sum",
                                "dropout": 0.5}
    assert (config.aux_weight, config.entropy_weight, config.optimizer) == (0.25, 0.025, "muon")
    assert configs["resnet_att2"].overrides == {"stage_classifiers": True, "dropout": 0.5}
    assert configs["resnet_att2_dropout0"].overrides == {"stage_classifiers": True, "dropout": 0.0}
    # VGG variants likewise keep the 0.5 they were run with before the VGG recipe dropped it; the
    # recipe's own rows train without it.
    assert configs["ema"].overrides["dropout"] == 0.5 and configs["vgg_sgd"].overrides == {
        "dropout": 0.5}
    assert configs["base"].overrides["dropout"] == 0.0 and configs["vgg"].overrides == {
        "dropout": 0.0}
    assert configs["dropout0"].overrides == configs["base"].overrides
    assert configs["vgg_gap"].overrides == {}


def test_data_load_times_cached_loads_and_a_runs_setup(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from sample_images import make_folder

    data = make_folder(tmp_path / "data", {"train": 10, "test": 2})
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "data_load.py"), "--data", str(data), "--repeats", "2",
         "--prepare", "vgg", "--out", str(tmp_path / "run"), "--uncached"],
        capture_output=True, text=True, check=True, timeout=300,
        env={**os.environ, "LTPA_CACHE_DIR": str(tmp_path / "cache")})
    uncached, *lines = result.stdout.splitlines()
    # The uncached load wrote nothing: the first cached-path load still decodes and fills it.
    assert uncached.startswith("uncached load (every file decoded") and "30 + 6 images" in uncached
    assert lines[0].startswith("first load") and "images" in lines[0]
    assert lines[1].startswith("cached load: median") and "over 2" in lines[1]
    assert [line.split(":")[0] for line in lines[2:]] == [
        "setup of a vgg run (1)", "setup of a vgg run (2)"]
    assert (tmp_path / "cache" / "decoded").is_dir() and not (tmp_path / "run").exists()


def test_attention_quality_scores_attention_runs_and_lists_baselines_with_every_scoring(
        tmp_path: Path) -> None:
    import json

    import cv2
    import numpy as np
    import torch

    import ltpa
    from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD

    horses = tmp_path / "horses"
    (horses / "rgb").mkdir(parents=True)
    (horses / "figure_ground").mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        cv2.imwrite(str(horses / "rgb" / f"h{k}.jpg"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[10:30, 12:36] = 255
        cv2.imwrite(str(horses / "figure_ground" / f"h{k}.png"), mask)
    last = {"epoch": 2, "epoch_time_s": 1.5, "val_acc": 0.9, "val_acc_flip": 0.92, "test_acc": 0.8,
            "test_acc_flip": 0.85, "test_acc_tta": 0.875, "entropy": {"layer13": 0.5},
            "test_entropy": {"layer13": 0.25}}
    runs = []
    for name in ("vgg_att1_concat_pc", "vgg"):
        run = tmp_path / name
        run.mkdir()
        torch.manual_seed(0)
        ltpa.save_checkpoint(run / "model.pt", ltpa.create_model(name, width=0.125).eval(),
                             {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN),
                              "std": list(CIFAR10_STD), "input_size": 32, "dataset": "fixture"})
        (run / "log.json").write_text(json.dumps({"epochs": [{"epoch": 1, "epoch_time_s": 2.0}, last]}))
        runs.append(str(run))
    report = tmp_path / "quality.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "attention_quality.py"), "--horses",
                    str(horses), "--json", str(report), "--device", "cpu", *runs],
                   capture_output=True, text=True, check=True, timeout=300)
    prior, attention, baseline = json.loads(report.read_text())
    assert prior["run"] == "centre_prior" and 0 <= prior["pointing"] <= 1
    assert (attention["run"], attention["stage"]) == ("vgg_att1_concat_pc", "layer13")
    assert (attention["val_entropy"], attention["test_entropy"]) == (0.5, 0.25)
    assert 0 <= attention["jaccard_top"] <= 1 and 0 <= attention["pointing"] <= 1
    # The baseline has no maps: one row of its logged errors, every scoring the run logged.
    assert (baseline["run"], baseline["stage"]) == ("vgg", "-") and "pointing" not in baseline
    for row in (attention, baseline):
        assert row["epoch_s"] == 3.5
        errors = {k: round(v, 6) for k, v in row.items() if "_error" in k and v is not None}
        assert errors == {"val_error": 10.0, "val_error_flip": 8.0, "test_error": 20.0,
                          "test_error_flip": 15.0, "test_error_tta": 12.5}
        assert row["val_error_tta"] is None
