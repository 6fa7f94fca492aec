"""The recipe's accuracy levers of the training itself: the orthogonalised filter step
(``--optimizer muon``, ltpa.optim) and alternating training flips (``--train-flip``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ltpa.cli import main as cli
from ltpa.data import DeviceLoader, ImageSet
from ltpa.optim import (OrthogonalisedSGD, _orthogonalised_step_, build_optimizer, is_filter,
                        orthogonalise, param_groups)
from ltpa.models.vgg import VGG_LAYERS
from ltpa.registry import create_model
from ltpa.training import TrainConfig, Trainer


@pytest.mark.parametrize("shape", [(16, 200), (200, 16), (24, 96)])
def test_orthogonalise_brings_every_singular_value_near_one(shape: tuple[int, int]) -> None:
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    matrix[:, 0] *= 50  # badly conditioned: one direction dominates
    values = torch.linalg.svdvals(orthogonalise(matrix).float())
    assert values.shape[0] == min(shape)
    assert 0.55 < float(values.min()) and float(values.max()) < 1.3
    assert orthogonalise(matrix).shape == matrix.shape and orthogonalise(matrix).dtype == matrix.dtype
    stacked = orthogonalise(torch.stack([matrix, 3 * matrix.flip(0)]))
    torch.testing.assert_close(stacked[0], orthogonalise(matrix), atol=2e-2, rtol=0)
    torch.testing.assert_close(stacked[1], orthogonalise(matrix.flip(0)), atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="takes a matrix"):
        orthogonalise(torch.ones(2, 2, 2, 2))


def test_muon_groups_hold_exactly_the_spatial_filters() -> None:
    model = create_model("vgg_att3_concat_pc", width=0.125, stage_classifiers=True)
    groups = param_groups(model, 5e-4, "muon", 0.05)
    filters = [g for g in groups if g.get("orthogonalise")]
    assert len(filters) == 1 and filters[0]["lr"] == 0.05 and filters[0]["weight_decay"] == 0.0
    expected = [m.weight for m in model.modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert len(expected) == len(VGG_LAYERS) == 15  # every conv-BN-ReLU layer; 1x1 ones stay SGD
    assert {id(p) for p in filters[0]["params"]} == {id(p) for p in expected}
    others = [p for g in groups if not g.get("orthogonalise") for p in g["params"]]
    assert not any(is_filter(p) for p in others)
    assert len(others) + len(expected) == len(list(model.parameters()))
    assert not any(g.get("orthogonalise") for g in param_groups(model, 5e-4, "sgd"))
    with pytest.raises(ValueError, match="sgd, muon"):
        param_groups(model, 5e-4, "adam")


def test_a_filter_step_is_orthogonalised_of_the_relative_size_asked_and_keeps_the_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 6, 6))
    optimizer = build_optimizer(model, "muon", lr=0.1, momentum=0.0, nesterov=False,
                                weight_decay=0.0, filter_lr=0.01)
    assert isinstance(optimizer, OrthogonalisedSGD)
    conv, linear = model[0].weight, model[3].weight
    before_conv, before_linear = conv.detach().clone(), linear.detach().clone()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 6, 6)), torch.tensor([0, 1, 0, 1])).backward()
    grad_conv, grad_linear = conv.grad.clone(), linear.grad.clone()
    optimizer.step()
    change = (conv.detach() - before_conv).flatten()
    direction = -orthogonalise(grad_conv.reshape(8, -1)).flatten()
    assert torch.nn.functional.cosine_similarity(change, direction, dim=0) > 0.999
    assert float(change.norm() / before_conv.norm()) == pytest.approx(0.01, rel=0.01)
    assert float(conv.detach().norm()) == pytest.approx(float(before_conv.norm()), rel=1e-5)
    # The classifier is not a filter: a plain SGD step.
    torch.testing.assert_close(linear.detach(), before_linear - 0.1 * grad_linear)


def test_filters_stepped_as_one_stack_per_shape_each_take_their_own_step() -> None:
    # Three filters of two shapes (one of them channels_last, as on CUDA), at a tensor rate as
    # in a captured step graph: each must end where a step of that filter alone takes it.
    torch.manual_seed(1)
    filters = [torch.randn(8, 4, 3, 3), 3 * torch.randn(8, 4, 3, 3),
               torch.randn(6, 8, 3, 3).to(memory_format=torch.channels_last)]
    directions = [torch.randn_like(f) for f in filters]
    rate = torch.tensor(0.05)
    expected = []
    for f, d in zip(filters, directions):
        step = orthogonalise(d.reshape(1, d.shape[0], -1))[0].view_as(f)
        moved = f - step * (rate * f.norm() / step.norm())
        expected.append(moved * (f.norm() / moved.norm()))
    params = [f.clone(memory_format=torch.preserve_format) for f in filters]
    _orthogonalised_step_(params, directions, rate)
    for param, want, before in zip(params, expected, filters):
        torch.testing.assert_close(param, want, rtol=1e-5, atol=1e-6)
        assert float(param.norm()) == pytest.approx(float(before.norm()), rel=1e-5)
    assert params[2].is_contiguous(memory_format=torch.channels_last)


def test_the_filter_step_makes_as_many_calls_for_eight_filters_of_a_shape_as_for_two() -> None:
    # Inside a captured step graph each call is a kernel run after the last: the update's calls
    # must grow with the filter shapes, not with the filters (bench/optimizer_step.py).
    import sys

    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from optimizer_step import count_operations

    def calls(count: int) -> int:
        params = [torch.randn(8, 4, 3, 3) for _ in range(count)]
        directions = [torch.randn_like(p) for p in params]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _orthogonalised_step_(params, directions, torch.tensor(0.1))
        return count_operations(prof.events(), torch.device("cpu"))

    assert calls(8) == calls(2) > 0


def _toy_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epochs: int, **settings) -> Trainer:
    """A VGG on two classes told apart by the red channel of the left half."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 120, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(64) % 2
    images[labels == 1, 0, :, :16] = 250
    sets = (ImageSet(images, labels, ["a", "b"]), ImageSet(images[:16], labels[:16], ["a", "b"]))
    import ltpa.training as training
    monkeypatch.setattr(training, "load_dataset", lambda *args, **kwargs: sets)
    config = TrainConfig(model="vgg", out=str(tmp_path / "run"), width=0.125, epochs=epochs,
                         batch_size=16, device="cpu", validation=0.0, flip=False, **settings)
    trainer = Trainer(config, extend=True)
    trainer.run()
    return trainer


