"""The captured training step (ltpa.step_graph): its SGD update is torch.optim.SGD's, and on CUDA
the replayed graph follows the eager trajectory."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from ltpa.cli import main as cli
from ltpa.optim import build_optimizer, sgd_update_
from ltpa.step_graph import GraphedStep, learning_rate_tensors, refresh_learning_rates
from ltpa.training import TrainConfig, Trainer
from sample_images import make_folder

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA GPU; none is present")


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def two_groups(model: nn.Module, unused: nn.Parameter | None = None) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1] + ([unused] if unused is not None else [])
    return [{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0.0}]


def backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    for p in model.parameters():
        p.grad = None
    nn.functional.cross_entropy(model(x), y).backward()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), {"train": 12, "test": 4})


@pytest.mark.parametrize("momentum,nesterov", [(0.9, True), (0.9, False), (0.0, False)])
def test_sgd_update_takes_the_steps_torch_sgd_takes(momentum: float, nesterov: bool) -> None:
    ours, theirs = small_net(), small_net()
    # A parameter that never gets a gradient is left alone by both (no buffer, no decay).
    unused_ours, unused_theirs = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt_ours = torch.optim.SGD(two_groups(ours, unused_ours), lr=0.1, momentum=momentum,
                               nesterov=nesterov)
    opt_theirs = torch.optim.SGD(two_groups(theirs, unused_theirs), lr=0.1, momentum=momentum,
                                 nesterov=nesterov)
    rates = learning_rate_tensors(opt_ours, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    for step, lr in enumerate([0.05, 0.2, 0.1, 0.01, 0.3]):
        x = torch.randn(6, 3, 8, 8, generator=generator)
        y = torch.randint(0, 4, (6,), generator=generator)
        for opt in (opt_ours, opt_theirs):
            for group in opt.param_groups:
                group["lr"] = lr
        refresh_learning_rates(opt_ours, rates)
        assert float(rates[0]) == pytest.approx(lr)
        backward(ours, x, y)
        backward(theirs, x, y)
        sgd_update_(opt_ours, rates)
        opt_theirs.step()
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"step {step}")
    assert torch.equal(unused_ours.detach(), torch.ones(3))
    assert unused_ours not in opt_ours.state or opt_ours.state[unused_ours].get("momentum_buffer") is None
    # The buffers are the optimiser's own: torch.optim.SGD continues from our state_dict.
    if momentum:
        resumed = copy.deepcopy(ours)
        opt_resumed = torch.optim.SGD(two_groups(resumed), lr=0.1, momentum=momentum, nesterov=nesterov)
        state = copy.deepcopy(opt_ours.state_dict())  # as read back from a file: no shared buffers
        state["param_groups"][1]["params"] = state["param_groups"][1]["params"][:-1]  # no unused
        opt_resumed.load_state_dict(state)
        x, y = torch.randn(6, 3, 8, 8, generator=generator), torch.randint(0, 4, (6,), generator=generator)
        backward(ours, x, y)
        backward(resumed, x, y)
        sgd_update_(opt_ours, rates)
        opt_resumed.step()
        for a, b in zip(ours.parameters(), resumed.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_sgd_update_refuses_dampening() -> None:
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, dampening=0.1)
    backward(model, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="dampening"):
        sgd_update_(opt, learning_rate_tensors(opt, torch.device("cpu")))


def test_step_graph_is_refused_off_cuda_and_with_a_graph_compile_mode(tiny_data: Path, tmp_path: Path) -> None:
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         epochs=1, batch_size=4, device="cpu", step_graph=True, validation=0.0)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Trainer(config).run()
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="replays its own CUDA graph"):
        TrainConfig(step_graph=True, compile=True, compile_mode="reduce-overhead")
    TrainConfig(step_graph=True, compile=True, compile_mode="default")  # a valid combination


def test_train_cli_names_the_problem_with_step_graph_on_the_cpu(tiny_data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    code = cli(["train", "vgg", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                "--width", "0.125", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                "--step-graph"])
    assert code == 2
    assert "--step-graph needs a CUDA device" in capsys.readouterr().err


@needs_cuda
@pytest.mark.parametrize("optimizer", ["sgd", "muon"])
def test_graphed_step_replays_the_eager_trajectory(optimizer: str) -> None:
    device = torch.device("cuda")
    eager_model, graph_model = small_net().to(device), small_net().to(device)

    def make_step(model: nn.Module):
        opt = (torch.optim.SGD(two_groups(model), lr=0.1, momentum=0.9, nesterov=True)
               if optimizer == "sgd" else
               build_optimizer(model, "muon", 0.1, 0.9, True, 5e-4, filter_lr=0.05))
        rates = learning_rate_tensors(opt, device)

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            for p in model.parameters():
                p.grad = None
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            sgd_update_(opt, rates)
            return logits, loss
        return step, opt, rates

    eager_step, eager_opt, eager_rates = make_step(eager_model)
    step, opt, rates = make_step(graph_model)
    graphed = GraphedStep(step, warmup=2)
    generator = torch.Generator().manual_seed(3)
    for i in range(8):
        n = 6 if i < 7 else 4  # the last batch is short: it runs eagerly
        x = torch.randn(n, 3, 8, 8, generator=generator).to(device)
        y = torch.randint(0, 4, (n,), generator=generator).to(device)
        for o, r in ((eager_opt, eager_rates), (opt, rates)):
            for group in o.param_groups:
                group["lr"] = 0.1 / (i + 1)
            refresh_learning_rates(o, r)
        _, eager_loss = eager_step(x, y)
        _, graph_loss = graphed(x, y)
        assert graphed.captured == (i >= 2)
        torch.testing.assert_close(graph_loss, eager_loss, rtol=1e-4, atol=1e-5, msg=f"batch {i}")
    for a, b in zip(graph_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(graph_model.buffers(), eager_model.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_cuda
def test_trainer_with_step_graph_trains_resumes_and_logs(tiny_data: Path, tmp_path: Path) -> None:
    base = dict(model="vgg_att3_concat_pc", data=str(tiny_data), width=0.125, batch_size=4,
                device="cuda", validation=0.0, step_graph=True, aux_weight=0.5, entropy_weight=0.05,
                overrides={"stage_classifiers": True}, lr=0.05)
    # 12 images in batches of 4: three warm-up steps in epoch 1, the capture and replays after.
    trainer = Trainer(TrainConfig(out=str(tmp_path / "run"), epochs=2, **base))
    log = trainer.run()
    assert [row["epoch"] for row in log] == [1, 2]
    assert trainer.graphed_steps[""].captured
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in log)
    assert set(log[-1]["entropy"]) == {"layer7", "layer10", "layer13"}
    # The replays moved the weights: a resumed run's third epoch changes them again.
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    resumed = Trainer(TrainConfig(out=str(tmp_path / "run"), epochs=3, **base), extend=True)
    assert [row["epoch"] for row in resumed.run()] == [1, 2, 3]
    after = resumed.model.state_dict()
    assert any(not torch.equal(before[k].cpu(), after[k].cpu()) for k in before if before[k].is_floating_point())


@needs_cuda
def test_quantisation_aware_epochs_replay_their_own_graph_and_ship_what_they_logged(
        tiny_data: Path, tmp_path: Path) -> None:
    import ltpa
    from ltpa.training import evaluate

    # fp32 (no autocast), so the shipped file's loss can be compared closely with the log's.
    config = TrainConfig(model="vgg", data=str(tiny_data), out=str(tmp_path / "run"), width=0.125,
                         batch_size=4, device="cuda", validation=0.0, step_graph=True, epochs=4,
                         qat="int4", qat_epochs=2, lr=0.05, flip=False, amp=False)
    trainer = Trainer(config)
    log = trainer.run()
    assert set(trainer.graphed_steps) == {"", "int4"}
    assert all(step.captured for step in trainer.graphed_steps.values())
    model, meta = ltpa.load_checkpoint(tmp_path / "run" / "model.pt", device="cuda")
    int4, _ = ltpa.load_checkpoint(ltpa.save_checkpoint(tmp_path / "int4.pt", model, meta, "int4"),
                                   device="cuda")
    # The last epoch was scored on the weights as int4 storage rounds them.
    shipped = evaluate(int4, trainer.test_loader, len(trainer.class_names))
    assert shipped.loss == pytest.approx(log[-1]["test_loss"], rel=1e-4)
