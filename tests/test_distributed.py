"""Data-parallel training (ltpa.distributed) on the CPU: gloo, two processes, a tiny model.

BatchNorm is the one thing two CPU processes cannot do like one: each rank normalises its half of
the global batch with the half's statistics (SyncBatchNorm is CUDA only). The single-process
reference therefore runs each global batch as its two halves ("ghost" batch norm): the same
batches, augmentation, initial weights, optimiser and schedule, so the weights must agree to float
rounding. With SyncBatchNorm on two GPUs the reference is the plain single-process run (last test).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ltpa.checkpoint import load_checkpoint
from sample_images import make_folder
from ltpa.cli import main as cli
from ltpa.data import DeviceLoader, ImageSet
from ltpa.distributed import (DataParallelOptions, RankSliceLoader, check_process_count,
                              per_rank_batch, train_data_parallel)
from ltpa.training import STATE_FILE, TrainConfig, Trainer, evaluate, training_loss

REPO = Path(__file__).resolve().parents[1]
# Float rounding of two processes against one over a few steps stays far below this.
WEIGHT_TOLERANCE = 1e-5
EPOCHS = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 36 training images: 4 held out for validation, 32 = two global batches of 16 (8 per rank).
    return make_folder(tmp_path_factory.mktemp("data"), {"train": 12, "test": 4})


def recipe(data: Path, out: Path, **changes) -> TrainConfig:
    """A tiny run; no dropout (its masks are drawn per rank). Augmentation stays on."""
    values = dict(model="vgg_att1_concat_pc", data=str(data), out=str(out), width=0.125,
                  overrides={"dropout": 0.0}, epochs=EPOCHS, batch_size=16, lr=0.05,
                  device="cpu", cutout=8)
    return TrainConfig(**{**values, **changes})


def cli_args(config: TrainConfig) -> list[str]:
    # --recipe none: the run is the TrainConfig above, not the fast recipe's settings.
    return ["train", config.model, "--recipe", "none", "--data", config.data, "--out", config.out, "--width",
            str(config.width), "--set", "dropout=0.0", "--epochs", str(config.epochs),
            "--batch-size", str(config.batch_size), "--lr", str(config.lr), "--device", "cpu",
            "--cutout", str(config.cutout)]


@pytest.fixture(scope="module")
def two_process_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of ``recipe`` on two gloo processes, through ``ltpa train --nproc 2``."""
    out = tmp_path_factory.mktemp("runs") / "two"
    assert cli(cli_args(recipe(data, out)) + ["--nproc", "2", "--dist-timeout", "60"]) == 0
    return out


def ghost_batch_norm_reference(config: TrainConfig, world_size: int) -> tuple[Trainer, list[float]]:
    """One process training ``config`` with each global batch run as ``world_size`` slices:
    BatchNorm statistics per slice, rank 0's running statistics kept, the slices' mean loss.
    Returns the trainer (its model trained) and the mean training loss of each epoch."""
    trainer = Trainer(config)
    trainer.prepare()
    model, epoch_losses = trainer.model, []
    for _ in range(config.epochs):
        model.train()
        losses = []
        for x, y in trainer.train_loader:
            trainer.optimizer.zero_grad(set_to_none=True)
            loss, rank0_buffers = 0.0, None
            for rank, (xs, ys) in enumerate(zip(x.tensor_split(world_size), y.tensor_split(world_size))):
                slice_loss = training_loss(model(xs), ys, config.label_smoothing) / world_size
                slice_loss.backward()  # the gradients of the slices add up, as DDP's average
                loss += float(slice_loss.detach())
                if rank == 0:
                    rank0_buffers = [b.clone() for b in model.buffers()]
            with torch.no_grad():
                for buffer, kept in zip(model.buffers(), rank0_buffers):
                    buffer.copy_(kept)
            trainer.optimizer.step()
            trainer.scheduler.step()
            losses.append(loss)
        epoch_losses.append(sum(losses) / len(losses))
    return trainer, epoch_losses


