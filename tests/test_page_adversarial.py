"""The Adversarial page through AppTest: what it shows agrees with ltpa.attacks / ltpa.robustness
called directly, the curves arrive from the background, links set its controls, its downloads hold
what it shows, bad input keeps the last result; and the byte-bounded caches and background runner
of pages/ui/compute.py it relies on."""
from __future__ import annotations

import io
import json
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from streamlit.runtime.media_file_manager import MediaFileManager

from app_helpers import (GALLERY, decode_plotly, errors, figures_titled, pick_model, shown_top5, start_app,
                         start_with_empty_zoo, upload)
from ltpa import robustness
from ltpa.attacks import sweep_levels
from ltpa.images import load_image
from ltpa.preprocess import CIFAR10_CLASSES, image_to_input
from ltpa.robustness import attack_report
from ltpa.zoo import load_zoo_model

PAGE = "pages/4_Adversarial.py"
MODEL = "resnet_att2_concat_pc"  # input-sensitive even untrained: attacks move it
COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()


def settled(at):
    """Run the page again once its background sweeps are done (a browser polls for them)."""
    from pages.ui import compute

    assert compute.BACKGROUND.wait_idle(300)
    at.run()
    assert not at.exception, at.exception
    return at


def open_page(model: str | None = MODEL):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    if model is not None:
        pick_model(at, model)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return settled(at)


def direct(levels: int, method: str = "fgsm", label=None, target=None, steps: int = 10, model: str = MODEL):
    loaded = load_zoo_model(model)
    x = image_to_input(load_image(COFFEE).array, loaded.input_size)
    report = attack_report(loaded.model, x, levels, method, label, target, steps)
    return report, sweep_levels(loaded.model, x, method, label, target, 32, steps)


