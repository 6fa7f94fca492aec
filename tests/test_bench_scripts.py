"""bench/train_zoo.sh turns its GPU plans into the right ``ltpa zoo train`` calls."""
from __future__ import annotations

import os
import sys
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stand_in_python(tmp_path: Path, **variables: str) -> dict[str, str]:
    """An environment whose python3 prints its arguments: each call's log then holds its command
    line. ``variables`` are added; PRECISION, VARIANT and SETTINGS are unset unless given."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text('#!/bin/sh\necho "$@"\n')
    (shim / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PRECISION", "VARIANT", "SETTINGS")}
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


def test_train_speed_prints_per_step_loop_and_eval_throughput() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_speed.py"), "--device", "cpu", "--ids",
         "vgg_gap", "--steps", "1", "--batch-size", "4"],
        capture_output=True, text=True, check=True, timeout=300)
    lines = result.stdout.splitlines()
    assert "train images/s (per step) | train images/s (loop) | eval images/s" in lines[1]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:3] == ["vgg_gap", "0.7", "4"]
    assert all(float(c.replace(",", "")) > 0 for c in cells[3:])
