"""Decode user images safely: any common file becomes an upright RGB uint8 array, or a clear error.

The header is read first (Pillow opens lazily) so an image too large to decode safely is refused
before its pixels are touched; so is one whose metadata (PNG text chunks) would inflate beyond
Pillow's limits. Every conversion (16-bit, CMYK, transparency, greyscale, EXIF rotation,
animation, tiny size) is recorded as a plain-language note for the user. ``display_name`` shows a
user's file name as plain text inside Markdown (no live links or formatting).

Datasets of many small files take ``decode_plain_jpeg`` first: the plain JPEGs that need none of
those conversions are decoded by OpenCV, which releases the GIL (threads decode in parallel)
and gives the same pixels as the Pillow path; every other file goes through ``load_image``.
"""
from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# 40 megapixels is ~120 MB as RGB uint8: beyond that we refuse rather than risk a memory blow-up.
MAX_PIXELS = 40_000_000
SUPPORTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF")
# Extensions for upload widgets (MPO is what some cameras call a JPEG).
UPLOAD_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif")
MODEL_INPUT_SIZE = 32
EXIF_ORIENTATION_TAG = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers: frame headers whose files decode_plain_jpeg takes (baseline, extended sequential
# and progressive Huffman), every other frame header (lossless, arithmetic, hierarchical), the
# start of scan, and markers with no length field.
_PLAIN_JPEG_FRAMES = (0xC0, 0xC1, 0xC2)
_OTHER_JPEG_FRAMES = (0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
_JPEG_START_OF_SCAN = 0xDA
_JPEG_STANDALONE = (0x01, *range(0xD0, 0xD8))
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")
# How Pillow words a refusal to inflate metadata (PNG zTXt/iTXt/iCCP chunks) past its limits.
_METADATA_BOMB = re.compile(r"too large|too much memory|MAX_TEXT", re.IGNORECASE)
# Longest file name shown back to the user.
MAX_DISPLAY_NAME = 80
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


class ImageError(ValueError):
    """A file that cannot be shown to the model, with a message meant for the user."""


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB uint8 image decoded from a file, plus what was done to get there."""

    array: np.ndarray  # H x W x 3, uint8, RGB
    format: str  # Pillow's format name, e.g. "PNG"
    mode: str  # the file's original Pillow mode, e.g. "CMYK", "I;16", "P"
    sha256: str  # of the file's bytes: identifies the input of a view
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def width(self) -> int:
        return int(self.array.shape[1])


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of a byte string.

    Args:
        data: the bytes.

    Returns:
        The hex digest.
    """
    return hashlib.sha256(data).hexdigest()


def display_name(name: str, limit: int = MAX_DISPLAY_NAME) -> str:
    """A user-supplied name (e.g. an uploaded file's) as plain text for Markdown display.

    Every ASCII punctuation character is backslash-escaped (so ``[x](javascript:...)``, ``**``,
    ``:emoji:``, ``$maths$`` and bare URLs render as the characters they are), control characters
    and line breaks become spaces, and a name longer than ``limit`` is shortened with an ellipsis.

    Args:
        name: the name as given.
        limit: the most characters kept (before escaping).

    Returns:
        Markdown source that renders as the name's plain text.
    """
    cleaned = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(name))
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: max(1, limit - 1)] + "…"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", cleaned)


def _unreadable(error: Exception) -> ImageError:
    """The user-facing error for a decoding failure: metadata bombs are "too large", not damaged."""
    if _METADATA_BOMB.search(str(error)):
        return ImageError(
            "the image's metadata (text chunks) is too large to read safely; save the image "
            "again without metadata"
        )
    return ImageError(f"the image file is damaged or truncated and cannot be read ({error})")


def _png_bit_depth(data: bytes) -> int | None:
    """Bits per channel from a PNG's IHDR chunk (Pillow silently reduces 16-bit RGB to 8-bit)."""
    if data[:8] == _PNG_SIGNATURE and len(data) >= 25 and data[12:16] == b"IHDR":
        return data[24]
    return None