def test_muon_training_learns_and_resumes_onto_its_own_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = dict(optimizer="muon", filter_lr=0.05, lr=0.05, train_flip="alternating")
    trainer = _toy_run(tmp_path, monkeypatch, 4, **settings)
    assert isinstance(trainer.optimizer, OrthogonalisedSGD)
    losses = [row["train_loss"] for row in trainer.log]
    assert losses[-1] < 0.75 * losses[0]  # (label smoothing 0.1 keeps it above about 0.2)
    filters = trainer.optimizer.param_groups[0]["params"]
    buffers = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in filters]
    resumed = _toy_run(tmp_path, monkeypatch, 5, **settings)
    assert [row["epoch"] for row in resumed.log] == [1, 2, 3, 4, 5]
    # The resumed optimiser started from the saved buffers (then took epoch 4's steps).
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert state["config"]["optimizer"] == "muon" and state["config"]["train_flip"] == "alternating"
    assert len(buffers) == len(resumed.optimizer.param_groups[0]["params"])
    with pytest.raises(ValueError, match="optimizer .saved 'muon', now 'sgd'"):
        _toy_run(tmp_path, monkeypatch, 6, optimizer="sgd", lr=0.05, train_flip="alternating")


def _loader(flip: str, seed: int = 0) -> DeviceLoader:
    images = torch.arange(6 * 3 * 4 * 4, dtype=torch.uint8).view(6, 3, 4, 4)
    data = ImageSet(images, torch.zeros(6, dtype=torch.long), ["a"])
    return DeviceLoader(data, 6, None, None, train=True, pad=0, flip=flip, flip_seed=seed,
                        generator=torch.Generator().manual_seed(1))


def _flipped(loader: DeviceLoader, epoch: int) -> list[bool]:
    loader.epoch = epoch
    x, _ = loader.batch(torch.arange(6))
    plain = loader.data.images.float() / 255
    return [bool(torch.equal(x[i], plain[i].flip(2))) for i in range(6)]


def test_alternating_flips_mirror_every_image_every_other_epoch_from_a_seeded_start() -> None:
    loader = _loader("alternating")
    first, second, third = (_flipped(loader, e) for e in (1, 2, 3))
    assert first == third and all(a != b for a, b in zip(first, second))
    assert 0 < sum(first) < 6  # a random start per image, not all the same way
    assert _flipped(_loader("alternating"), 1) == first  # the flip seed fixes it
    assert any(_flipped(_loader("alternating", seed), 1) != first for seed in range(1, 6))
    random = _loader("random")
    assert [_flipped(random, 1) for _ in range(6)] != [_flipped(random, 1)] * 6  # draws each batch
    with pytest.raises(ValueError, match="random, alternating"):
        _loader("sometimes")


@pytest.mark.parametrize("flag,value,message", [
    ("--optimizer", "adam", "invalid choice: 'adam'"),
    ("--train-flip", "sometimes", "invalid choice: 'sometimes'"),
])
def test_unknown_optimiser_and_flip_names_exit_2_with_the_choices(
        tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli(["train", "vgg", "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, value])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="--optimizer must be one of sgd, muon"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="--train-flip must be one of random, alternating"):
        TrainConfig(train_flip="sometimes")
