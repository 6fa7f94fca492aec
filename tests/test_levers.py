"""Attention-quality levers (temperature, sigmoid_sum, per-stage classifiers, entropy term), the
validation split, flip test-time augmentation, the weight average, and `ltpa train`'s refusals."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch

from ltpa.cli import main as cli
from ltpa.data import ImageSet
from ltpa.layers.attention import AttentionBlock
from ltpa.models.outputs import ModelOutput
from ltpa.registry import create_model
from ltpa.training import (STATE_FILE, TrainConfig, Trainer, evaluate, shift_images,
                           lever_scale, split_validation, training_loss)
from ltpa.data import DeviceLoader


def toy_sets(n: int = 60) -> tuple[ImageSet, ImageSet]:
    """Two classes told apart by the red channel of the left half (learnable in a few steps)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 120, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.arange(n) % 2
    images[labels == 1, 0, :, :16] = 250
    return (ImageSet(images, labels, ["a", "b"]), ImageSet(images[:20], labels[:20], ["a", "b"]))


def small(model: str = "vgg_att3_concat_pc", **overrides) -> torch.nn.Module:
    return create_model(model, width=0.125, **overrides).eval()


# ------------------------------------------------------------------------------ model levers
def test_fixed_temperature_divides_the_scores_before_the_softmax() -> None:
    torch.manual_seed(0)
    plain = AttentionBlock(16, 16, "pc")
    hot = AttentionBlock(16, 16, "pc", temperature=0.5)
    hot.load_state_dict(plain.state_dict())
    local, global_feature = torch.randn(2, 16, 4, 4), torch.randn(2, 16)
    base, tempered = plain(local, global_feature), hot(local, global_feature)
    assert torch.allclose(tempered.scores, base.scores)  # raw scores are reported unchanged
    expected = torch.softmax(2 * base.scores.flatten(1), dim=1).view_as(base.attention)
    assert torch.allclose(tempered.attention, expected, atol=1e-6)


def test_learned_temperature_is_a_trained_parameter_starting_at_one() -> None:
    block = AttentionBlock(16, 16, "pc", temperature="learned")
    assert block.current_temperature() == pytest.approx(1.0)
    out = block(torch.randn(2, 16, 4, 4), torch.randn(2, 16))
    (out.attention.square().sum()).backward()
    assert block.log_temperature.grad is not None and block.log_temperature.grad.abs() > 0


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf"), 1e6, "hot", True])
def test_out_of_range_temperatures_are_refused_with_the_range(bad) -> None:
    with pytest.raises(ValueError, match="temperature must be 'learned' or a number from 0.01 to 100"):
        create_model("vgg_att3_concat_pc", width=0.125, temperature=bad)


def test_sigmoid_sum_maps_sum_to_one_and_weight_a_sum() -> None:
    block = AttentionBlock(8, 8, "pc", normalisation="sigmoid_sum")
    local = torch.randn(3, 8, 5, 5)
    out = block(local, torch.randn(3, 8))
    assert torch.allclose(out.attention.sum(dim=(2, 3)), torch.ones(3, 1), atol=1e-5)
    assert torch.allclose(out.descriptor, (out.attention * local).sum(dim=(2, 3)), atol=1e-5)
    gates = torch.sigmoid(out.scores)
    assert torch.allclose(out.attention, gates / gates.sum(dim=(2, 3), keepdim=True), atol=1e-6)


def test_a_normalisation_list_gives_each_tapped_layer_its_own() -> None:
    mixed = small(normalisation="softmax,softmax,sigmoid_sum")
    assert [b.normalisation for b in mixed.attention] == ["softmax", "softmax", "sigmoid_sum"]
    out = mixed(torch.randn(2, 3, 32, 32))
    # Every stage's map still sums to 1, and the last one is its sigmoid gates over their sum.
    for stage_map in out.maps:
        assert torch.allclose(stage_map.sum(dim=(2, 3)), torch.ones(2, 1), atol=1e-5)
    gates = torch.sigmoid(out.scores[-1])
    assert torch.allclose(out.maps[-1], gates / gates.sum(dim=(2, 3), keepdim=True), atol=1e-6)
    one_name = small(normalisation="sigmoid_sum")
    assert [b.normalisation for b in one_name.attention] == ["sigmoid_sum"] * 3
    rn = create_model("resnet_att2_concat_pc", width=0.125, depth=11,
                      normalisation="sigmoid_sum, softmax")
    assert [b.normalisation for b in rn.attention] == ["sigmoid_sum", "softmax"]


@pytest.mark.parametrize("bad, message", [("softmax,sigmoid_sum", "taps 3 layers, got 2 names"),
                                          ("softmax,softmax,tanh", "valid choices")])
