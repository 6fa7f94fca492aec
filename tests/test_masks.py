"""Mask rules, clean-up, scores and ground-truth loading (ltpa.masks) on hand-made data."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from ltpa import masks


def ramp(n: int = 10) -> np.ndarray:
    """A 1 x n map with values 1..n (distinct values: every rule has one exact answer)."""
    return np.arange(1, n + 1, dtype=np.float32)[None, :]


# --------------------------------------------------------------------------------------- rules
def test_fraction_rule_keeps_pixels_at_or_above_the_fraction_of_the_maximum() -> None:
    unit = masks.unit_map(ramp())  # 0.1 .. 1.0
    np.testing.assert_array_equal(masks.binarise(unit, "fraction", 0.5)[0], np.arange(10) >= 4)
    assert masks.binarise(unit, "fraction", 1.0).sum() == 1  # only the peak
    assert masks.binarise(unit, "fraction", 0.05).all()


def test_top_rule_keeps_the_requested_share_of_pixels() -> None:
    unit = masks.unit_map(ramp())
    np.testing.assert_array_equal(masks.binarise(unit, "top", 30)[0], np.arange(10) >= 7)
    assert masks.binarise(unit, "top", 100).all()
    assert masks.binarise(unit, "top", 1).sum() == 1  # at least one pixel, rounded up


def test_top_rule_keeps_ties_at_the_cut() -> None:
    unit = np.array([[1.0, 0.5, 0.5, 0.5, 0.1]], dtype=np.float32)
    assert masks.binarise(unit, "top", 40).sum() == 4  # two asked for, the three tied pixels kept


def test_mass_rule_keeps_the_smallest_set_holding_the_mass() -> None:
    # Mass 1..10 sums to 55: 10+9+8 = 27 < 27.5, 10+9+8+7 = 34 >= 27.5 -> four pixels for 50 %.
    unit = masks.unit_map(ramp())
    np.testing.assert_array_equal(masks.binarise(unit, "mass", 50)[0], np.arange(10) >= 6)
    # A peaked map: one pixel holds 91 % of the mass.
    peaked = np.full((4, 4), 0.006, dtype=np.float32)
    peaked[2, 1] = 0.91
    expected = np.zeros((4, 4), dtype=bool)
    expected[2, 1] = True
    np.testing.assert_array_equal(masks.binarise(masks.unit_map(peaked), "mass", 90), expected)
    assert masks.binarise(masks.unit_map(peaked), "mass", 100).all()


def test_otsu_separates_two_level_map_with_noise() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), dtype=bool)
    truth[10:25, 5:30] = True
    attention = np.where(truth, 0.8, 0.2) + rng.normal(0, 0.03, truth.shape)
    np.testing.assert_array_equal(masks.binarise(masks.unit_map(attention), "otsu"), truth)


def test_degenerate_maps_have_one_documented_answer_under_every_rule() -> None:
    for rule in masks.RULES:
        assert not masks.binarise(np.zeros((5, 5)), rule).any()  # nothing attended
        assert masks.binarise(np.full((5, 5), 0.3), rule).all()  # flat: all tie with the max


def test_rule_parameters_are_range_checked() -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        masks.binarise(np.ones((2, 2)), "fraction", 1.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        masks.binarise(np.ones((2, 2)), "fraction", 0)
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        masks.binarise(np.ones((2, 2)), "top", 0)
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        masks.binarise(np.ones((2, 2)), "mass", 120)
    with pytest.raises(ValueError, match="valid choices"):
        masks.binarise(np.ones((2, 2)), "median")
    assert masks.check_threshold("top", None) == masks.DEFAULT_THRESHOLDS["top"]


def test_unit_map_upsamples_clips_and_normalises() -> None:
    native = np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    unit = masks.unit_map(native, (8, 6))
    assert unit.shape == (8, 6)
    assert unit.min() == 0.0 and unit.max() == pytest.approx(1.0)
    assert masks.peak_position(unit)[0] >= 4 and masks.peak_position(unit)[1] >= 3  # bottom right


def test_combine_mean_and_product() -> None:
    a = np.array([[1.0, 0.5, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 2.0, 4.0]], dtype=np.float32)  # unit: 0, 0.5, 1
    np.testing.assert_allclose(masks.combine_maps([a, b], "mean"), [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(masks.combine_maps([a, b], "product"), [[0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="one size"):
        masks.combine_maps([a, np.ones((2, 2))])
    with pytest.raises(ValueError, match="valid choices"):
        masks.combine_maps([a], "max")


def test_clean_up_opening_and_largest_component() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:20, 5:20] = True  # the object
    mask[25, 25] = True  # a speck
    mask[2:4, 24:28] = True  # a small blob
    assert masks.clean_mask(mask, largest_component=True).sum() == 15 * 15
    opened = masks.clean_mask(mask, opening=3)
    assert not opened[25, 25] and opened[10, 10]
    np.testing.assert_array_equal(masks.clean_mask(mask), mask)  # nothing asked, nothing changed
    with pytest.raises(ValueError, match=">= 0"):
        masks.clean_mask(mask, opening=-1)


def test_make_mask_chains_the_steps() -> None:
    native = np.zeros((4, 4), dtype=np.float32)
    native[1, 2] = 1.0
    mask = masks.make_mask(native, (16, 16), "fraction", 0.5)
    assert mask.shape == (16, 16) and mask[6, 10] and not mask[0, 0]


# --------------------------------------------------------------------------------------- scores
def test_scores_on_hand_made_masks() -> None:
    truth = np.zeros((4, 4), dtype=bool)
    truth[:2, :2] = True  # 4 pixels
    pred = np.zeros((4, 4), dtype=bool)
    pred[:2, 1:3] = True  # 4 pixels, 2 of them right
    scores = masks.score_mask(pred, truth)
    assert scores.jaccard == pytest.approx(2 / 6)
    assert scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(0.5)
    assert scores.f1 == pytest.approx(0.5)
    assert masks.jaccard(truth, truth) == 1.0
    assert masks.jaccard(~truth, truth) == 0.0


def test_empty_and_full_mask_conventions() -> None:
    empty, full = np.zeros((3, 3), dtype=bool), np.ones((3, 3), dtype=bool)
    some = empty.copy()
    some[0, 0] = True
    assert masks.score_mask(empty, empty) == masks.MaskScores(1.0, 1.0, 1.0, 1.0)
    assert masks.score_mask(empty, some) == masks.MaskScores(0.0, 0.0, 0.0, 0.0)
    assert masks.score_mask(some, empty) == masks.MaskScores(0.0, 0.0, 0.0, 0.0)
    full_vs_some = masks.score_mask(full, some)
    assert full_vs_some.jaccard == pytest.approx(1 / 9) and full_vs_some.recall == 1.0
    assert masks.score_mask(full, full).jaccard == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        masks.score_mask(empty, np.zeros((2, 2), dtype=bool))


def test_pointing_game() -> None:
    truth = np.zeros((8, 8), dtype=bool)
    truth[4:, 4:] = True
    native = np.zeros((2, 2), dtype=np.float32)
    native[1, 1] = 1.0
    assert masks.pointing_hit(native, truth)
    native = native[::-1].copy()
    assert not masks.pointing_hit(native, truth)


def test_sweep_matches_thresholding_one_by_one() -> None:
    rng = np.random.default_rng(1)
    unit = masks.unit_map(rng.random((6, 6)), (30, 24))
    truth = np.zeros((30, 24), dtype=bool)
    truth[8:24, 4:18] = True
    for rule in ("fraction", "top", "mass"):
        sweep = masks.jaccard_sweep(unit, truth, rule)
        expected = [masks.jaccard(masks.binarise(unit, rule, t), truth) for t in sweep.thresholds]
        np.testing.assert_allclose(sweep.jaccard, expected)
    otsu = masks.jaccard_sweep(unit, truth, "otsu")
    assert otsu.jaccard[0] == masks.jaccard(masks.binarise(unit, "otsu"), truth)


# --------------------------------------------------------------------------------------- ground truth
def square_mask(height: int = 20, width: int = 30) -> np.ndarray:
    truth = np.zeros((height, width), dtype=bool)
    truth[5:15, 10:25] = True
    return truth


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("form", ["0/255", "0/1", "bool", "rgb", "rgba", "palette", "16-bit", "float"])
def test_ground_truth_forms(form: str) -> None:
    truth = square_mask()
    if form == "0/255":
        data = png_bytes(truth.astype(np.uint8) * 255)
    elif form == "0/1":
        data = png_bytes(truth.astype(np.uint8))
    elif form == "bool":
        data = truth
    elif form == "rgb":
        data = png_bytes(np.repeat(truth[..., None].astype(np.uint8) * 255, 3, axis=2))
    elif form == "rgba":
        rgba = np.zeros(truth.shape + (4,), dtype=np.uint8)
        rgba[truth] = (255, 255, 255, 255)
        rgba[~truth, 3] = 255
        data = png_bytes(rgba)
    elif form == "palette":
        image = Image.fromarray(truth.astype(np.uint8), mode="L").convert("P")
        image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
    elif form == "16-bit":
        data = png_bytes(truth.astype(np.uint16) * 65535)
    else:
        data = truth.astype(np.float32)
    np.testing.assert_array_equal(masks.load_mask(data), truth)


def test_noisy_jpeg_mask_is_binarised_at_127(tmp_path) -> None:
    truth = square_mask(64, 96)
    path = tmp_path / "mask.jpg"
    cv2.imwrite(str(path), truth.astype(np.uint8) * 255, [cv2.IMWRITE_JPEG_QUALITY, 40])
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(raw)) > 2  # really noisy
    np.testing.assert_array_equal(masks.load_mask(path), truth)


def test_mask_of_another_size_is_resized_with_nearest_neighbour() -> None:
    truth = square_mask(20, 30)
    big = masks.load_mask(png_bytes(truth.astype(np.uint8) * 255), size=(40, 60))
    assert big.shape == (40, 60) and big.dtype == bool
    np.testing.assert_array_equal(big[::2, ::2], truth)
    assert set(np.unique(big)) <= {False, True}


def test_aspect_mismatch() -> None:
    assert not masks.aspect_mismatch((200, 300), (100, 150))
    assert not masks.aspect_mismatch((178, 257), (356, 512))  # rounding of a 2x photo
    assert masks.aspect_mismatch((200, 300), (100, 100))


def test_unreadable_masks_give_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        masks.load_mask(b"this is not an image")
    with pytest.raises(FileNotFoundError, match="no mask file"):
        masks.load_mask(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="2-D"):
        masks.load_mask(np.zeros((2, 2, 2, 2), dtype=np.uint8))


def test_mask_png_round_trip() -> None:
    truth = square_mask()
    np.testing.assert_array_equal(masks.load_mask(masks.mask_to_png(truth)), truth)


# --------------------------------------------------------------------------------------- page helpers
@pytest.mark.parametrize("rule", ["fraction", "top", "mass"])
def test_cut_table_reproduces_binarise(rule: str) -> None:
    rng = np.random.default_rng(4)
    maps = [masks.unit_map(rng.random((6, 6)), (24, 18)), np.zeros((4, 4), np.float32),
            np.full((4, 4), 0.3, np.float32)]
    for unit in maps:
        table = masks.cut_table(unit, rule, masks.FINE_GRIDS[rule])
        assert len(table) == 100
        for threshold, cut in table.items():
            np.testing.assert_array_equal(unit >= cut, masks.binarise(unit, rule, threshold))
    with pytest.raises(ValueError, match="Otsu"):
        masks.cut_table(maps[0], "otsu", [])


def test_threshold_curve_with_clean_up_and_best_threshold() -> None:
    truth = np.zeros((30, 30), dtype=bool)
    truth[5:25, 5:25] = True
    unit = np.zeros((30, 30), dtype=np.float32)
    unit[5:25, 5:25] = 0.8  # the object
    unit[27, 27] = 1.0  # a bright speck far from it
    plain = masks.threshold_curve(unit, truth, "fraction", (0.5, 0.9))
    np.testing.assert_allclose(plain.jaccard, [400 / 401, 0.0])
    cleaned = masks.threshold_curve(unit, truth, "fraction", (0.5, 0.9), largest_component=True)
    np.testing.assert_allclose(cleaned.jaccard, [1.0, 0.0])  # the speck is not the largest region
    assert masks.best_threshold(cleaned) == (0.5, 1.0)
    otsu = masks.threshold_curve(unit, truth, "otsu", opening=3)
    assert otsu.thresholds == () and masks.best_threshold(otsu)[0] is None


def test_mask_overlay_tints_the_mask_only() -> None:
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:15, 10:20] = True
    out = masks.mask_overlay(image, mask, colour=(255, 0, 0), opacity=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], image[0, 0])  # outside: untouched
    np.testing.assert_array_equal(out[10, 15], [178, 50, 50])  # inside: half way to red
    truth = np.zeros_like(mask)
    truth[2:8, 2:8] = True
    outlined = masks.mask_overlay(image, mask, truth)
    assert (outlined[2, 2:8] != image[2, 2:8]).any()  # the ground truth's outline is drawn
    with pytest.raises(ValueError, match="differ in size"):
        masks.mask_overlay(image, mask[:10])


def test_jaccard_threshold_figure_marks_each_best() -> None:
    from ltpa import viz

    figure = viz.jaccard_threshold_figure(
        {"a": ([0.1, 0.5, 0.9], [0.2, 0.6, 0.4]), "b": ([0.1, 0.5, 0.9], [0.7, 0.1, 0.0])}, "fraction")
    stars = [t for t in figure.data if t.mode == "markers"]
    assert [(s.x[0], s.y[0]) for s in stars] == [(0.5, 0.6), (0.1, 0.7)]
    assert stars[0].marker.color == figure.data[0].line.color
