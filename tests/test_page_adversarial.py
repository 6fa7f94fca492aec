"""The Adversarial page through AppTest: what it shows agrees with ltpa.attacks / ltpa.robustness
called directly, bad input keeps the last result, and the shipped curves are drawn when present."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app_helpers import GALLERY, decode_plotly, errors, figures_titled, shown_top5, start_app, start_with_empty_zoo, upload
from ltpa import robustness
from ltpa.attacks import smallest_flipping_epsilon
from ltpa.images import load_image
from ltpa.preprocess import CIFAR10_CLASSES, image_to_input
from ltpa.robustness import attack_report
from ltpa.zoo import load_zoo_model

PAGE = "pages/4_Adversarial.py"
MODEL = "resnet_att2_concat_pc"  # input-sensitive even untrained: attacks move it
COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()



def open_page(model: str | None = MODEL):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    if model is not None:
        at.selectbox(key="model.backbone").select("resnet").run()
        assert at.selectbox(key="model.variant").value == model
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def direct(levels: int, method: str = "fgsm", label=None, target=None, steps: int = 10):
    loaded = load_zoo_model(MODEL)
    x = image_to_input(load_image(COFFEE).array, loaded.input_size)
    report = attack_report(loaded.model, x, levels, method, label, target, steps)
    smallest = smallest_flipping_epsilon(loaded.model, x, method, label, target, 32, steps)
    return report, smallest


def metric(at, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def test_page_matches_ltpa(tiny_zoo):
    at = open_page()
    assert not errors(at)
    expected, smallest = direct(4)
    assert at.subheader[0].value == "FGSM at ε = 4/255"
    (before,) = figures_titled(at, "Top-5 before")
    (after,) = figures_titled(at, "Top-5 after")
    for figure, probabilities in ((before, expected.clean_probabilities), (after, expected.adversarial_probabilities)):
        shown = shown_top5(figure)
        order = np.argsort(-probabilities, kind="stable")[:5]
        assert [name for name, _ in shown] == [CIFAR10_CLASSES[i] for i in order]
        np.testing.assert_allclose([p for _, p in shown], probabilities[order], rtol=1e-5)
    assert metric(at, "Largest pixel change") == f"{expected.linf:.0f}/255"
    assert metric(at, "Smallest flipping ε") == (f"{smallest}/255" if smallest else "none up to 32/255")
    table = at.dataframe[0].value
    assert list(table["stage"]) == list(expected.stages)
    np.testing.assert_allclose(table["mass moved"], [s.moved_mass for s in expected.shifts], atol=1e-4)
    np.testing.assert_allclose(table["IoU (top 25%)"], [s.iou for s in expected.shifts], atol=1e-4)
    # Confidence against epsilon: the chosen model and the VGG baseline, starting at the clean value.
    (curve,) = figures_titled(at, "FGSM: probability of each model's own clean prediction")
    names = [trace["name"] for trace in curve["data"]]
    assert names == ["(RN-att2)-concat-pc (resnet_att2_concat_pc)", "VGG (vgg)"]
    first = decode_plotly(curve["data"][0]["y"])
    assert len(first) == 33
    assert first[0] == pytest.approx(float(expected.clean_probabilities.max()), abs=1e-5)
    # The shared cached model is left as it was.
    from pages.ui.widgets import load_model

    shared = load_model(MODEL).model
    assert not shared.training and all(p.grad is None for p in shared.parameters())


def test_epsilon_zero_and_gain_do_not_move_anything(tiny_zoo):
    at = open_page()
    at.slider(key="adv.eps").set_value(0).run()
    assert not at.exception
    assert at.subheader[0].value == "FGSM at ε = 0/255"
    assert metric(at, "Largest pixel change") == "0/255"
    assert any("did **not** change the prediction" in m.value for m in at.markdown)
    assert all(v == 0 for v in at.dataframe[0].value["mass moved"])
    at.slider(key="adv.gain").set_value(50).run()  # display only
    assert not at.exception and metric(at, "Largest pixel change") == "0/255"


def test_targeted_ifgsm_matches_ltpa(tiny_zoo):
    at = open_page()
    at.radio(key="adv.method").set_value("ifgsm").run()
    at.slider(key="adv.steps").set_value(2).run()
    at.radio(key="adv.label_mode").set_value("target").run()
    at.selectbox(key="adv.class.target").select(3).run()
    at.slider(key="adv.eps").set_value(8).run()
    assert not at.exception, at.exception
    expected, smallest = direct(8, "ifgsm", target=3, steps=2)
    assert at.subheader[0].value == "I-FGSM at ε = 8/255"
    assert metric(at, "Probability of cat") == f"{expected.adversarial_probabilities[3]:.1%}"
    assert metric(at, "Smallest flipping ε") == (f"{smallest}/255" if smallest is not None else "none up to 32/255")
    (curve,) = figures_titled(at, "I-FGSM: probability of target class cat")
    assert list(decode_plotly(curve["data"][0]["x"])) == [0, 1, 2, 4, 8, 16, 32]


def test_baseline_has_no_stage_maps(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    at.selectbox(key="model.variant").select("vgg").run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert any("baseline without attention" in i.value for i in at.info)


def test_bad_upload_keeps_the_last_result(tiny_zoo):
    at = open_page()
    at.slider(key="adv.eps").set_value(6).run()
    at.file_uploader(key="image.upload").set_value(("broken.png", b"not an image at all", "image/png")).run()
    assert not at.exception, at.exception
    assert any("broken.png" in e for e in errors(at))
    assert at.subheader[0].value == "FGSM at ε = 6/255"  # the previous result is still shown
    assert any("Showing the last result" in c.value and "coffee.jpg" in c.value for c in at.caption)


def test_empty_zoo_gives_a_clear_message(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, PAGE)


def test_shipped_curves_are_drawn_or_missing_is_said(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(robustness, "SHIPPED_DIR", tmp_path)
    at = open_page()
    assert any("No robustness curves have been shipped yet" in i.value for i in at.info)
    results = {
        "format": robustness.RESULTS_FORMAT, "attack": "fgsm", "attack_name": "FGSM", "label": "true",
        "levels": [0, 2, 8], "device": "test device",
        "dataset": {"source": "cifar10/test", "n_images": 10000},
        "models": [
            {"id": "vgg_att3_concat_pc", "paper_name": "(VGG-att3)-concat-pc", "attention": True,
             "accuracy": [0.9, 0.6, 0.3], "fooling_rate": [0.0, 0.3, 0.6]},
            {"id": "vgg", "paper_name": "VGG", "attention": False, "device": "cpu",
             "accuracy": [0.9, 0.5, 0.2], "fooling_rate": [0.0, 0.4, 0.8]},
        ],
    }
    (tmp_path / "robustness.json").write_text(json.dumps(results))
    at.run()
    assert not at.exception, at.exception
    (figure,) = figures_titled(at, "FGSM on 10000 test images")
    accuracy = [t for t in figure["data"] if t["name"] == "VGG" and t["xaxis"] == "x"][0]
    np.testing.assert_allclose(decode_plotly(accuracy["y"]), [90, 50, 20])
    table = at.dataframe[1].value
    assert list(table["model"]) == ["(VGG-att3)-concat-pc", "VGG"] and list(table["fool 8/255"]) == [60.0, 80.0]
    # A curve merged in from another device is named as such.
    assert any("measured on test device; `vgg` on cpu." in c.value for c in at.caption)
    (tmp_path / "robustness.json").write_text("{broken")
    at.run()
    assert not at.exception
    assert any("cannot be read" in e for e in errors(at))