def test_a_normalisation_list_of_the_wrong_length_or_names_is_refused(bad: str,
                                                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small(normalisation=bad)


def test_stage_classifiers_give_one_logit_set_per_stage() -> None:
    x = torch.randn(2, 3, 32, 32)
    with_heads = small(stage_classifiers=True)(x)
    assert len(with_heads.stage_logits) == 3 and all(s.shape == (2, 10) for s in with_heads.stage_logits)
    assert small()(x).stage_logits == ()
    indep = small("vgg_att3_indep_pc")(x)
    assert len(indep.stage_logits) == 3
    assert torch.allclose(sum(indep.stage_logits), indep.logits, atol=1e-5)
    with pytest.raises(ValueError, match="concat head"):
        create_model("vgg_att3_indep_pc", width=0.125, stage_classifiers=True)
    with pytest.raises(ValueError, match="does not accept"):
        create_model("vgg", width=0.125, stage_classifiers=True)


def test_training_loss_adds_each_term_with_its_weight() -> None:
    torch.manual_seed(0)
    out = small(stage_classifiers=True)(torch.randn(4, 3, 32, 32))
    y = torch.tensor([0, 1, 2, 3])
    plain = training_loss(out, y, 0.0)
    assert torch.allclose(plain, torch.nn.functional.cross_entropy(out.logits, y))
    from ltpa.maps import batch_entropy
    entropy = torch.stack([batch_entropy(m) for m in out.maps]).mean()
    assert torch.allclose(training_loss(out, y, 0.0, entropy_weight=0.3), plain + 0.3 * entropy)
    stage = torch.stack([torch.nn.functional.cross_entropy(s, y) for s in out.stage_logits]).mean()
    assert torch.allclose(training_loss(out, y, 0.0, aux_weight=0.5), plain + 0.5 * stage)


def test_lever_scale_holds_then_falls_linearly_to_zero_over_the_decay_share() -> None:
    assert [lever_scale(step, 100, 0.0) for step in (0, 50, 100)] == [1.0, 1.0, 1.0]
    assert [lever_scale(step, 100, 0.5) for step in (0, 50, 75, 100)] == [1.0, 1.0, 0.5, 0.0]
    assert [lever_scale(step, 100, 1.0) for step in (0, 25, 100)] == [1.0, 0.75, 0.0]


def test_the_lever_factor_scales_both_lever_terms_and_not_the_classifier() -> None:
    torch.manual_seed(0)
    out = small(stage_classifiers=True)(torch.randn(4, 3, 32, 32))
    y = torch.tensor([0, 1, 2, 3])
    plain = training_loss(out, y, 0.0)
    full = training_loss(out, y, 0.0, aux_weight=0.5, entropy_weight=0.2)
    half = training_loss(out, y, 0.0, aux_weight=0.5, entropy_weight=0.2,
                         lever_factor=torch.tensor(0.5))
    assert torch.allclose(half - plain, 0.5 * (full - plain))
    assert torch.allclose(training_loss(out, y, 0.0, 0.5, 0.2, lever_factor=0.0), plain)


def test_a_run_with_lever_decay_trains_each_step_with_the_scheduled_factor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ltpa.training as training

    factors = []
    real_loss = training.training_loss

    def recording_loss(out, y, *args):
        factors.append(float(args[-1]))
        return real_loss(out, y, *args)

    monkeypatch.setattr(training, "training_loss", recording_loss)
    trainer = run_toy(tmp_path, monkeypatch, "decay", aux_weight=0.5, entropy_weight=0.1,
                      lever_decay=0.5, overrides={"stage_classifiers": True})
    total = trainer.total_steps
    assert len(factors) == total > 2
    assert factors == pytest.approx([lever_scale(step, total, 0.5) for step in range(total)])
    assert factors[0] == 1.0 and factors[-1] < 1.0


def test_lever_decay_without_a_lever_is_refused() -> None:
    with pytest.raises(ValueError, match="--lever-decay scales the attention levers"):
        TrainConfig(model="vgg_att3_concat_pc", lever_decay=0.5)


def test_the_entropy_term_sharpens_maps_when_trained() -> None:
    from ltpa.maps import batch_entropy

    torch.manual_seed(0)
    model = small()
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10

    def mean_entropy() -> float:
        model.eval()
        with torch.no_grad():
            return float(torch.stack([batch_entropy(m) for m in model(x).maps]).mean())

    before = mean_entropy()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        model.train()
        optimiser.zero_grad()
        training_loss(model(x), y, 0.0, entropy_weight=5.0).backward()
        optimiser.step()
    assert mean_entropy() < before - 0.05


# ------------------------------------------------------------------------------ training
def test_validation_split_is_fixed_disjoint_and_independent_of_the_seed() -> None:
    train, _ = toy_sets(100)
    kept, held = split_validation(train, 0.2, seed=0)
    again, held_again = split_validation(train, 0.2, seed=0)
    other, held_other = split_validation(train, 0.2, seed=1)
    assert len(held) == 20 and len(kept) == 80
    assert torch.equal(held.images, held_again.images)
    assert not torch.equal(held.images, held_other.images)
    as_rows = lambda s: {bytes(row.numpy()) for row in s.images.flatten(1)}
    assert not as_rows(kept) & as_rows(held)
    assert split_validation(train, 0.0, 0) == (train, None)


def run_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **settings) -> Trainer:
    sets = toy_sets()
    import ltpa.training as training
    monkeypatch.setattr(training, "load_dataset", lambda *args, **kwargs: sets)
    config = TrainConfig(**{"model": "vgg_att3_concat_pc", "out": str(tmp_path / name),
                            "width": 0.125, "epochs": 2, "batch_size": 16, "device": "cpu",
                            "validation": 0.2, **settings})
    trainer = Trainer(config)
    trainer.run()
    return trainer


