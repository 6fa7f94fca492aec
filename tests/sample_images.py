"""Image files of every awkward kind, built in memory for the image and app tests."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def gradient_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """A colourful image whose every pixel differs, so flips and rotations are detectable."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // max(1, width - 1), ys * 255 // max(1, height - 1),
                     (xs + ys) % 256], axis=2).astype(np.uint8)


def png_rgb(height: int = 48, width: int = 64) -> bytes:
    return encode(Image.fromarray(gradient_rgb(height, width)), "PNG")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of one colour: a few kilobytes on disk, ``width*height`` pixels."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def png_16bit_grey(value: int = 257 * 100) -> bytes:
    return encode(Image.fromarray(np.full((40, 40), value, np.uint16)), "PNG")


def png_16bit_rgb(value: int = 257 * 100) -> bytes:
    ok, buffer = cv2.imencode(".png", np.full((40, 40, 3), value, np.uint16))
    assert ok
    return buffer.tobytes()


def jpeg_cmyk() -> bytes:
    """A pure-red CMYK JPEG (C=0, M=255, Y=255, K=0)."""
    return encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95)


def png_palette_transparent() -> bytes:
    """A palette PNG: left half transparent, right half opaque blue."""
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    image.paste(1, (20, 0, 40, 40))
    return encode(image, "PNG", transparency=0)


def png_greyscale(value: int = 77) -> bytes:
    return encode(Image.new("L", (40, 40), value), "PNG")


def jpeg_exif_rotated(width: int = 60, height: int = 30, orientation: int = 6) -> bytes:
    """A ``width`` x ``height`` JPEG stored sideways: orientation 6 means 'rotate 90° clockwise
    to view', so the upright image is ``height`` wide and ``width`` tall."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:10, :10] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def gif_animated(colours=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> bytes:
    frames = [Image.new("RGB", (40, 40), c).convert("P") for c in colours]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_tiny(size: int = 8) -> bytes:
    return encode(Image.fromarray(gradient_rgb(size, size)), "PNG")


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_with_text_chunks(total_chars: int, chunks: int = 1) -> bytes:
    """A tiny PNG whose compressed text chunks inflate to ``total_chars`` characters in all."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for index in range(chunks):
        info.add_text(f"comment{index}", "A" * (total_chars // chunks), zip=True)
    return encode_with_info(Image.fromarray(gradient_rgb(8, 8)), info)


def encode_with_info(image: Image.Image, info) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


COLOURS = ("red", "green", "blue")


def make_folder(root: Path, per_class: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """An ImageFolder tree whose class is the dominant colour (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for index, colour in enumerate(COLOURS):
            folder = root / split / colour
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
                pixels[..., index] += 160
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root
