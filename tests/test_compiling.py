"""Compiling a run's model ahead, in a side process (ltpa.compiling), and its place in a run."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from ltpa import compiling
from ltpa.commands.train import config_from_args
from ltpa.compiling import AheadResult, CompileAhead, CompileJob
from ltpa.recipe import recipe_for
from ltpa.training import TrainConfig, Trainer
from sample_images import make_folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), {"train": 12, "test": 4})


def tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    settings = dict(model="vgg", data=str(data), out=str(out), width=0.125, epochs=2, batch_size=8,
                    device="cpu", compile=True, compile_ahead=True)
    return TrainConfig(**{**settings, **changes})


def fake_side(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Replace the side process by a Python one-liner (it gets the job's JSON as sys.argv[1])."""
    monkeypatch.setattr(compiling, "SIDE_COMMAND", (sys.executable, "-c", script))


def wait_for_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the run wait for the side process before its first epoch (so the switch is at 1)."""
    monkeypatch.setattr(CompileAhead, "finished", lambda self: self.result() is not None)


def record_compiles(monkeypatch: pytest.MonkeyPatch) -> list[type]:
    seen: list[type] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: seen.append(type(self)))
    return seen


def read_log(out: Path) -> dict:
    return json.loads((out / "log.json").read_text())


def test_the_side_process_fills_the_cache_that_the_runs_compile_then_reads(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real compiles on the CPU, in both processes, into an empty cache folder.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    wait_for_side(monkeypatch)
    out = tmp_path / "run"
    Trainer(tiny_config(tiny_data, out)).run()
    log = read_log(out)
    assert log["compiled_from_epoch"] == 1
    ahead = log["compile_ahead"]
    assert ahead["ok"] and 0 < ahead["step_s"] <= ahead["wall_s"]
    assert ahead["phases_s"]["_compile.compile_inner"] > 0  # the side process did compile
    cache = log["compile_cache"]
    # The run compiled nothing itself: forward and backward graphs came from the cache.
    assert cache["fx_graph_hits"] >= 2 and cache["fx_graph_misses"] == 0, cache
    assert cache["aot_autograd_hits"] >= 1 and cache["aot_autograd_misses"] == 0, cache
    assert all(row["train_loss"] > 0 for row in log["epochs"])


def test_the_side_process_gets_the_runs_model_batch_and_loss(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job_file = tmp_path / "job.json"
    fake_side(monkeypatch,
              f"import sys, pathlib; pathlib.Path({str(job_file)!r}).write_text(sys.argv[1])")
    wait_for_side(monkeypatch)
    record_compiles(monkeypatch)
    config = tiny_config(tiny_data, tmp_path / "run", model="vgg_att3_concat_pc", batch_size=64,
                         overrides={"stage_classifiers": True}, aux_weight=0.25,
                         entropy_weight=0.025, label_smoothing=0.1)
    trainer = Trainer(config)
    trainer.run()
    job = CompileJob(**json.loads(job_file.read_text()))
    # Fewer training images than the batch size: the one batch holds all of them.
    assert len(trainer.train_set) < 64 and len(trainer.class_names) == 3
    assert job == CompileJob(model="vgg_att3_concat_pc", num_classes=3,
                             overrides={"stage_classifiers": True, "width": 0.125}, input_size=32,
                             batch_size=len(trainer.train_set), device="cpu", amp=True,
                             channels_last=True, compile_mode="default", compile_scope="model",
                             label_smoothing=0.1, aux_weight=0.25, entropy_weight=0.025,
                             lever_decay=0.0, cudnn_benchmark=True, autocast_cache=True,
                             threads=torch.get_num_threads())


def test_the_side_process_starts_after_the_lever_check(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The check is a forward pass on the CPU; the side process's start-up beside it slowed it.
    events: list[str] = []
    check, start = Trainer._check_levers, CompileAhead.__init__

    def recorded_check(self: Trainer) -> None:
        events.append("lever check")
        check(self)

    def recorded_start(self: CompileAhead, job: CompileJob) -> None:
        events.append("side process")
        start(self, job)

    monkeypatch.setattr(Trainer, "_check_levers", recorded_check)
    monkeypatch.setattr(CompileAhead, "__init__", recorded_start)
    fake_side(monkeypatch, "pass")
    trainer = Trainer(tiny_config(tiny_data, tmp_path / "run", model="vgg_att3_concat_pc",
                                  overrides={"stage_classifiers": True}, aux_weight=0.25))
    trainer.prepare()
    try:
        assert events == ["lever check", "side process"]
        phases = list(trainer.setup_phases_s)
        assert phases.index("lever_check") < phases.index("compile_ahead_start")
    finally:
        trainer.ahead.stop()


def test_a_failed_side_process_is_reported_and_the_run_compiles_itself(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    fake_side(monkeypatch, "import sys; sys.stderr.write('no compiler here'); sys.exit(3)")
    wait_for_side(monkeypatch)
    compiled = record_compiles(monkeypatch)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="ltpa.training"):
        Trainer(tiny_config(tiny_data, out)).run()
    assert "compiling ahead failed" in caplog.text and "no compiler here" in caplog.text
    assert len(compiled) == 1  # the whole model, once, at the first epoch
    log = read_log(out)
    assert log["compiled_from_epoch"] == 1 and log["compile_ahead"]["ok"] is False


def test_a_run_that_ends_before_the_side_process_stops_it_and_never_compiles(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_side(monkeypatch, "import time; time.sleep(120)")
    compiled = record_compiles(monkeypatch)
    started: list[CompileAhead] = []
    original = CompileAhead.__init__

    def keep(self, job):
        original(self, job)
        started.append(self)

    monkeypatch.setattr(CompileAhead, "__init__", keep)
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(tiny_data, out))
    trainer.run()
    assert compiled == [] and trainer.ahead is None
    assert len(started) == 1 and started[0].process.poll() is not None  # killed, not left behind
    log = read_log(out)
    assert log["compiled_from_epoch"] is None and log["compile_ahead"] is None


def test_the_side_process_switches_the_run_at_the_epoch_after_it_ends(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_side(monkeypatch,
              "import json; print(json.dumps({'step_s': 0.5, 'phases_s': {'x': 1.0}}))")
    compiled = record_compiles(monkeypatch)
    # finished() says no until the second epoch's check.
    checks: list[bool] = []

    def finished(self) -> bool:
        checks.append(True)
        return len(checks) >= 2 and self.result() is not None

    monkeypatch.setattr(CompileAhead, "finished", finished)
    out = tmp_path / "run"
    Trainer(tiny_config(tiny_data, out, epochs=3)).run()
    log = read_log(out)
    assert log["compiled_from_epoch"] == 2 and len(compiled) == 1
    assert log["compile_ahead"]["step_s"] == 0.5 and log["compile_ahead"]["phases_s"] == {"x": 1.0}


def test_with_the_compilers_caches_off_the_side_process_says_so_and_the_run_compiles_itself(
        tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # read by the side process
    wait_for_side(monkeypatch)
    compiled = record_compiles(monkeypatch)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="ltpa.training"):
        Trainer(tiny_config(tiny_data, out)).run()
    assert "the compiler's on-disk caches are off" in caplog.text
    log = read_log(out)
    assert log["compile_ahead"]["ok"] is False and log["compile_ahead"]["wall_s"] < 60
    assert len(compiled) == 1 and log["compiled_from_epoch"] == 1


def test_compile_ahead_needs_compile_and_a_single_process(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--compile-ahead .* needs --compile"):
        TrainConfig(compile_ahead=True)
    config = tiny_config(tiny_data, tmp_path / "run")
    rank = types.SimpleNamespace(device=torch.device("cpu"))
    with pytest.raises(ValueError, match="--compile-ahead is for single-process runs"):
        Trainer(config, distributed=rank).prepare()


def test_the_recipe_compiles_ahead_on_cuda_and_no_compile_turns_it_off(tmp_path: Path) -> None:
    assert recipe_for("vgg_att3_concat_pc", cuda=True)["compile_ahead"]
    assert not recipe_for("vgg_att3_concat_pc", cuda=False)["compile_ahead"]
    from ltpa.cli import build_parser

    parser = build_parser()

    def config(*flags: str) -> TrainConfig:
        return config_from_args(parser.parse_args(["train", "vgg", "--device", "cpu", *flags]))

    assert not config().compile_ahead  # the CPU recipe compiles nothing
    assert config("--compile", "--compile-ahead").compile_ahead
    assert not config("--compile").compile_ahead
    assert not config("--compile", "--compile-ahead", "--no-compile-ahead").compile_ahead
    with pytest.raises(ValueError, match="needs --compile"):
        config("--no-compile", "--compile-ahead")


def test_the_side_command_refuses_a_missing_job() -> None:
    done = subprocess.run([sys.executable, "-m", "ltpa.compiling"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: python -m ltpa.compiling JOB_JSON" in done.stderr