def _open_header(data: bytes) -> Image.Image:
    """Open lazily: only the header is parsed, no pixels are decoded yet."""
    if len(data) == 0:
        raise ImageError("the file is empty (0 bytes); choose an image file")
    try:
        with warnings.catch_warnings():
            # We apply our own, lower pixel limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image is too large to decode safely (over {MAX_PIXELS / 1e6:.0f} megapixels); "
            "resize it first"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "this file is not an image that can be read; use PNG, JPEG, WebP, BMP, TIFF or GIF"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _unreadable(error) from None


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG that needs no conversion beyond decoding: 8-bit, one or three
    components, a Huffman-coded frame, no EXIF (orientation) and no Adobe (colour transform)
    segment, and an end-of-image marker last; None for anything else. A file cut short lacks
    that marker: OpenCV would fill in its missing rows, Pillow refuses it (``load_image``)."""
    if data[:3] != b"\xff\xd8\xff" or not data.endswith(b"\xff\xd9"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        segment = data[i + 4:i + 2 + length]
        if (marker == 0xE1 and segment.startswith(b"Exif")) or (
                marker == 0xEE and segment.startswith(b"Adobe")):
            return None
        if marker in _PLAIN_JPEG_FRAMES:
            if len(segment) < 6 or segment[0] != 8 or segment[5] not in (1, 3):
                return None
            height, width = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big")
            return (height, width) if 0 < height * width <= MAX_PIXELS else None
        if marker in _OTHER_JPEG_FRAMES or marker == _JPEG_START_OF_SCAN or length < 2:
            return None
        i += 2 + length
    return None


def decode_plain_jpeg(data: bytes) -> np.ndarray | None:
    """Decode a plain JPEG (8-bit greyscale or colour, no EXIF orientation, no Adobe colour
    transform, complete, within ``MAX_PIXELS``) to RGB uint8 with OpenCV, or return None for any other file
    (and for a plain one OpenCV cannot decode), which ``load_image`` should then decode or refuse.

    Args:
        data: the file's bytes.

    Returns:
        The H x W x 3 RGB uint8 array, the same pixels as ``load_image(data).array``; or None.
    """
    size = _plain_jpeg_size(data)
    if size is None:
        return None
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None or decoded.shape[:2] != size:
        return None
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _check_header(image: Image.Image) -> None:
    if image.format not in SUPPORTED_FORMATS:
        raise ImageError(
            f"{image.format or 'this'} images are not supported; use PNG, JPEG, WebP, BMP, TIFF or GIF"
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels (size {width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
            f"{MAX_PIXELS / 1e6:.0f}-megapixel limit for safe decoding; resize it first"
        )


def _decode_first_frame(image: Image.Image) -> None:
    try:
        image.seek(0)
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _unreadable(error) from None


def _to_rgb(image: Image.Image, notes: list[str]) -> np.ndarray:
    """Convert any decoded Pillow image to RGB uint8, noting what changed."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        values = np.asarray(image).astype(np.float64)
        if mode in _SIXTEEN_BIT_MODES or (mode == "I" and values.min() >= 0 and values.max() <= 65535):
            grey = values / 257.0  # 65535 -> 255 exactly
            notes.append("16-bit greyscale reduced to 8 bits and copied to the three colour channels")
        else:
            low, high = float(values.min()), float(values.max())
            grey = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
            notes.append(f"{mode}-mode greyscale stretched from [{low:g}, {high:g}] to 8 bits and "
                         "copied to the three colour channels")
        grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparent areas composited on white")
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode in ("L", "1"):
        notes.append("greyscale copied to the three colour channels")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB (colours approximate: no colour profile applied)")
    elif mode not in ("RGB", "P"):
        notes.append(f"{mode} converted to RGB")
    return np.asarray(image.convert("RGB"))


def load_image(data: bytes) -> LoadedImage:
    """Decode image bytes to an upright RGB uint8 array.

    Accepts PNG, JPEG, WebP, BMP, TIFF and GIF (first frame of an animation). Images over
    ``MAX_PIXELS`` are refused from the header alone, before any pixel is decoded.

    Args:
        data: the file's bytes.

    Returns:
        The LoadedImage (array, format, original mode, sha256, notes on conversions).

    Raises:
        ImageError: the bytes are empty, not a supported image, too large or damaged.
    """
    image = _open_header(data)
    _check_header(image)
    notes: list[str] = []
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        notes.append(f"animated image with {frames} frames: the first frame is used")
    if _png_bit_depth(data) == 16 and image.mode not in _SIXTEEN_BIT_MODES + ("I",):
        notes.append("16 bits per channel reduced to 8")
    original_mode, file_format = image.mode, str(image.format or "")
    _decode_first_frame(image)
    orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    if orientation not in (None, 1):
        try:
            image = ImageOps.exif_transpose(image)
        except (OSError, ValueError) as error:
            raise ImageError(f"the image's EXIF orientation could not be applied ({error})") from None
        notes.append(f"rotated upright using its EXIF orientation tag ({orientation})")
    array = np.ascontiguousarray(_to_rgb(image, notes), dtype=np.uint8)
    height, width = array.shape[:2]
    if min(height, width) < MODEL_INPUT_SIZE:
        notes.append(
            f"small image ({width}x{height}): it is enlarged to the model's "
            f"{MODEL_INPUT_SIZE}x{MODEL_INPUT_SIZE} input, so expect a coarse result"
        )
    return LoadedImage(array, file_format, original_mode, bytes_sha256(data), tuple(notes))