def test_every_epoch_is_scored_on_validation_and_the_test_set_only_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = run_toy(tmp_path, monkeypatch, "val", epochs=3)
    rows = trainer.log
    assert all(r["val_acc"] is not None and r["val_acc_flip"] is not None for r in rows)
    assert [r["test_acc"] is not None for r in rows] == [False, False, True]
    assert set(rows[-1]["test_entropy"]) == {"layer7", "layer10", "layer13"}
    meta = torch.load(tmp_path / "val" / "model.pt", weights_only=True)["meta"]
    assert meta["training"]["validation_images"] == 12
    assert len(meta["training"]["validation_digest"]) == 16
    assert meta["metrics"]["validation_error"] == pytest.approx(100 * (1 - rows[-1]["val_acc"]))


def test_flip_accuracy_scores_the_mean_of_each_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = small()
    data = toy_sets()[1]
    loader = DeviceLoader(data, 7, [0.5] * 3, [0.25] * 3, train=False)
    result = evaluate(model, loader, 10, flip=True)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int(((model(x).logits + model(x.flip(3)).logits).argmax(1) == y).sum())
    assert result.flip_accuracy == pytest.approx(correct / len(data))
    assert evaluate(model, loader, 10).flip_accuracy is None


def test_shifted_images_move_diagonally_with_reflected_borders() -> None:
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert torch.equal(shift_images(x, 0), x)
    down = shift_images(x, 2)
    assert down.shape == x.shape and torch.equal(down[..., 2:, 2:], x[..., :-2, :-2])
    assert torch.equal(down[..., 0, 2:], x[..., 2, :-2])  # row -2 reflects row 2
    up = shift_images(x, -1)
    assert torch.equal(up[..., :-1, :-1], x[..., 1:, 1:])


def test_flip_and_translate_accuracy_weights_the_plain_pair_double() -> None:
    torch.manual_seed(0)
    model = small()
    data = toy_sets()[1]
    loader = DeviceLoader(data, 7, [0.5] * 3, [0.25] * 3, train=False)
    result = evaluate(model, loader, 10, flip=True, translate=2)
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            pair = lambda v: model(v).logits + model(v.flip(3)).logits
            combined = 2 * pair(x) + pair(shift_images(x, 2)) + pair(shift_images(x, -2))
            correct += int((combined.argmax(1) == y).sum())
    assert result.tta_accuracy == pytest.approx(correct / len(data))
    assert result.tta_error == pytest.approx(100 * (1 - correct / len(data)))
    assert evaluate(model, loader, 10, flip=True).tta_accuracy is None
    with pytest.raises(ValueError, match="give flip=True with translate"):
        evaluate(model, loader, 10, translate=1)


def test_a_run_with_tta_translate_logs_and_records_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = run_toy(tmp_path, monkeypatch, "tta", epochs=2, tta_translate=1, eval_every=1)
    first, row = trainer.log
    assert row["val_acc_tta"] is not None and row["test_acc_tta"] is not None
    # The translated views are scored after the last epoch only.
    assert first["val_acc_flip"] is not None and "val_acc_tta" not in first
    meta = torch.load(tmp_path / "tta" / "model.pt", weights_only=True)["meta"]
    assert meta["metrics"]["test_error_tta"] == pytest.approx(100 * (1 - row["test_acc_tta"]))
    assert "val_acc_tta" not in run_toy(tmp_path, monkeypatch, "plain", epochs=1).log[-1]
    with pytest.raises(ValueError, match="needs flip test-time augmentation"):
        TrainConfig(tta_translate=1, flip=False)


