"""ltpa.inference and ltpa.viz without Streamlit: the numbers every page shows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sample_images as samples
from app_helpers import GALLERY, decode_plotly
from ltpa import viz
from ltpa.images import load_image
from ltpa.inference import analyse, posthoc
from ltpa.maps import map_stats, upsample
from ltpa.preprocess import image_to_input
from ltpa.zoo import load_zoo_model

COFFEE = load_image((GALLERY / "photo_coffee.jpg").read_bytes()).array


def test_analysis_matches_a_plain_forward_pass(tiny_zoo):
    loaded = load_zoo_model("vgg_att3_concat_pc")
    analysis = analyse(loaded, COFFEE)
    with torch.no_grad():
        out = loaded.model(image_to_input(COFFEE, 32))
    expected = torch.softmax(out.logits, 1)[0].numpy()
    np.testing.assert_allclose(analysis.probabilities, expected, rtol=1e-5)
    assert analysis.stages == out.stages == ("layer7", "layer10", "layer13")
    top = analysis.top(5)
    assert [p for _, p in top] == sorted(expected, reverse=True)[:5]
    assert top[0][0] == analysis.predicted_class == loaded.class_names[int(expected.argmax())]
    for stage_map, attention in zip(analysis.maps, out.maps):
        np.testing.assert_allclose(stage_map.native, attention[0, 0].numpy(), rtol=1e-6)
        assert stage_map.upsampled.shape == COFFEE.shape[:2] == analysis.image_size
        np.testing.assert_allclose(stage_map.upsampled, upsample(stage_map.native, COFFEE.shape[:2]))
        assert stage_map.upsampled.sum() == pytest.approx(1.0, rel=1e-4)
        assert stage_map.stats == map_stats(stage_map.native)


def test_baseline_has_no_maps_and_tiny_images_work(tiny_zoo):
    assert analyse(load_zoo_model("vgg"), COFFEE).maps == ()
    tiny = load_image(samples.png_tiny(8)).array
    analysis = analyse(load_zoo_model("resnet_att2_concat_pc"), tiny)
    assert [m.upsampled.shape for m in analysis.maps] == [(8, 8), (8, 8)]


def test_posthoc_is_a_distribution_and_never_touches_the_model(tiny_zoo):
    loaded = load_zoo_model("vgg_gap")
    for method in ("grad_cam", "cam"):
        saliency = posthoc(loaded, COFFEE, method)
        assert saliency.native.min() >= 0
        assert saliency.native.sum() == pytest.approx(1.0, rel=1e-5)
        assert saliency.upsampled.shape == COFFEE.shape[:2]
    assert not loaded.model.training
    assert all(p.grad is None for p in loaded.model.parameters())
    with torch.no_grad():  # Grad-CAM must still work when the caller disabled gradients
        posthoc(loaded, COFFEE, "grad_cam")
    with pytest.raises(ValueError, match="global-average-pooling"):
        posthoc(load_zoo_model("vgg"), COFFEE, "cam")
    with pytest.raises(ValueError, match="unknown method"):
        posthoc(loaded, COFFEE, "saliency")


def test_heatmap_hover_gives_value_and_share_of_mass():
    attention = np.array([[0.1, 0.3], [0.2, 0.4]])
    trace = viz.map_heatmap(attention, "stage").to_plotly_json()["data"][0]
    np.testing.assert_allclose(decode_plotly(trace["z"]), attention)
    np.testing.assert_allclose(decode_plotly(trace["customdata"]), attention / attention.sum())
    assert "share of attention mass" in trace["hovertemplate"]


def test_top_k_bar_puts_the_most_probable_on_top():
    trace = viz.top_k_bar([("cat", 0.6), ("dog", 0.3), ("frog", 0.1)]).to_plotly_json()["data"][0]
    assert list(trace["y"]) == ["frog", "dog", "cat"]  # Plotly draws the last bar at the top
    np.testing.assert_allclose(decode_plotly(trace["x"]), [0.1, 0.3, 0.6])


def test_confusion_heatmap_shows_rates_per_true_class():
    counts = [[8, 2], [0, 0]]  # an empty class must not divide by zero
    trace = viz.confusion_heatmap(counts, ["a", "b"]).to_plotly_json()["data"][0]
    np.testing.assert_allclose(decode_plotly(trace["z"]), [[0.8, 0.2], [0.0, 0.0]])


def test_stage_stats_figure_has_a_panel_per_figure():
    stats = {"layer7": map_stats(np.full((4, 4), 1 / 16)), "layer13": map_stats(np.eye(4) / 4)}
    figure = viz.stage_stats_figure(stats).to_plotly_json()
    assert len(figure["data"]) == 3
    entropy = decode_plotly(figure["data"][0]["y"])
    assert entropy[0] == pytest.approx(1.0) and entropy[1] < 1.0


def test_view_record_identifies_image_model_and_settings(tiny_zoo):
    from pages.ui.views import view_record
    from pages.ui.widgets import ChosenImage

    data = (GALLERY / "photo_coffee.jpg").read_bytes()
    chosen = ChosenImage("coffee.jpg", data, "upload", load_image(data))
    loaded = load_zoo_model("vgg_att3_concat_pc")
    record = view_record(chosen, [analyse(loaded, chosen.array)], {"opacity": 0.3})
    assert record["image"]["sha256"] == chosen.sha256
    (model,) = record["models"]
    assert model["id"] == "vgg_att3_concat_pc"
    assert model["checkpoint_sha256"] == loaded.entry.card["sha256"]
    assert [s["stage"] for s in model["stages"]] == ["layer7", "layer10", "layer13"]
    assert record["settings"] == {"opacity": 0.3}


def test_download_encodings_round_trip():
    import io

    import cv2

    from pages.ui.views import csv_text, npy_bytes, npz_bytes, png_bytes

    image = samples.gradient_rgb(20, 30)
    decoded = cv2.imdecode(np.frombuffer(png_bytes(image), np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[:, :, ::-1], image)  # PNG is lossless, RGB order kept
    attention = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_bytes(attention))), attention)
    np.testing.assert_allclose(np.loadtxt(io.StringIO(csv_text(attention)), delimiter=","), attention, rtol=1e-7)
    with np.load(io.BytesIO(npz_bytes({"a": attention, "b": attention.T}))) as archive:
        np.testing.assert_array_equal(archive["b"], attention.T)
