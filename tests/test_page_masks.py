"""The Masks page through AppTest: what it shows agrees with ltpa.masks called directly."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import sample_images as samples
from app_helpers import errors, image_captions, plotly_figures, start_app, start_with_empty_zoo
from ltpa import masks
from ltpa.images import load_image
from ltpa.inference import analyse
from ltpa.preprocess import image_to_input
from ltpa.segmentation import native_maps
from ltpa.zoo import load_zoo_model
from pages.ui import state

PAGE = "pages/3_Masks.py"
RULE = f"widget.{state.MASK_RULE}"
STAGE = f"widget.{state.MASK_STAGE}"


def threshold_key(rule: str) -> str:
    return f"widget.{state.MASK_THRESHOLD}{rule}"

MODEL = "vgg_att3_concat_pc"  # the first attention model of the tiny zoo: the page's default


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def scene() -> tuple[bytes, np.ndarray]:
    """A 60x80 photo-like image with a bright object, and the object's 0/255 mask at half size."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 90, (60, 80, 3), dtype=np.uint8)
    image[15:45, 20:60] = rng.integers(150, 255, (30, 40, 3), dtype=np.uint8)
    truth = np.zeros((30, 40), dtype=bool)
    truth[7:23, 10:30] = True
    return png(image), truth


IMAGE, TRUTH = scene()


def open_page(truth: bytes | None = png(TRUTH.astype(np.uint8) * 255)):
    at = start_app()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    at.file_uploader(key="image.upload").set_value(("scene.png", IMAGE, "image/png")).run()
    if truth is not None:
        at.file_uploader(key="masks.truth").set_value(("scene_mask.png", truth, "image/png")).run()
    assert not at.exception, at.exception
    return at


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def expected_attention_unit(stage: str = "combined") -> np.ndarray:
    """The combined map at the ground truth's size, computed without the app."""
    analysis = analyse(load_zoo_model(MODEL), load_image(IMAGE).array)
    units = {m.stage: masks.unit_map(m.native, TRUTH.shape) for m in analysis.maps}
    return masks.combine_maps(list(units.values())) if stage == "combined" else units[stage]


def test_live_jaccard_follows_rule_and_threshold(tiny_zoo):
    at = open_page()
    assert not errors(at)
    unit = expected_attention_unit()
    expected = masks.score_mask(masks.binarise(unit, "fraction", 0.5), TRUTH)
    assert metric(at, "Jaccard (IoU)") == f"{expected.jaccard:.3f}"
    assert metric(at, "Recall") == f"{expected.recall:.3f}"
    # Evaluated at the ground truth's size, as segment-eval does.
    assert any("at 40x30 (the ground truth's size)" in c for c in image_captions(at)), image_captions(at)

    at.radio(key=RULE).set_value("top").run()
    at.slider(key=threshold_key("top")).set_value(40).run()
    expected = masks.jaccard(masks.binarise(unit, "top", 40), TRUTH)
    assert metric(at, "Jaccard (IoU)") == f"{expected:.3f}"

    at.selectbox(key=STAGE).set_value("layer13").run()
    at.checkbox(key="masks.largest").check().run()
    unit13 = expected_attention_unit("layer13")
    expected = masks.jaccard(masks.clean_mask(masks.binarise(unit13, "top", 40), largest_component=True), TRUTH)
    assert metric(at, "Jaccard (IoU)") == f"{expected:.3f}"
    assert not at.exception


def test_curve_marks_the_best_threshold_and_comparisons_match(tiny_zoo):
    at = open_page()
    (figure,) = [f for f in plotly_figures(at) if "Jaccard versus threshold" in str(f["layout"]["title"])]
    traces = {t["name"]: t for t in figure["data"]}
    unit = expected_attention_unit()
    curve = masks.threshold_curve(unit, TRUTH, "fraction", masks.FINE_GRIDS["fraction"])
    best_t, best_j = masks.best_threshold(curve)
    assert f"best: {best_t:g} (J = {best_j:.3f})" in traces
    # One line and one best-marker per map: attention, CAM, Grad-CAM, centre prior.
    assert len(figure["data"]) == 8

    image = load_image(IMAGE).array
    gap = load_zoo_model("vgg_gap")
    cam_native = native_maps(gap, "cam", image_to_input(image, 32))["cam"][0]
    cam_j = masks.jaccard(masks.binarise(masks.unit_map(cam_native, TRUTH.shape), "fraction", 0.5), TRUTH)
    assert f"CAM (vgg_gap): Jaccard {cam_j:.3f}" in image_captions(at)
    table = at.dataframe[0].value
    assert list(table["map"]) == ["attention: all stages", "CAM (vgg_gap)", "Grad-CAM (vgg)", "centre prior"]
    assert table["Jaccard"][1] == pytest.approx(cam_j, abs=1e-4)

    at.radio(key=RULE).set_value("otsu").run()
    assert not plotly_figures(at)
    assert any("no threshold" in c.value for c in at.caption)
    otsu_j = masks.jaccard(masks.binarise(unit, "otsu"), TRUTH)
    assert metric(at, "Jaccard (IoU)") == f"{otsu_j:.3f}"