def test_a_run_with_a_normalisation_list_loads_back_from_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ltpa.inference import load_model_source

    run_toy(tmp_path, monkeypatch, "mixed", epochs=1,
            overrides={"normalisation": "softmax,softmax,sigmoid_sum"})
    loaded = load_model_source(tmp_path / "mixed")
    blocks = loaded.model.model.attention  # inside the pixel-space wrapper (ltpa.preprocess)
    assert [b.normalisation for b in blocks] == ["softmax", "softmax", "sigmoid_sum"]


def test_weight_average_is_what_is_evaluated_saved_and_resumed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = run_toy(tmp_path, monkeypatch, "ema", ema=0.9)
    saved = torch.load(tmp_path / "ema" / "model.pt", weights_only=True)["state_dict"]
    averaged = trainer.average.module.state_dict()
    raw = trainer.model.state_dict()
    key = "attention.0.u.weight"
    assert torch.equal(saved[key].float(), averaged[key].float())
    assert not torch.equal(averaged[key], raw[key])
    state = torch.load(tmp_path / "ema" / STATE_FILE, weights_only=True)
    assert "average" in state
    # Resuming for one more epoch restores the average rather than restarting it.
    config = TrainConfig.from_dict({**state["config"], "epochs": 3})
    resumed = Trainer(config, extend=True)
    resumed.prepare(toy_sets())
    resumed._resume()
    assert torch.equal(resumed.average.module.state_dict()[key], averaged[key])


def test_levers_the_model_cannot_use_are_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--aux-weight needs per-stage classifiers"):
        run_toy(tmp_path, monkeypatch, "aux", aux_weight=0.5)
    with pytest.raises(ValueError, match="--entropy-weight needs a model with attention"):
        run_toy(tmp_path, monkeypatch, "ent", model="vgg", entropy_weight=0.1)
    assert not (tmp_path / "aux").exists() and not (tmp_path / "ent").exists()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("flag, value, message", [
    ("--width", "inf", "--width must be a number in (0, 4]"),
    ("--width", "0", "--width must be a number in (0, 4]"),
    ("--batch-size", "0", "--batch-size must be an integer in [1, 1e+06]"),
    ("--epochs", "0", "--epochs must be an integer in [1, 100000]"),
    ("--epochs", "-1", "--epochs must be an integer in [1, 100000]"),
    ("--lr", "nan", "--lr must be a number in (0, 100]"),
    ("--image-size", "0", "--image-size must be an integer in [32, 4096]"),
    ("--entropy-weight", "nan", "--entropy-weight must be a number in [0, 100]"),
    ("--aux-weight", "-1", "--aux-weight must be a number in [0, 100]"),
    ("--lever-decay", "1.5", "--lever-decay must be a number in [0, 1]"),
    ("--ema", "1", "--ema must be a number in [0, 1)"),
    ("--validation", "0.7", "--validation must be a number in [0, 0.5)"),
    ("--filter-lr", "0", "--filter-lr must be a number in (0, 1]"),
    ("--tta-translate", "9", "--tta-translate must be an integer in [0, 8]"),
    ("--filter-lr", "nan", "--filter-lr must be a number in (0, 1]"),
])
def test_out_of_range_training_settings_exit_2_before_writing_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, message: str) -> None:
    out = tmp_path / "run"
    assert cli(["train", "vgg", "--data", str(tmp_path), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_lever_values_are_refused_with_the_choices(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert cli(["train", "vgg_att3_concat_pc", "--data", str(tmp_path), "--out", str(out),
                "--set", "normalisation=tanh"]) == 2
    assert "valid choices: softmax, sigmoid, sigmoid_sum" in capsys.readouterr().err
    assert cli(["train", "vgg_att3_concat_pc", "--data", str(tmp_path), "--out", str(out),
                "--set", "temperature=-2"]) == 2
    assert "from 0.01 to 100" in capsys.readouterr().err


class Payload:
    """An arbitrary pickled object: what a hostile state.pt would carry."""


def test_resuming_onto_a_state_with_pickled_objects_is_refused_for_safety(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "optimizer": {}, "epoch": 1, "config": {}, "extra": Payload()},
               run / STATE_FILE)
    assert cli(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "refused for safety" in err and "weights_only" not in err and err.count("\n") == 1
    (run / STATE_FILE).write_bytes(b"not a zip")
    assert cli(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "state.pt" in err and "weights_only" not in err and err.count("\n") == 1
    assert pickle  # the module a hostile payload would use is what torch refuses


def test_legacy_settings_apply_to_records_without_them() -> None:
    config = TrainConfig.from_dict({"model": "vgg", "epochs": 5})
    assert config.validation == 0.0 and config.flip is False and config.ema == 0.0
    assert TrainConfig().validation == 0.1 and math.isclose(TrainConfig().ema, 0.0)
    assert json.dumps(TrainConfig().__dict__)  # a plain record, storable in checkpoints
    assert isinstance(ModelOutput(torch.zeros(1), (), (), (), torch.zeros(1)).stage_logits, tuple)
