"""ltpa.images: every awkward kind of file becomes an upright RGB image or a clear ImageError."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import sample_images as samples
from ltpa import images
from ltpa.images import ImageError, load_image


def test_plain_png_round_trips_exactly():
    data = samples.png_rgb(48, 64)
    loaded = load_image(data)
    assert loaded.array.dtype == np.uint8 and loaded.array.shape == (48, 64, 3)
    np.testing.assert_array_equal(loaded.array, samples.gradient_rgb(48, 64))
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert (loaded.format, loaded.mode, loaded.notes) == ("PNG", "RGB", ())


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_other_supported_formats_decode(fmt):
    image = Image.fromarray(samples.gradient_rgb(40, 50))
    loaded = load_image(samples.encode(image, fmt))
    assert loaded.array.shape == (40, 50, 3) and loaded.format == fmt


def test_non_image_file_is_refused_clearly():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"name,value\nalpha,1\n" * 20)


def test_zero_byte_file_is_refused_clearly():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("make", [samples.png_rgb, lambda: samples.encode(
    Image.fromarray(samples.gradient_rgb(64, 64)), "JPEG")])
def test_truncated_file_is_refused_clearly(make):
    with pytest.raises(ImageError, match="truncated"):
        load_image(samples.truncated(make()))


def test_over_40_megapixels_is_refused_before_decoding(monkeypatch):
    data = samples.huge_png(8000, 6000)  # 48 MP in a few kilobytes
    assert len(data) < 200_000

    def fail_if_decoded(self):
        raise AssertionError("pixels were decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_if_decoded)
    with pytest.raises(ImageError, match=r"8000x6000 \(48.0 megapixels\).*40-megapixel"):
        load_image(data)


def test_beyond_pillow_bomb_limit_gets_the_same_clear_refusal():
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100  # Pillow itself raises at open
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_image(samples.huge_png(side, side))


def test_limit_is_inclusive(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    assert load_image(samples.huge_png(100, 100)).array.shape == (100, 100, 3)
    with pytest.raises(ImageError, match="101x100"):
        load_image(samples.huge_png(101, 100))


def test_16_bit_greyscale_is_scaled_to_8_bits():
    loaded = load_image(samples.png_16bit_grey(257 * 100))
    assert loaded.mode.startswith("I")
    assert np.all(loaded.array == 100)
    assert any("16-bit" in note for note in loaded.notes)


def test_16_bit_rgb_png_is_reduced_with_a_note():
    loaded = load_image(samples.png_16bit_rgb(257 * 100))
    assert np.all(loaded.array == 100)
    assert any("16 bits per channel" in note for note in loaded.notes)


def test_cmyk_jpeg_becomes_rgb():
    loaded = load_image(samples.jpeg_cmyk())
    assert loaded.mode == "CMYK"
    red, green, blue = loaded.array[20, 20].astype(int)
    assert red > 200 and green < 50 and blue < 50
    assert any("CMYK" in note for note in loaded.notes)


def test_palette_transparency_is_composited_on_white():
    loaded = load_image(samples.png_palette_transparent())
    assert loaded.mode == "P"
    np.testing.assert_array_equal(loaded.array[20, 5], [255, 255, 255])  # transparent half
    np.testing.assert_array_equal(loaded.array[20, 30], [0, 0, 255])  # opaque blue half
    assert any("white" in note for note in loaded.notes)


def test_greyscale_is_copied_to_three_channels():
    loaded = load_image(samples.png_greyscale(77))
    assert loaded.array.shape == (40, 40, 3) and np.all(loaded.array == 77)
    assert any("greyscale" in note for note in loaded.notes)


def test_exif_rotated_jpeg_is_shown_upright():
    loaded = load_image(samples.jpeg_exif_rotated(width=60, height=30, orientation=6))
    assert loaded.array.shape == (60, 30, 3)  # stored 60 wide x 30 tall, viewed 30 wide x 60 tall
    # Rotating 90 degrees clockwise moves the stored top-left corner to the top-right.
    assert loaded.array[3, 26, 0] > 200 and loaded.array[3, 3, 0] < 60
    assert any("EXIF" in note for note in loaded.notes)


def test_animated_gif_uses_the_first_frame():
    loaded = load_image(samples.gif_animated())
    red, green, blue = loaded.array[10, 10].astype(int)
    assert red > 200 and green < 50 and blue < 50
    assert any("3 frames" in note and "first frame" in note for note in loaded.notes)


def test_tiny_image_is_accepted_with_a_note():
    loaded = load_image(samples.png_tiny(8))
    assert loaded.array.shape == (8, 8, 3)
    assert any("8x8" in note and "32x32" in note for note in loaded.notes)


def test_unsupported_format_is_named():
    with pytest.raises(ImageError, match="PPM images are not supported"):
        load_image(samples.encode(Image.new("RGB", (40, 40)), "PPM"))


@pytest.mark.parametrize("total, chunks", [(20_000_000, 1), (70_000_000, 70)])
def test_text_chunk_bombs_are_called_too_large_not_damaged(total, chunks):
    data = samples.png_with_text_chunks(total, chunks)
    assert len(data) < 200_000  # kilobytes that would inflate to tens of megabytes
    with pytest.raises(ImageError) as info:
        load_image(data)
    message = str(info.value)
    assert "too large" in message and "damaged" not in message


def test_ordinary_text_chunks_still_load():
    loaded = load_image(samples.png_with_text_chunks(1000))
    assert loaded.array.shape == (8, 8, 3)


@pytest.mark.parametrize("name, forbidden", [
    ("[click me](https://evil.example/steal).png", ["[click me](", "https://"]),
    ("**bold** _it_ `code` $x^2$.png", ["**bold**", "`code`", "$x^2$"]),
    ("<img src=x onerror=alert(1)>.png", ["src=x", "(1)>"]),
    (":warning: www.evil.example.png", [":warning:", "www.evil"]),
])
def test_display_name_escapes_markdown(name, forbidden):
    shown = images.display_name(name)
    for fragment in forbidden:
        assert fragment not in shown
    # Removing the escapes gives the name back: it is shown as the characters it is.
    assert shown.replace("\\", "") == name


def test_display_name_flattens_lines_and_shortens():
    assert images.display_name("a\nb\tc\x00d.png") == "a b c d\\.png"
    shown = images.display_name("x" * 500)
    assert len(shown) == images.MAX_DISPLAY_NAME and shown.endswith("…")


# ------------------------------------------------------------------ the dataset JPEG fast path
@pytest.mark.parametrize("make", [
    lambda: samples.encode(Image.fromarray(samples.gradient_rgb(48, 64)), "JPEG", quality=85),
    lambda: samples.encode(Image.fromarray(samples.gradient_rgb(33, 47)), "JPEG", quality=95,
                           subsampling=0),
    lambda: samples.encode(Image.fromarray(samples.gradient_rgb(40, 40)), "JPEG", progressive=True),
    lambda: samples.encode(Image.fromarray(samples.gradient_rgb(32, 32)).convert("L"), "JPEG"),
])
def test_plain_jpegs_decode_to_the_same_pixels_as_load_image(make):
    data = make()
    fast = images.decode_plain_jpeg(data)
    assert fast is not None and fast.dtype == np.uint8 and fast.shape[2] == 3
    np.testing.assert_array_equal(fast, load_image(data).array)


@pytest.mark.parametrize("make", [
    samples.png_rgb,  # not a JPEG
    samples.jpeg_cmyk,  # four components, Adobe transform
    lambda: samples.jpeg_exif_rotated(width=60, height=30, orientation=6),  # EXIF orientation
    lambda: samples.truncated(samples.encode(Image.fromarray(samples.gradient_rgb(64, 64)), "JPEG")),
    lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40 + b"\xff\xd9",  # no frame header
    lambda: b"",
])
def test_other_files_are_left_to_load_image(make):
    assert images.decode_plain_jpeg(make()) is None


def test_a_plain_jpeg_over_the_pixel_limit_is_left_to_load_image(monkeypatch):
    data = samples.encode(Image.fromarray(samples.gradient_rgb(40, 50)), "JPEG")
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 50 - 1)
    assert images.decode_plain_jpeg(data) is None
    with pytest.raises(ImageError, match="over the"):
        load_image(data)
