"""ltpa.data decodes an ImageFolder's JPEGs to the same pixels as ltpa.images.load_image, in one
thread for small images and in threads for larger ones, and still reports a damaged file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltpa import data
from ltpa.data import CACHE_ENV, DatasetError, load_image_folder
from ltpa.images import load_image
from recording import record_calls


def jpeg_folder(root: Path, size: int, per_class: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in ("cat", "dog"):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=80)
    return root


def expected_images(root: Path) -> np.ndarray:
    """Every file through Pillow's path (load_image), in the folder's order."""
    files = sorted(p for p in root.rglob("*.jpg"))
    return np.stack([load_image(p.read_bytes()).array for p in files]).transpose(0, 3, 1, 2)


@pytest.fixture(autouse=True)
def no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "")


def record_thread_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return record_calls(monkeypatch, data, "ThreadPoolExecutor")


@pytest.mark.parametrize("size, threaded", [(32, False), (80, True)])
def test_jpeg_folders_decode_to_pillows_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               size: int, threaded: bool) -> None:
    root = jpeg_folder(tmp_path / "train", size)
    pools = record_thread_pools(monkeypatch)
    pillow_calls = record_calls(monkeypatch, data, "load_image")
    loaded = load_image_folder(root)
    assert bool(pools) == threaded  # 32x32 files are decoded in one thread
    assert not pillow_calls  # plain JPEGs take OpenCV's path
    np.testing.assert_array_equal(loaded.images.numpy(), expected_images(root))
    assert loaded.labels.tolist() == [0] * 4 + [1] * 4


def test_the_threaded_and_single_thread_paths_agree(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    root = jpeg_folder(tmp_path / "train", 40, per_class=300)  # more than one chunk of files
    single = load_image_folder(root).images
    monkeypatch.setattr(data, "SERIAL_DECODE_PIXELS", 0)
    pools = record_thread_pools(monkeypatch)
    threaded = load_image_folder(root).images
    assert pools and np.array_equal(single.numpy(), threaded.numpy())


def test_a_cut_short_jpeg_in_a_folder_is_still_reported(tmp_path: Path) -> None:
    root = jpeg_folder(tmp_path / "train", 32)
    damaged = root / "dog" / "002.jpg"
    damaged.write_bytes(damaged.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=r"1 of its 8 image files cannot be decoded .*002\.jpg"):
        load_image_folder(root)