def test_without_ground_truth_the_mask_is_shown_and_downloadable(tiny_zoo):
    at = open_page(truth=None)
    assert not at.exception and not errors(at)
    assert any("Upload the ground-truth mask" in i.value for i in at.info)
    assert not at.metric
    assert any(c.startswith("mask (") and c.endswith("at 80x60") for c in image_captions(at))
    assert at.get("download_button")
    assert "All stages figure (PNG)" in [b.proto.label for b in at.get("download_button")]
    assert any("What the shipped models show" in i.value and "centred blob" in i.value for i in at.info)


@pytest.mark.parametrize("data, message", [
    (b"not an image at all", "Cannot use the ground-truth mask"),
])
def test_bad_ground_truth_is_reported_and_the_page_goes_on(tiny_zoo, data, message):
    at = open_page(truth=data)
    assert not at.exception
    assert any(message in e for e in errors(at)), errors(at)
    assert any("Upload the ground-truth mask" in i.value for i in at.info)


def test_other_aspect_ratio_and_empty_truth_warn(tiny_zoo):
    square = np.zeros((40, 40), dtype=np.uint8)
    square[10:30, 10:30] = 255
    at = open_page(truth=png(square))
    assert any("aspect ratio" in w.value for w in at.warning)
    assert metric(at, "Jaccard (IoU)")  # scored anyway
    at = open_page(truth=png(np.zeros((30, 40), dtype=np.uint8)))
    assert any("empty" in w.value for w in at.warning)


def test_empty_zoo(tmp_path, monkeypatch):
    start_with_empty_zoo(tmp_path, monkeypatch, PAGE)


# ----------------------------------------------------------------------------- rough edges
def _no_traceback(at) -> None:
    assert not at.exception, at.exception


def test_one_pixel_image_and_one_pixel_mask_get_clear_messages(tiny_zoo):
    one_pixel = png(np.full((1, 1, 3), 200, dtype=np.uint8))
    at = start_app()
    at.switch_page(PAGE).run()
    at.file_uploader(key="image.upload").set_value(("dot.png", one_pixel, "image/png")).run()
    _no_traceback(at)
    at.run()  # and on every rerun
    _no_traceback(at)
    at = open_page(truth=png(np.full((1, 1), 255, dtype=np.uint8)))
    _no_traceback(at)
    at.run()
    _no_traceback(at)
    assert metric(at, "Jaccard (IoU)")  # a 1x1 mask of a 80x60 image is scored, stretched


def test_a_30000_pixel_square_mask_is_refused_clearly_on_every_rerun(tiny_zoo):
    at = open_page(truth=samples.huge_png(30000, 30000))
    _no_traceback(at)
    assert any("Cannot use the ground-truth mask" in e and "too large" in e for e in errors(at)), errors(at)
    at.run()
    _no_traceback(at)
    assert any("Upload the ground-truth mask" in i.value for i in at.info)


def test_threshold_survives_switching_rules_and_the_curve_marks_it(tiny_zoo):
    at = open_page()
    at.slider(key=threshold_key("fraction")).set_value(0.3).run()
    at.radio(key=RULE).set_value("top").run()
    at.radio(key=RULE).set_value("fraction").run()
    assert at.slider(key=threshold_key("fraction")).value == pytest.approx(0.3)
    (figure,) = [f for f in plotly_figures(at) if "Jaccard versus threshold" in str(f["layout"]["title"])]
    lines = [s for s in figure["layout"].get("shapes", []) if s.get("type") == "line"]
    assert [s["x0"] for s in lines] == [pytest.approx(0.3)]
    assert any("in use: 0.3" in a.get("text", "") for a in figure["layout"].get("annotations", []))


def test_ground_truth_does_not_carry_over_to_a_new_image(tiny_zoo):
    at = open_page()
    assert metric(at, "Jaccard (IoU)")
    at.selectbox(key="image.example").select("Coffee cup").run()
    _no_traceback(at)
    assert not at.metric  # the horse-less coffee cup is not scored against the scene's mask
    assert any("belonged to the previous image" in i.value for i in at.info)
    uploaders = [u for u in at.get("file_uploader") if u.proto.label.startswith("Ground-truth")]
    assert uploaders and all(not u.value for u in uploaders)