def metric(at, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def widget(at, kind: str, key: str):
    return getattr(at, kind)(key=f"widget.adv.{key}")


def test_page_matches_ltpa(tiny_zoo):
    at = open_page()
    assert not errors(at)
    expected, sweep = direct(4)
    assert at.subheader[0].value == "FGSM at ε = 4/255"
    (before,) = figures_titled(at, "Top-5 before")
    (after,) = figures_titled(at, "Top-5 after")
    for figure, probabilities in ((before, expected.clean_probabilities), (after, expected.adversarial_probabilities)):
        shown = shown_top5(figure)
        order = np.argsort(-probabilities, kind="stable")[:5]
        assert [name for name, _ in shown] == [CIFAR10_CLASSES[i] for i in order]
        np.testing.assert_allclose([p for _, p in shown], probabilities[order], rtol=1e-5)
    assert metric(at, "Largest pixel change") == f"{expected.linf:.0f}/255"
    assert metric(at, "Smallest flipping ε") == (f"{sweep.smallest}/255" if sweep.smallest else "none up to 32/255")
    table = at.dataframe[0].value
    assert list(table["stage"]) == list(expected.stages)
    np.testing.assert_allclose(table["mass moved"], [s.moved_mass for s in expected.shifts], atol=1e-4)
    np.testing.assert_allclose(table["IoU (top 25%)"], [s.iou for s in expected.shifts], atol=1e-4)
    # Confidence against epsilon: the chosen model and the VGG baseline, starting at the clean value.
    (curve,) = figures_titled(at, "FGSM: probability of each model's own clean prediction")
    names = [trace["name"] for trace in curve["data"]]
    assert names == ["(RN-att2)-concat-pc (resnet_att2_concat_pc)", "VGG (vgg)"]
    first = decode_plotly(curve["data"][0]["y"])
    np.testing.assert_allclose(first, sweep.probability_of(sweep.attacked_class).numpy(), atol=1e-6)
    assert len(first) == 33
    assert first[0] == pytest.approx(float(expected.clean_probabilities.max()), abs=1e-5)
    # The sentence that says what the shipped models show.
    assert any("gradient masking" in i.value and "own baseline" in i.value for i in at.info)
    # The shared cached model is left as it was.
    from pages.ui.widgets import load_model

    shared = load_model(MODEL).model
    assert not shared.training and all(p.grad is None for p in shared.parameters())


def test_epsilon_zero_and_gain_do_not_move_anything(tiny_zoo):
    at = open_page()
    widget(at, "slider", "eps").set_value(0).run()
    assert not at.exception
    assert at.subheader[0].value == "FGSM at ε = 0/255"
    assert metric(at, "Largest pixel change") == "0/255"
    assert any("did **not** change the prediction" in m.value for m in at.markdown)
    assert all(v == 0 for v in at.dataframe[0].value["mass moved"])
    widget(at, "slider", "gain").set_value(50).run()  # display only
    assert not at.exception and metric(at, "Largest pixel change") == "0/255"


def test_targeted_ifgsm_matches_ltpa(tiny_zoo):
    at = open_page()
    widget(at, "radio", "method").set_value("ifgsm").run()
    widget(at, "slider", "steps").set_value(2).run()
    widget(at, "radio", "label_mode").set_value("target").run()
    widget(at, "selectbox", "class").select("cat").run()
    widget(at, "slider", "eps").set_value(8).run()
    assert not at.exception, at.exception
    settled(at)
    expected, sweep = direct(8, "ifgsm", target=3, steps=2)
    assert at.subheader[0].value == "I-FGSM at ε = 8/255"
    assert metric(at, "Probability of cat") == f"{expected.adversarial_probabilities[3]:.1%}"
    assert metric(at, "Smallest flipping ε") == (f"{sweep.smallest}/255" if sweep.smallest is not None else "none up to 32/255")
    (curve,) = figures_titled(at, "I-FGSM: probability of target class cat")
    shown = list(decode_plotly(curve["data"][0]["x"]))
    assert shown == list(sweep.levels) and {0, 1, 2, 4, 8, 16, 32} <= set(shown)
    # The settings are in the address bar.
    assert dict(at.query_params) | {"image": None} == {
        "image": None, "model": MODEL, "cmap": "jet", "opacity": "0.5", "scaling": "max", "attack": "ifgsm",
        "eps": "8", "steps": "2", "label": "target", "cls": "cat"}


def test_a_link_sets_the_attack_and_hostile_values_are_refused(tiny_zoo):
    at = pick_model(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"), MODEL)
    at.query_params.update({"attack": "ifgsm", "eps": "12", "steps": "3", "label": "target", "cls": "ship"})
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "I-FGSM at ε = 12/255"
    assert widget(at, "slider", "steps").value == 3 and widget(at, "selectbox", "class").value == "ship"
    assert not at.warning
    for hostile in ({"eps": "nan"}, {"eps": "1e99"}, {"eps": "-3"}, {"attack": "../../etc/passwd"},
                    {"cls": "<b>dog</b>"}, {"steps": "999999999999999"}, {"label": "x" * 5000}):
        # Background curves that finish during a run redraw the page at once (st.rerun), and the
        # link's warnings belong to the first pass: let them finish first.
        settled(at)
        at.query_params.clear()
        at.query_params.update(hostile)
        at.run()
        assert not at.exception, (hostile, at.exception)
        (name,) = hostile
        assert any(f"**{name}** was ignored" in w.value for w in at.warning), hostile
        assert at.subheader[0].value.startswith("I-FGSM at ε = 12/255")  # the current values stay
    at.query_params.clear()
    at.query_params["eps"] = ["3", "5"]  # a repeated key
    at.run()
    assert not at.exception and any("given 2 times" in w.value for w in at.warning)


def capture_downloads(monkeypatch) -> dict[str, object]:
    """File name -> the download's generator, for every deferred download button a run draws
    (what a click in a browser would call)."""
    made: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return made


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_downloads_hold_what_the_page_shows(tiny_zoo, monkeypatch):
    made = capture_downloads(monkeypatch)
    at = open_page()
    expected, sweep = direct(4)
    files = {name.split("_eps4", 1)[1]: generate for name, generate in made.items() if "_eps4" in name}
    assert set(files) == {"_clean.png", "_perturbation_x20.png", "_adversarial.png", ".json", "_stages.png"}
    clean, adversarial = decode_png(files["_clean.png"]()), decode_png(files["_adversarial.png"]())
    assert clean.shape == adversarial.shape == (32, 32, 3)
    np.testing.assert_array_equal(clean, np.round(expected.clean * 255).astype(np.uint8))
    assert np.abs(adversarial.astype(int) - clean.astype(int)).max() <= 4
    record = json.loads(files[".json"]())
    assert record["image"]["sha256"] == load_image(COFFEE).sha256
    assert record["model"]["id"] == MODEL and len(record["model"]["checkpoint_sha256"]) == 64
    assert record["attack"] == {"method": "fgsm", "name": "FGSM", "steps": None, "epsilon_levels": 4,
                                "epsilon": 4 / 255, "label_mode": "predicted", "targeted": False,
                                "attacked_class": CIFAR10_CLASSES[expected.attacked_class]}
    assert record["clean"]["label"] == CIFAR10_CLASSES[expected.clean_prediction]
    np.testing.assert_allclose([record["adversarial"]["probabilities"][c] for c in CIFAR10_CLASSES],
                               expected.adversarial_probabilities, rtol=1e-5)
    assert record["smallest_flipping_epsilon_levels"] == sweep.smallest
    figure = decode_png(files["_stages.png"]())
    stages = len(expected.stages)
    assert figure.shape[1] >= (stages + 1) * 224 and 2 * 224 < figure.shape[0] < 3 * 300


@pytest.mark.parametrize("name, data", [
    ("one_pixel.png", cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()),
    ("strip.png", cv2.imencode(".png", np.full((1, 4000, 3), 200, np.uint8))[1].tobytes()),
    ("grey16.png", cv2.imencode(".png", np.full((40, 50), 40000, np.uint16))[1].tobytes()),
    ("empty.jpg", b""),
    ("text.jpg", b"GIF89a this is not really an image"),
])
def test_hostile_uploads_give_a_message_or_a_result_never_a_traceback(tiny_zoo, name, data):
    at = open_page()
    at.file_uploader[0].set_value((name, data, "image/png")).run()
    assert not at.exception, at.exception
    shown_error = any(name in e for e in errors(at))
    attacked = at.subheader and at.subheader[0].value.startswith("FGSM at")
    assert shown_error or attacked
    if not shown_error:  # a decodable image was attacked at its model input size
        assert not any("Showing the last result" in c.value for c in at.caption)


def test_baseline_has_no_stage_maps(tiny_zoo):
    at = pick_model(upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg"), "vgg")
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert any("baseline without attention" in i.value for i in at.info)


def test_bad_upload_keeps_the_last_result(tiny_zoo):
    at = open_page()
    widget(at, "slider", "eps").set_value(6).run()
    at.file_uploader[0].set_value(("broken.png", b"not an image at all", "image/png")).run()
    assert not at.exception, at.exception
    assert any("broken.png" in e for e in errors(at))
    assert at.subheader[0].value == "FGSM at ε = 6/255"  # the previous result is still shown
    assert any("Showing the last result" in c.value and "coffee" in c.value for c in at.caption), [c.value for c in at.caption]


def test_empty_zoo_gives_a_clear_message(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, PAGE)


def test_shipped_curves_are_drawn_or_missing_is_said(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(robustness, "SHIPPED_DIR", tmp_path)
    import ltpa.robustness.results as results_module

    monkeypatch.setattr(results_module, "SHIPPED_DIR", tmp_path, raising=False)
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


# ------------------------------------------------------------------------------- pages/ui/compute.py
def test_bounded_cache_keeps_within_its_byte_budget():
    from pages.ui.compute import MiB, bounded_cache, cached_bytes, size_of

    calls: list[int] = []

    @bounded_cache(max_bytes=3 * MiB, name="test.budget")
    def block(index: int, _fill: int) -> np.ndarray:
        calls.append(index)
        return np.full(MiB, _fill, np.uint8)

    first = block(0, 1)
    assert block(0, 2) is first and calls == [0]  # underscore arguments are not in the key
    assert not first.flags.writeable  # shared by every session: read-only
    for index in range(1, 6):
        block(index, 0)
    assert cached_bytes()["test.budget"] <= 3 * MiB
    assert len(block.cache) == 2  # 1 MiB each plus array headers: two fit in 3 MiB
    block(0, 1)
    assert calls == [0, 1, 2, 3, 4, 5, 0]  # the least recently used went first
    huge = bounded_cache(max_bytes=MiB, name="test.huge")(lambda n: np.zeros(n, np.uint8))
    assert huge(2 * MiB).nbytes == 2 * MiB and len(huge.cache) == 0  # too large to keep
    assert size_of({"a": np.zeros(1000, np.float32), "b": torch.zeros(10, dtype=torch.float64)}) > 4000 + 80
    with pytest.raises(TypeError, match="not ndarray"):
        bounded_cache(MiB, name="test.key")(lambda array: 0)(np.zeros(3))


def test_background_runs_once_reports_progress_and_stops_when_nobody_waits():
    from pages.ui.compute import BackgroundRunner, cache_key

    runner = BackgroundRunner(max_bytes=1 << 20)
    runs: list[str] = []
    gate = threading.Event()

    def slow(progress):
        runs.append("slow")
        for step in range(200):
            gate.wait(0.01)
            progress(step / 200)
        return "finished"

    key = cache_key("test", "slow")
    first, second = runner.submit(key, slow, "session-a"), runner.submit(key, slow, "session-b")
    assert first is second  # one job for everyone who asks
    deadline = time.time() + 30
    while first.progress == 0 and time.time() < deadline:
        time.sleep(0.01)
    assert 0 < first.progress < 1
    runner.release(key, "session-a")
    assert not first.stop.is_set()  # session-b still waits
    runner.release(key, "session-b")
    assert runner.wait_idle(30) and first.state == "stopped" and runs == ["slow"]
    # Done work is served from the cache, failures are reported and not retried.
    done = runner.submit(cache_key("test", "quick"), lambda progress: 42, "session-a")
    assert runner.wait_idle(30) and done.result == 42
    assert runner.submit(cache_key("test", "quick"), slow, "session-a").result == 42
    failed = runner.submit(cache_key("test", "bad"), lambda progress: 1 / 0, "session-a")
    assert runner.wait_idle(30) and failed.state == "failed" and "ZeroDivisionError" in failed.error
    assert runner.submit(cache_key("test", "bad"), lambda progress: 1, "session-a") is failed


def test_the_app_caps_torch_threads(monkeypatch):
    from pages.ui.compute import configure_torch_threads

    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("LTPA_APP_THREADS", "1")
        assert configure_torch_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("LTPA_APP_THREADS")
        import os

        assert configure_torch_threads() == max(1, (os.cpu_count() or 1) // 2)
    finally:
        torch.set_num_threads(threads)
