"""Robustness curves (library and ``ltpa robustness``), attention shift and the one-image report."""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ltpa.attacks import fgsm, iterative_fgsm
from ltpa.cli import main
from ltpa.preprocess import CIFAR10_CLASSES
from ltpa.robustness import (
    SHIPPED_DIR,
    attack_report,
    attention_shift,
    confidence_curve,
    load_results,
    merge_results,
    moved_mass,
    parse_levels,
    perturbation_image,
    results_markdown,
    sweep_model,
)
from ltpa.stats import average_ranks, spearman
from ltpa.zoo import DEFAULT_ZOO_DIR, load_zoo_model, read_manifest

TINY_ID = "resnet_att2_concat_pc"



def smooth_images(count: int, seed: int = 0) -> torch.Tensor:
    """uint8 images N x 3 x 32 x 32 that look a little like photos (smooth colour blobs)."""
    noise = torch.rand(count, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    x = F.interpolate(noise, size=32, mode="bicubic", align_corners=False).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


@pytest.fixture()
def model(tiny_zoo):
    return load_zoo_model(TINY_ID).model


# ------------------------------------------------------------------------------- attention shift
def test_average_ranks_share_ties():
    assert average_ranks(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]


def test_spearman_known_values():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10 + 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # 1 - 6 * sum(d^2) / (n (n^2 - 1)) with one swapped pair: 1 - 12 / 60.
    assert spearman(a, np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert np.isnan(spearman(a, np.ones(4)))


def test_moved_mass_is_total_variation():
    assert moved_mass(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert moved_mass(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(0.5)
    p = np.random.default_rng(0).random((8, 8))
    assert moved_mass(p, 7 * p) == pytest.approx(0.0)  # scale does not matter, only the distribution
    with pytest.raises(ValueError, match="no positive attention"):
        moved_mass(np.zeros(4), np.ones(4))


def test_attention_shift_of_identical_and_moved_maps():
    rng = np.random.default_rng(0)
    clean = rng.random((8, 8))
    same = attention_shift(clean, clean)
    assert same.iou == 1.0 and same.moved_mass == pytest.approx(0.0) and same.spearman == pytest.approx(1.0)
    flipped = attention_shift(clean, clean[::-1, ::-1])
    assert flipped.iou < 1.0 and flipped.moved_mass > 0.0 and flipped.spearman < 1.0
    with pytest.raises(ValueError, match="one size"):
        attention_shift(clean, clean[:4])


# ------------------------------------------------------------------------------- sweep
def test_sweep_counts_follow_the_definitions(model):
    images, labels = smooth_images(24), torch.arange(24) % 10
    levels = [0, 2, 8]
    curve = sweep_model(model, images, labels, levels, batch_size=7)
    x = images.float() / 255
    with torch.no_grad():
        clean = model(x).logits.argmax(dim=1)
    right = clean == labels
    assert curve.n_clean_correct == int(right.sum())
    for index, k in enumerate(levels):
        adversarial = fgsm(model, x, k / 255, label=labels)
        with torch.no_grad():
            prediction = model(adversarial).logits.argmax(dim=1)
        assert curve.correct[index] == int((prediction == labels).sum())
        assert curve.fooled[index] == int((right & (prediction != labels)).sum())
    assert curve.fooled[0] == 0 and curve.accuracy[0] == curve.n_clean_correct / 24
    # Batching does not change the numbers (each image's gradient is its own).
    again = sweep_model(model, images, labels, levels, batch_size=24)
    assert (again.correct, again.fooled) == (curve.correct, curve.fooled)


def test_sweep_with_ifgsm_and_predicted_labels(model):
    images = smooth_images(6)
    x = images.float() / 255
    with torch.no_grad():
        labels = model(x).logits.argmax(dim=1)  # every image is "correct"
    curve = sweep_model(model, images, labels, [0, 16], batch_size=6, method="ifgsm", steps=2,
                        label_mode="predicted")
    adversarial = iterative_fgsm(model, x, 16 / 255, steps=2)
    with torch.no_grad():
        changed = int((model(adversarial).logits.argmax(dim=1) != labels).sum())
    assert curve.n_clean_correct == 6 and curve.fooled == [0, changed]
    assert curve.fooling_rate[1] == pytest.approx(changed / 6)


def test_sweep_refuses_bad_input(model):
    images, labels = smooth_images(4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="uint8"):
        sweep_model(model, images.float(), labels)
    with pytest.raises(ValueError, match="one label per image"):
        sweep_model(model, images, labels[:2])
    with pytest.raises(ValueError, match="unknown attack"):
        sweep_model(model, images, labels, method="cw")
    with pytest.raises(ValueError, match="batch size"):
        sweep_model(model, images, labels, batch_size=0)


@pytest.mark.parametrize("text, message", [("1,x", "integers"), ("0,2.5", "integers"),
                                            ("0,300", r"\[0, 255\]"), ("", "integers")])
def test_parse_levels_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_levels(text)


def test_parse_levels_sorts_and_dedups():
    assert parse_levels("8, 0,2,2") == [0, 2, 8]


# ------------------------------------------------------------------------------- CLI
def make_image_folder(root: Path, per_class: int = 2) -> Path:
    """A small ImageFolder test tree with CIFAR-10's class folders (PNG files)."""
    images = smooth_images(per_class * len(CIFAR10_CLASSES), seed=3).permute(0, 2, 3, 1).numpy()
    for index, name in enumerate(CIFAR10_CLASSES):
        folder = root / "test" / name
        folder.mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(images[index * per_class + j]).save(folder / f"{j:04d}.png")
    return root


def test_cli_end_to_end(tiny_zoo, tmp_path, capsys):
    data = make_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["robustness", "--models", "resnet_att2_concat_pc,vgg", "--data", str(data),
                 "--eps", "0,4,16", "--batch-size", "8", "--out", str(out), "--device", "cpu"])
    assert code == 0
    results = json.loads((out / "robustness.json").read_text())
    assert results["levels"] == [0, 4, 16] and results["dataset"]["n_images"] == 20
    assert [m["id"] for m in results["models"]] == ["resnet_att2_concat_pc", "vgg"]
    for model in results["models"]:
        assert model["accuracy"] == pytest.approx([c / 20 for c in model["correct"]])
        assert model["fooling_rate"][0] == 0.0
    assert results["models"][0]["attention"] is True and results["models"][1]["attention"] is False
    rows = list(csv.DictReader(io.StringIO((out / "robustness.csv").read_text())))
    assert len(rows) == 6 and {r["epsilon_255"] for r in rows} == {"0", "4", "16"}
    assert (out / "robustness.html").is_file()  # plotly is installed on this machine
    printed = capsys.readouterr().out
    assert "| (RN-att2)-concat-pc (`resnet_att2_concat_pc`) | yes |" in printed
    # --markdown reprints the tables of a results file.
    assert main(["robustness", "--markdown", str(out)]) == 0
    assert "**Fooling rate (%)**" in capsys.readouterr().out


def test_cli_without_plotly_skips_the_figure(tiny_zoo, tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "data", per_class=1)
    monkeypatch.setitem(sys.modules, "plotly", None)  # what the GPU machine looks like
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    code = main(["robustness", "--models", "vgg", "--data", str(data / "test"), "--eps", "0,2",
                 "--out", str(tmp_path / "out"), "--limit", "5", "--device", "cpu"])
    assert code == 0
    assert (tmp_path / "out" / "robustness.json").is_file()
    assert not (tmp_path / "out" / "robustness.html").exists()
    assert "plotly is not installed" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "robustness.json").read_text())["dataset"]["n_images"] == 5


@pytest.mark.parametrize("args, message", [
    (["--models", "nope"], "no shipped model 'nope'"),
    (["--eps", "1,x"], "integers"),
    (["--data", "/no/such/folder"], "neither a dataset name"),
    (["--limit", "0"], "--limit"),
    (["--batch-size", "0"], "--batch-size"),
    (["--markdown", "/no/such/results.json"], "no robustness results"),
])
def test_cli_bad_input_gives_one_clear_line(tiny_zoo, tmp_path, capsys, args, message):
    data = make_image_folder(tmp_path / "data", per_class=1)
    base = {"--models": "vgg", "--data": str(data), "--eps": "0,2", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["robustness"] + [item for pair in base.items() for item in pair]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltpa robustness: error:") and message in err


def test_cli_refuses_data_with_other_classes(tiny_zoo, tmp_path, capsys):
    folder = tmp_path / "data" / "test"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / name / "0.png")
    assert main(["robustness", "--models", "vgg", "--data", str(tmp_path / "data")]) == 2
    assert "do not match" in capsys.readouterr().err


# ------------------------------------------------------------------------------- results files
def test_results_markdown_and_validation(tmp_path):
    results = {
        "format": "ltpa-robustness/1", "attack": "fgsm", "attack_name": "FGSM", "label": "true",
        "levels": [0, 8], "dataset": {"source": "test", "n_images": 10}, "device": "cpu",
        "models": [{"id": "a", "paper_name": "A", "attention": True, "accuracy": [0.9, 0.25],
                    "fooling_rate": [0.0, 0.75]}],
    }
    table = results_markdown(results)
    assert "| A (`a`) | yes | 90.0 | 25.0 |" in table and "| A (`a`) | yes | 0.0 | 75.0 |" in table
    (tmp_path / "robustness.json").write_text(json.dumps(results))
    assert load_results(tmp_path)["models"][0]["id"] == "a"
    (tmp_path / "robustness.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path)
    (tmp_path / "robustness.json").write_text(json.dumps({**results, "levels": [0]}))
    with pytest.raises(ValueError, match="one value per epsilon"):
        load_results(tmp_path)
    assert load_results(tmp_path / "missing") is None


def test_shipped_results_are_valid_and_measured_on_the_shipped_files():
    results = load_results(SHIPPED_DIR)
    assert results is not None and results["dataset"]["n_images"] > 0
    # Every shipped model has its curve, measured on the very file that ships (sha256), so a
    # retrained model cannot keep its predecessor's curve.
    shipped = {card["id"]: card["sha256"] for card in read_manifest(DEFAULT_ZOO_DIR)["models"]}
    assert {model["id"]: model["sha256"] for model in results["models"]} == shipped


def test_merged_results_replace_remeasured_curves_and_say_where_they_were_measured(tiny_zoo, tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", per_class=1)
    out = tmp_path / "out"
    common = ["--data", str(data), "--eps", "0,4", "--device", "cpu", "--out", str(out), "--no-figure"]
    assert main(["robustness", "--models", "vgg,resnet_att2_concat_pc", *common]) == 0
    first = load_results(out)
    first["device"] = "NVIDIA H200"  # as if the first run had been on the GPU
    (out / "robustness.json").write_text(json.dumps(first))
    assert main(["robustness", "--models", "resnet_att2_concat_pc,vgg_gap", *common, "--merge"]) == 0
    merged = load_results(out)
    assert [m["id"] for m in merged["models"]] == ["vgg", "resnet_att2_concat_pc", "vgg_gap"]
    assert merged["models"][0] == first["models"][0] and "device" not in merged["models"][0]
    assert [m.get("device") for m in merged["models"][1:]] == ["cpu", "cpu"]
    header = results_markdown(merged).splitlines()[0]
    assert header.endswith("NVIDIA H200; `resnet_att2_concat_pc`, `vgg_gap` on cpu.")
    # Curves of other epsilons, or of other images, do not share a table.
    capsys.readouterr()
    assert main(["robustness", "--models", "vgg", *common[:2], "--eps", "0,8", *common[4:], "--merge"]) == 2
    assert "differ in levels" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dataset n_images"):
        merge_results(merged, {**merged, "dataset": {**merged["dataset"], "n_images": 1}})


# ------------------------------------------------------------------------------- one image
def test_attack_report(model):
    x = smooth_images(1).float() / 255
    report = attack_report(model, x, 8, "fgsm")
    assert report.linf <= 8 + 1e-4 and report.linf > 0
    assert report.clean.shape == report.adversarial.shape == (32, 32, 3)
    assert report.stages and len(report.clean_maps) == len(report.shifts) == len(report.stages)
    for clean, adversarial, shift in zip(report.clean_maps, report.adversarial_maps, report.shifts):
        assert clean.shape == adversarial.shape and clean.sum() == pytest.approx(1.0, abs=1e-4)
        assert 0 <= shift.iou <= 1 and 0 <= shift.moved_mass <= 1 and -1 <= shift.spearman <= 1
    assert report.attacked_class == report.clean_prediction
    with torch.no_grad():
        expected = torch.softmax(model(x).logits, dim=1)[0].numpy()
    assert np.allclose(report.clean_probabilities, expected, atol=1e-5)
    zero = attack_report(model, x, 0)
    assert zero.linf == 0 and not zero.flipped and all(s.moved_mass == 0 for s in zero.shifts)
    targeted = attack_report(model, x, 4, "ifgsm", target=3, steps=2)
    assert targeted.targeted and targeted.attacked_class == 3
    with pytest.raises(ValueError, match="0 to 32"):
        attack_report(model, x, 33)
    with pytest.raises(ValueError, match="whole number"):
        attack_report(model, x, 2.5)


def test_confidence_curve(model):
    x = smooth_images(1).float() / 255
    with torch.no_grad():
        clean = torch.softmax(model(x).logits, dim=1)[0]
    predicted = int(clean.argmax())
    levels, probability, predictions = confidence_curve(model, x, predicted)
    assert levels == list(range(33)) and probability.shape == (33,)
    assert probability[0] == pytest.approx(float(clean[predicted]), abs=1e-5)
    assert predictions[0] == predicted
    levels, probability, _ = confidence_curve(model, x, predicted, "ifgsm", steps=1)
    assert levels == [0, 1, 2, 4, 8, 16, 32] and probability.shape == (7,)
    with pytest.raises(ValueError, match="does not exist"):
        confidence_curve(model, x, 10)


def test_perturbation_image():
    delta = np.array([[[-4 / 255, 0.0, 4 / 255]]], dtype=np.float32)
    shown = perturbation_image(delta, 10)
    assert shown[0, 0, 1] == 0.5 and shown[0, 0, 0] < 0.5 < shown[0, 0, 2]
    with pytest.raises(ValueError, match="gain"):
        perturbation_image(delta, 0)


def _measured(source: str, device: str, curves: dict[str, float]) -> dict:
    """Results measured on files named by their run, one clean accuracy each."""
    return {"format": "ltpa-robustness/1", "attack": "fgsm", "attack_name": "FGSM", "label": "true",
            "levels": [0, 8], "dataset": {"source": source, "n_images": 10}, "device": device,
            "precision": "fp32",
            "models": [{"id": f"run_{sha}", "sha256": sha, "paper_name": "run", "attention": True,
                        "accuracy": [accuracy, 0.1], "fooling_rate": [0.0, 0.8],
                        "correct": [round(10 * accuracy), 1], "fooled": [0, 4], "n_images": 10,
                        "n_clean_correct": round(10 * accuracy)}
                       for sha, accuracy in curves.items()]}


def test_zoo_curves_gathers_each_shipped_files_curve_by_sha256(tmp_path):
    from ltpa.maintainer.curves import shipped_curves
    from ltpa.zoo import write_manifest

    zoo = tmp_path / "zoo"
    write_manifest([{"id": name, "sha256": sha, "registry_name": "vgg", "paper_name": name.upper(),
                     "test_error": 9.0} for name, sha in (("b", "s2"), ("a", "s1"))], zoo)
    first = _measured("/old/test", "NVIDIA H200", {"s1": 0.5, "s9": 0.4})
    first["models"][0]["device"] = "cpu"  # a curve merged in earlier names its own device
    seeds = _measured("/new/test", "NVIDIA H200", {"s2": 0.7, "s1": 0.6})
    results = shipped_curves(zoo, [first, seeds])
    # In manifest order, under the shipped ids; a file measured twice takes the later curve.
    assert [(m["id"], m["paper_name"], m["accuracy"][0]) for m in results["models"]] == [
        ("b", "B", 0.7), ("a", "A", 0.6)]
    assert results["dataset"]["source"] == "/old/test"
    assert all(m["source"] == "/new/test" and "device" not in m for m in results["models"])
    assert "`b`, `a` from /new/test" in results_markdown(results)
    # The earlier curve, kept, keeps the device it names.
    (kept,) = shipped_curves(zoo, [first, _measured("/new/test", "NVIDIA H200", {"s2": 0.7})])["models"][1:]
    assert (kept["id"], kept["device"], kept.get("source")) == ("a", "cpu", None)
    with pytest.raises(ValueError, match="no curve measured on the shipped file of b"):
        shipped_curves(zoo, [first])
    with pytest.raises(ValueError, match="differ in levels"):
        shipped_curves(zoo, [first, {**seeds, "levels": [0, 4]}])
    with pytest.raises(ValueError, match="differ in dataset n_images"):
        shipped_curves(zoo, [first, {**seeds, "dataset": {"source": "/new/test", "n_images": 3}}])


def test_zoo_curves_command_writes_the_shipped_results(tmp_path, capsys):
    from ltpa.zoo import write_manifest

    zoo, out = tmp_path / "zoo", tmp_path / "robustness"
    write_manifest([{"id": "a", "sha256": "s1", "registry_name": "vgg", "paper_name": "A", "test_error": 9.0}], zoo)
    (tmp_path / "measured.json").write_text(json.dumps(_measured("/d/test", "cpu", {"s1": 0.5})))
    assert main(["zoo", "curves", str(tmp_path / "measured.json"), "--zoo", str(zoo), "--out", str(out)]) == 0
    assert [m["id"] for m in load_results(out)["models"]] == ["a"]
    assert "1 shipped curves written" in capsys.readouterr().out
    assert main(["zoo", "curves", str(tmp_path / "none.json"), "--zoo", str(zoo), "--out", str(out)]) == 2


def test_shipped_figure_gives_every_model_its_own_colour_and_baselines_dashes():
    from ltpa.viz import robustness_figure

    results = load_results(SHIPPED_DIR)
    figure = robustness_figure(results)
    accuracy = [trace for trace in figure.data if trace.showlegend]
    assert [trace.legendgroup for trace in accuracy] == [model["id"] for model in results["models"]]
    assert len({trace.line.color for trace in accuracy}) == len(accuracy)
    dashed = {trace.legendgroup for trace in accuracy if trace.line.dash == "dash"}
    assert dashed == {model["id"] for model in results["models"] if not model.get("attention")}