def test_two_processes_train_like_one_process_with_the_same_global_batch(
        data: Path, two_process_run: Path, tmp_path: Path) -> None:
    state = torch.load(two_process_run / STATE_FILE, weights_only=True)
    log = json.loads((two_process_run / "log.json").read_text())["epochs"]
    reference, losses = ghost_batch_norm_reference(recipe(data, tmp_path / "reference"), 2)
    expected = reference.model.state_dict()
    assert set(state["model"]) == set(expected)
    for key, value in expected.items():
        assert torch.allclose(state["model"][key].float(), value.float(), atol=WEIGHT_TOLERANCE,
                              rtol=0), key
    # The same number of steps and schedule; the epoch losses are the global batches' means.
    assert state["scheduler"]["last_epoch"] == reference.scheduler.last_epoch == EPOCHS * 2
    assert [row["train_loss"] for row in log] == pytest.approx(losses, abs=1e-5)
    # The sharded evaluation, reduced, is the evaluation of the saved weights on every image.
    reference.model.load_state_dict(state["model"])
    for loader, prefix in ((reference.test_loader, "test"), (reference.validation_loader, "val")):
        whole = evaluate(reference.model, loader, 3, flip=True)
        assert log[-1][f"{prefix}_acc"] == whole.accuracy
        assert log[-1][f"{prefix}_acc_flip"] == whole.flip_accuracy
        assert log[-1][f"{prefix}_loss"] == pytest.approx(whole.loss, abs=1e-5)
    assert log[-1]["entropy"] == pytest.approx(
        evaluate(reference.model, reference.validation_loader, 3).entropy, abs=1e-5)
    _, meta = load_checkpoint(two_process_run / "model.pt")
    assert meta["training"]["data_parallel"] == {"processes": 2, "backend": "gloo", "sync_bn": False}


def test_rank_slices_of_a_global_batch_are_the_single_process_batch() -> None:
    generator = torch.Generator()
    images = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8, generator=generator)
    data = ImageSet(images, torch.arange(23), ["a"])

    def loader() -> DeviceLoader:
        return DeviceLoader(data, 6, [0.5] * 3, [0.25] * 3, train=True, pad=2, cutout=3,
                            generator=torch.Generator().manual_seed(5))

    single = loader()
    batches = list(single)  # 6, 6, 6, 5
    for world_size in (2, 3):
        ranks = [RankSliceLoader(loader(), rank, world_size) for rank in range(world_size)]
        sliced = [list(rank_loader) for rank_loader in ranks]
        assert all(len(rank_loader) == len(batches) == len(parts)
                   for rank_loader, parts in zip(ranks, sliced))
        for step, (x, y) in enumerate(batches):
            assert torch.equal(torch.cat([parts[step][0] for parts in sliced]), x)
            assert torch.equal(torch.cat([parts[step][1] for parts in sliced]), y)
        for rank_loader in ranks:  # every rank's generator is where the single process's is
            assert torch.equal(rank_loader.generator.get_state(), single.generator.get_state())
    # A last batch smaller than the world size is skipped on every rank.
    assert len(RankSliceLoader(loader(), 0, 6)) == 3 and len(list(RankSliceLoader(loader(), 5, 6))) == 3


def test_bad_world_sizes_and_process_counts_are_refused(data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert per_rank_batch(256, 8) == 32
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        per_rank_batch(16, 3)
    with pytest.raises(ValueError, match="asks for 4 GPUs and this machine has 2"):
        check_process_count(4, torch.device("cuda"), 2)
    with pytest.raises(ValueError, match="GPU of its local rank"):
        check_process_count(1, torch.device("cuda", 1), 2)
    with pytest.raises(ValueError, match="positive integer"):
        check_process_count(0, torch.device("cpu"), 0)
    out = tmp_path / "refused"
    for extra, message in ((["--nproc", "3"], "--batch-size 16 does not split over 3 processes"),
                           (["--nproc", "2", "--sync-bn"], "--sync-bn needs CUDA"),
                           (["--sync-bn"], "--sync-bn applies to data-parallel runs")):
        assert cli(cli_args(recipe(data, out)) + extra) == 2
        assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was written


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_worker(rank: int, port: int, config: dict, record: str, die_at_epoch: int) -> None:
    """One gloo rank (started in a fresh process): trains ``config``, noting every file written;
    with ``die_at_epoch``, rank 1 dies when that epoch starts. Writes its outcome as JSON."""
    import ltpa.training as training

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    written: list[str] = []
    save, save_checkpoint, atomic_json = torch.save, training.save_checkpoint, training._atomic_json

    def noted_save(obj, target, *args, **kwargs):
        if isinstance(target, (str, Path)):  # not the in-memory buffers of the collectives
            written.append(Path(target).name)
        return save(obj, target, *args, **kwargs)

    torch.save = noted_save
    training.save_checkpoint = lambda path, *a, **k: (written.append(Path(path).name),
                                                      save_checkpoint(path, *a, **k))[1]
    training._atomic_json = lambda path, *a: (written.append(Path(path).name), atomic_json(path, *a))[1]
    train_epoch = training.Trainer._train_epoch

    def dying_epoch(self, epoch):
        if rank == 1 and epoch == die_at_epoch:
            os._exit(17)
        return train_epoch(self, epoch)

    training.Trainer._train_epoch = dying_epoch
    try:
        log = train_data_parallel(TrainConfig(**config), DataParallelOptions(timeout_s=60))
        outcome = {"log": [row["epoch"] for row in log]}
    except Exception as error:  # the outcome is what the test checks
        outcome = {"error": f"{type(error).__name__}: {error}"}
    outcome["written"] = written
    Path(record, f"rank{rank}.json").write_text(json.dumps(outcome))


def run_ranks(configs: list[TrainConfig], record: Path, die_at_epoch: int = 0) -> list[dict]:
    """Two ranks in fresh processes (torch.multiprocessing's spawn); their outcomes."""
    record.mkdir(parents=True, exist_ok=True)
    context = torch.multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_rank_worker,
                                 args=(rank, port, asdict(config), str(record), die_at_epoch))
                 for rank, config in enumerate(configs)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode is not None, "a rank hung"
    return [json.loads(path.read_text()) if (path := record / f"rank{r}.json").is_file() else {}
            for r in range(len(configs))]


