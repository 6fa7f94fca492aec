"""The app's caches of images and figures (``pages/ui/widgets.py``, ``pages/ui/views.py``): each
is a byte-bounded ``pages.ui.compute.bounded_cache`` with a stated budget, evicts the least
recently used values once full, and an upload is decoded once however often its bytes come back."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Callable

import numpy as np
import pytest

from app_helpers import GALLERY, REPO, start_app, upload
from ltpa.images import MAX_PIXELS, ImageError
from pages.ui import compute, views, widgets

MiB = compute.MiB
COFFEE = (GALLERY / "photo_coffee.jpg").read_bytes()


def _png(index: int) -> bytes:
    """A distinct 48x64 PNG per index (all decode to arrays of one size)."""
    return views.png_bytes(np.full((48, 64, 3), index, np.uint8))


_RANDOM = np.random.default_rng(0)
_SOURCE = _RANDOM.integers(0, 256, (120, 90, 3), dtype=np.uint8)

# name: (the cached function, its budget in bytes, a call whose value differs with its index).
# A call repeated with the same index builds fresh arguments of the same content (a byte-equal
# copy of an upload, a new array of the same map), so a hit means the key is the content.
CASES: dict[str, tuple[Callable[..., Any], int, Callable[[int], Any]]] = {
    "decoded uploads": (widgets._decoded, 128 * MiB, lambda i: widgets.decode_image(bytes(bytearray(_png(i))))),
    "display copies": (widgets._shrunk, 24 * MiB, lambda i: widgets._shrunk(f"sha-{i}", 60, _SOURCE)),
    "gallery thumbnails": (widgets.thumbnail, 2 * MiB, lambda i: widgets.thumbnail("photo_coffee.jpg", float(i))),
    "top-5 figures": (views._top_k_figure, 4 * MiB,
                      lambda i: views._top_k_figure((("cat", 0.5 + i / 100), ("dog", 0.2)), "Top-5: cat")),
    "heatmap figures": (views._heatmap, 8 * MiB,
                        lambda i: views._heatmap_figure(np.full((8, 8), i, np.float32), "stage", "jet")),
    "stage figures": (views._stats_figure, 2 * MiB,
                      lambda i: views._stats_figure((("att1", (float(i), 0.5, 0.1, 2.0, 0.3)),))),
    "colour bars": (views._colour_bar, 1 * MiB, lambda i: views._colour_bar("jet", "0", f"peak {i}")),
}


@pytest.fixture()
def empty_caches():
    compute.clear_caches()
    yield
    compute.clear_caches()


@pytest.mark.parametrize("name", CASES)
def test_each_image_and_figure_cache_is_bounded_by_its_bytes(name, monkeypatch, empty_caches):
    function, budget, call = CASES[name]
    cache = function.cache
    assert isinstance(cache, compute.BoundedCache) and compute.CACHES[cache.name] is cache
    assert cache.max_bytes == budget
    first = call(0)
    size = compute.size_of(first)
    assert size > 4096, "measured by what it holds (arrays, figure data), not as a bare object"
    assert call(0) is first and len(cache) == 1  # same content: a hit
    # Shrink the budget to two values and fill it with six: the oldest go, the bytes stay within.
    monkeypatch.setattr(cache, "max_bytes", int(2.5 * size))
    values = [call(i) for i in range(1, 7)]
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    assert compute.cached_bytes()[cache.name] == cache.bytes
    assert call(6) is values[-1] and call(5) is values[-2]  # the two most recent stayed
    assert call(0) is not first  # evicted, computed again


def test_the_decoded_upload_budget_keeps_an_image_at_the_size_limit():
    # A budget below the largest image allowed would decode such an upload again on every rerun.
    largest = MAX_PIXELS * 3 + 4096
    assert widgets._decoded.cache.max_bytes >= largest


def test_decoding_the_same_upload_bytes_hits_the_cache(monkeypatch, empty_caches):
    decoded: list[int] = []
    real = widgets.load_image

    def counting(data: bytes):
        decoded.append(len(data))
        return real(data)

    monkeypatch.setattr(widgets, "load_image", counting)
    first = widgets.decode_image(COFFEE)
    again = widgets.decode_image(bytes(bytearray(COFFEE)))  # equal bytes, another object
    assert again is first and decoded == [len(COFFEE)]
    assert not first.array.flags.writeable  # shared by every session: read-only
    assert first.sha256 == compute.digest(COFFEE)
    assert widgets.decode_image(_png(3)) is not first and len(decoded) == 2
    broken = b"plain text, not an image"
    for _ in range(2):  # errors are not cached: each try decodes again and raises again
        with pytest.raises(ImageError):
            widgets.decode_image(broken)
    assert len(decoded) == 4 and len(widgets._decoded.cache) == 2


def test_reruns_of_an_uploaded_image_decode_it_once(tiny_zoo, monkeypatch, empty_caches):
    decoded: list[int] = []
    real = widgets.load_image

    def counting(data: bytes):
        if data == COFFEE:
            decoded.append(len(data))
        return real(data)

    at = start_app()  # its gallery thumbnails (the coffee photo among them) are cached now
    monkeypatch.setattr(widgets, "load_image", counting)
    at = upload(at, "coffee.jpg", COFFEE, "image/jpeg")
    at.run()
    at.switch_page("pages/1_Compare.py").run()
    assert not at.exception, at.exception
    assert decoded == [len(COFFEE)]  # three runs on two pages: one decode
    assert compute.cached_bytes()[widgets._decoded.cache.name] > 0


@pytest.mark.parametrize("module", ["pages.ui.nav", "pages.ui.widgets", "pages.ui.views"])
def test_importing_any_page_module_first_caps_torch_threads(module):
    # A deep link can open any page first; each of these, imported alone, applies the thread cap
    # (and widgets, which keeps its caches in compute, imports without a cycle).
    env = dict(os.environ, LTPA_APP_THREADS="2", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", f"import {module}, torch; print(torch.get_num_threads())"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "2"
