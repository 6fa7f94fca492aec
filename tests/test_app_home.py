"""The home page through AppTest: what it shows agrees with ltpa called directly; bad files get a
clear message and the page keeps working."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import sample_images as samples
from app_helpers import (GALLERY, HOME, assert_page_matches, captions, direct_analysis, errors,
                         figures_titled, image_captions, start_app, start_with_empty_zoo,
                         upload)
from pages.ui import state
from pages.ui.widgets import gallery

COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()


def test_upload_shows_the_prediction_and_maps_ltpa_computes(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    assert not at.exception and not errors(at)
    expected = direct_analysis("vgg_att3_concat_pc", COFFEE)
    assert_page_matches(at, expected)
    shown = image_captions(at)
    for stage_map in expected.maps:
        height, width = stage_map.native_size
        assert f"{stage_map.stage} ({height}x{width} map)" in shown
    table = at.dataframe[0].value
    assert list(table["stage"]) == list(expected.stages)
    np.testing.assert_allclose(table["mass in top 10%"], [m.stats.top10_mass for m in expected.maps], atol=1e-4)
    assert at.session_state[state.IMAGE_NAME] == "coffee.jpg"
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels.count("Overlay PNG") == labels.count(".npy") == labels.count("CSV") == len(expected.maps)
    assert "View record (JSON)" in labels


def test_switching_models_updates_everything(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    at.radio(key="model.compatibility").set_value("dp").run()
    assert at.session_state[state.MODEL_ID] == "vgg_att3_concat_dp"
    assert_page_matches(at, direct_analysis("vgg_att3_concat_dp", COFFEE))
    at.selectbox(key="model.backbone").select("resnet").run()
    expected = direct_analysis("resnet_att2_concat_pc", COFFEE)
    assert expected.stages == ("stage2", "stage3")
    assert_page_matches(at, expected)
    assert at.session_state[state.MODEL_ID] == "resnet_att2_concat_pc"
    assert not any(c.startswith("layer7 (") for c in image_captions(at))


def test_baseline_without_attention_says_so(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    at.selectbox(key="model.attention_kind").select("none").run()
    assert at.session_state[state.MODEL_ID] == "vgg"
    assert_page_matches(at, direct_analysis("vgg", COFFEE))
    # A baseline has no head or compatibility to choose.
    assert not [r for r in at.radio if r.key in ("model.head", "model.compatibility")]
    assert any("baseline without attention" in info.value for info in at.info)


def test_gallery_example_is_analysed(tiny_zoo):
    at = start_app()
    at.selectbox(key="image.example").select("Falcon 9 launch").run()
    assert at.session_state[state.IMAGE_NAME] == "photo_rocket.jpg"
    assert_page_matches(at, direct_analysis("vgg_att3_concat_pc", (GALLERY / "photo_rocket.jpg").read_bytes()))


def test_display_controls_change_the_view_and_persist(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    at.slider(key=f"widget.{state.OPACITY}").set_value(0.8).run()
    at.selectbox(key=f"widget.{state.COLORMAP}").select("viridis").run()
    assert at.session_state[state.OPACITY] == pytest.approx(0.8)
    heatmaps = figures_titled(at, "layer7 (")
    colours = heatmaps[0]["data"][0]["colorscale"]
    assert colours[0][1].lower() in ("#440154", "rgb(68,1,84)")  # viridis starts dark purple
    assert_page_matches(at, direct_analysis("vgg_att3_concat_pc", COFFEE))


# name, bytes, mime, expected message (error for refusals, note for accepted-but-converted files)
REFUSED = {
    "non-image": ("data.png", b"name,value\nalpha,1\n" * 20, "image/png", "not an image"),
    "zero-byte": ("empty.png", b"", "image/png", "empty"),
    "truncated": ("cut.png", samples.truncated(samples.png_rgb()), "image/png", "truncated"),
    "over-40-megapixels": ("huge.png", samples.huge_png(8000, 6000), "image/png", "40-megapixel limit"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_file_gets_a_clear_error_and_the_app_keeps_working(tiny_zoo, case):
    name, data, mime, message = REFUSED[case]
    at = upload(start_app(), name, data, mime)
    assert not at.exception
    assert any(name in e and message in e for e in errors(at)), errors(at)
    # The next good upload works normally.
    upload(at, "coffee.jpg", COFFEE, "image/jpeg")
    assert not errors(at)
    assert_page_matches(at, direct_analysis("vgg_att3_concat_pc", COFFEE))


ACCEPTED = {
    "16-bit": ("deep.png", samples.png_16bit_grey(), "image/png", "16-bit", (40, 40)),
    "cmyk": ("print.jpg", samples.jpeg_cmyk(), "image/jpeg", "CMYK", (40, 40)),
    "palette-transparency": ("logo.png", samples.png_palette_transparent(), "image/png", "white", (40, 40)),
    "greyscale": ("grey.png", samples.png_greyscale(), "image/png", "greyscale", (40, 40)),
    "exif-rotated": ("phone.jpg", samples.jpeg_exif_rotated(60, 30), "image/jpeg", "EXIF", (60, 30)),
    "animated-gif": ("anim.gif", samples.gif_animated(), "image/gif", "first frame", (40, 40)),
    "8x8": ("tiny.png", samples.png_tiny(8), "image/png", "8x8", (8, 8)),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_awkward_file_is_converted_with_a_visible_note(tiny_zoo, case):
    name, data, mime, note, (height, width) = ACCEPTED[case]
    at = upload(start_app(), name, data, mime)
    assert not at.exception and not errors(at)
    assert any(note in c for c in captions(at)), captions(at)
    assert f"{name} ({width}x{height})" in image_captions(at)  # shown upright, at its own size
    expected = direct_analysis("vgg_att3_concat_pc", data)
    assert expected.image_size == (height, width)
    assert_page_matches(at, expected)


def test_empty_zoo_is_explained(tmp_path, monkeypatch):
    at = start_with_empty_zoo(tmp_path, monkeypatch)
    assert any("Choose an image and a model" in i.value for i in at.info)


def test_missing_checkpoint_file_is_reported(tiny_zoo_dir, tmp_path, monkeypatch):
    broken = tmp_path / "zoo"
    shutil.copytree(tiny_zoo_dir, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    first = manifest["models"][0]
    (broken / first["file"]).unlink()
    monkeypatch.setenv("LTPA_ZOO", str(broken))
    at = start_app()
    assert not at.exception
    assert any(f"Cannot load model **{first['id']}**" in e for e in errors(at)), errors(at)


def test_large_image_is_drawn_smaller_but_analysed_whole(tiny_zoo):
    data = samples.huge_png(3000, 2000)
    at = upload(start_app(), "large.png", data, "image/png")
    assert not at.exception and not errors(at)
    assert any("drawn at 1400x933" in c and "3000x2000" in c for c in captions(at)), captions(at)
    assert "large.png (3000x2000)" in image_captions(at)
    assert_page_matches(at, direct_analysis("vgg_att3_concat_pc", data))


# ----------------------------------------------------------------------------- classroom rough edges
def test_upload_error_is_shown_in_the_main_area_too(tiny_zoo):
    at = upload(start_app(), "notes.png", b"plain text, not an image", "image/png")
    assert not at.exception
    main_errors = [e.value for e in at.main.error]
    assert any("notes" in e and "not an image" in e for e in main_errors), main_errors
    assert not any("Choose an image" in i.value for i in at.main.info)


def test_picking_an_example_empties_the_uploader(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    assert at.file_uploader[0].value is not None
    at.selectbox(key="image.example").select("Falcon 9 launch").run()
    assert at.session_state[state.IMAGE_NAME] == "photo_rocket.jpg"
    (uploader,) = at.get("file_uploader")
    assert not uploader.value  # a fresh uploader: the old file is no longer listed
    # A thumbnail button picks an example as well, and the gallery shows pictures.
    at.button(key="image.thumb.photo_chelsea.jpg").click().run()
    assert at.session_state[state.IMAGE_NAME] == "photo_chelsea.jpg"
    thumbnails = sum(len(e.proto.imgs) for e in at.sidebar.get("image"))
    assert thumbnails >= len(gallery())  # one per example, plus the preview of the chosen image


def test_sidebar_lists_home_and_every_page(tiny_zoo):
    at = start_app()
    links = [(e.proto.label, e.proto.page) for e in at.sidebar.get("page_link")]
    labels = [label for label, _ in links]
    assert labels[0] == "Home"
    pages = sorted(p.name for p in (HOME.parent / "pages").glob("[0-9]_*.py"))
    assert labels[1:] == [p.split("_", 1)[1][:-3].replace("_", " ") for p in pages]
    for page in pages:  # every page draws the same list (the built-in one is hidden)
        at.switch_page(f"pages/{page}").run()
        assert [e.proto.label for e in at.sidebar.get("page_link")][:1] == ["Home"], page


def test_compatibility_is_its_own_control_and_near_uniform_maps_are_labelled(tiny_zoo):
    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    labels = {w.key: w.label for w in list(at.selectbox) + list(at.radio) if w.key and w.key.startswith("model.")}
    assert labels == {"model.backbone": "Model: backbone", "model.attention_kind": "Model: tapped stages",
                      "model.head": "Model: head", "model.compatibility": "Model: compatibility",
                      "model.normalisation": "Model: normalisation"}
    assert at.radio(key="model.compatibility").options == ["pc", "dp"]
    # The untrained tiny models spread attention evenly: every map is near-uniform and says so
    # on the picture (a dark band across its top) and in the colour-bar caption.
    expected = direct_analysis("vgg_att3_concat_pc", COFFEE)
    from ltpa.figures import NEAR_UNIFORM_ENTROPY

    assert all(m.stats.normalised_entropy >= NEAR_UNIFORM_ENTROPY for m in expected.maps)
    assert any("near-uniform" in c for c in captions(at))
    from ltpa.figures import with_banner

    plain = np.full((100, 200, 3), 200, np.uint8)
    banner = with_banner(plain, "near-uniform: entropy/log N = 0.999")
    assert banner.shape[1] >= 256 and banner[:5].mean() < 100 and banner[-5:].mean() == 200


def test_all_stages_figure_downloads_one_png_with_every_stage(tiny_zoo):
    import cv2

    from ltpa.figures import stages_figure

    at = upload(start_app(), "coffee.jpg", COFFEE, "image/jpeg")
    labels = [button.proto.label for button in at.get("download_button")]
    assert "All stages figure (PNG)" in labels
    expected = direct_analysis("vgg_att3_concat_pc", COFFEE)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(COFFEE, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    figure = stages_figure(image, [(m.stage, m.native) for m in expected.maps], tile=200)
    # The image and three stages side by side (8-pixel gaps), each 200 high plus a caption strip.
    tile_width = round(200 * 512 / 341)
    assert figure.shape[1] == 4 * tile_width + 3 * 8
    assert figure.shape[0] > 200 + 28
    with pytest.raises(ValueError, match="at least one map"):
        stages_figure(image, [])


def test_markdown_in_an_uploaded_name_shows_as_plain_text(tiny_zoo):
    from app_helpers import raw_errors

    name = "[win](http://evil.example) **now**.png"
    at = upload(start_app(), name, b"not an image", "image/png")
    assert not at.exception
    assert all("](" not in e and "**now**" not in e for e in raw_errors(at))
    assert any(name in e for e in errors(at))  # what the reader sees: the name as typed