def test_a_run_whose_rank_died_resumes_on_one_and_on_two_processes(
        data: Path, two_process_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    config = recipe(data, out)
    rank0, rank1 = run_ranks([config, config], tmp_path / "record", die_at_epoch=2)
    assert rank1 == {}  # it died before writing its outcome
    assert rank0["error"].startswith(("RuntimeError", "DistBackendError")), rank0
    # Only rank 0 wrote files, and the last finished epoch is intact.
    assert {"log.json", "model.pt", "state.pt.tmp"} <= set(rank0["written"])
    saved = torch.load(out / STATE_FILE, weights_only=True)
    assert saved["epoch"] == 1 and sorted(p.name for p in out.iterdir()) == ["log.json", "model.pt", "state.pt"]
    first, second = saved["rank_torch_rng"]  # seeded per rank
    assert not torch.equal(first, second)
    shutil.copytree(out, tmp_path / "as_one")
    # As two processes, through torchrun: the same weights as the uninterrupted run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "-m", "ltpa", "train", "--resume", str(out),
                           "--dist-timeout", "60"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    uninterrupted = torch.load(two_process_run / STATE_FILE, weights_only=True)
    resumed = torch.load(out / STATE_FILE, weights_only=True)
    for key, value in uninterrupted["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=WEIGHT_TOLERANCE,
                              rtol=0), key
    # As one process: it continues the same schedule on the same batches (BatchNorm now sees
    # whole batches, so its weights are not the two-process ones).
    assert cli(["train", "--resume", str(tmp_path / "as_one")]) == 0
    alone = torch.load(tmp_path / "as_one" / STATE_FILE, weights_only=True)
    assert [row["epoch"] for row in alone["log"]] == [1, 2]
    assert torch.equal(alone["generator"], uninterrupted["generator"])
    assert alone["scheduler"]["last_epoch"] == uninterrupted["scheduler"]["last_epoch"]
    assert alone["log"][1]["lr"] == uninterrupted["log"][1]["lr"]


def test_ranks_with_different_settings_refuse_to_train(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mismatch"
    outcomes = run_ranks([recipe(data, out), recipe(data, out, lr=0.5)], tmp_path / "record")
    for outcome in outcomes:
        assert outcome["error"] == (
            "ValueError: the ranks disagree on their settings: rank 1 differs from rank 0 in lr "
            "(rank 0: 0.05, rank 1: 0.5). Start every rank with the same command and data")
        assert outcome["written"] == []
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (NCCL, SyncBatchNorm)")
def test_two_gpus_with_sync_batch_norm_train_like_one_gpu(data: Path, tmp_path: Path) -> None:
    base = dict(device="cuda", amp=False, channels_last=False)
    single = recipe(data, tmp_path / "one", **base)
    Trainer(single).run()
    double = recipe(data, tmp_path / "two", **base)
    args = [a if a != "cpu" else "cuda" for a in cli_args(double)]
    assert cli(args + ["--no-amp", "--no-channels-last", "--nproc", "2", "--sync-bn"]) == 0
    one = torch.load(tmp_path / "one" / STATE_FILE, weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / STATE_FILE, weights_only=True)["model"]
    for key, value in one.items():
        assert torch.allclose(two[key].float(), value.float(), atol=1e-4, rtol=0), key
