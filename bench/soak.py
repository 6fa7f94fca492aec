"""Memory soak: many sequential app sessions, each uploading a large photo, visiting every page
and downloading every export; prints the server's resident memory after the first session, its
peak and its final value. Issue 19 asks for the final within 300 MB of the first session's.

    python3 bench/soak.py [--sessions 30] [--megapixels 12] [--zoo DIR] [--image PHOTO]

The server is this process: each session is an AppTest (Streamlit's in-process test runner, the
same script runs and caches as under ``streamlit run``). A download is what a click in a browser
triggers: the page's deferred download callables are called and their bytes counted. Each session
uploads a different photo (noise added), so no session is served from another's cache entries.
Exit status 1 when the final memory is more than 300 MB above the first session's.
"""
from __future__ import annotations

import argparse
import gc
import io
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
LIMIT_MB = 300


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class PeakSampler(threading.Thread):
    """Samples the resident memory every ``interval`` seconds and keeps the peak."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, rss_mb(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)


def large_photo(data: bytes, megapixels: float, seed: int) -> bytes:
    """The photo enlarged to about ``megapixels`` with a little noise (a new file each seed), as JPEG."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    pixels = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-3, 4, size=pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def every_page() -> list[str]:
    return sorted(f"pages/{p.name}" for p in (REPO / "pages").glob("[0-9]*_*.py"))


class Downloads:
    """Records the page's deferred downloads (``st.download_button`` with a callable) per run."""

    def __init__(self) -> None:
        from streamlit.runtime.media_file_manager import MediaFileManager

        self.pending: dict[str, Any] = {}
        self.files = self.bytes = 0
        original = MediaFileManager.add_deferred
        downloads = self

        def add_deferred(manager, data_callable, mimetype, coordinates, file_name=None, **kwargs):
            downloads.pending[f"{coordinates}:{file_name}"] = data_callable
            return original(manager, data_callable, mimetype, coordinates, file_name, **kwargs)

        MediaFileManager.add_deferred = add_deferred

    def click_all(self) -> None:
        """Generate every download the last run offered, as the browser would on a click."""
        for generate in self.pending.values():
            data = generate()
            self.files += 1
            self.bytes += len(data.encode() if isinstance(data, str) else data)
            del data
        self.pending.clear()


def one_session(photo: bytes, model_id: str, downloads: Downloads) -> None:
    from streamlit.testing.v1 import AppTest

    from pages.ui import compute, state

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=900)
    at.session_state[state.MODEL_ID] = model_id
    at.run()
    at.file_uploader[0].set_value(("phone_photo.jpg", photo, "image/jpeg"))
    at.run()
    downloads.click_all()
    for page in every_page():
        at.switch_page(page).run()
        compute.BACKGROUND.wait_idle(900)
        at.run()
        if at.exception:
            raise SystemExit(f"{page} failed: {at.exception}")
        downloads.click_all()
    del at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--zoo", type=Path, help="zoo folder (default: the shipped zoo)")
    parser.add_argument("--model", help="model id the sessions start with (default: the zoo's first)")
    parser.add_argument("--image", type=Path, default=REPO / "assets" / "examples" / "photo_coffee.jpg")
    args = parser.parse_args()
    if args.zoo is not None:
        os.environ["LTPA_ZOO"] = str(args.zoo)

    from ltpa.zoo import list_zoo
    from pages.ui import compute

    model_id = args.model or list_zoo()[0].id
    downloads = Downloads()
    source = args.image.read_bytes()
    sampler = PeakSampler()
    sampler.start()
    started_mb = rss_mb()
    after: list[float] = []
    began = time.perf_counter()
    for session in range(args.sessions):
        photo = large_photo(source, args.megapixels, seed=session)
        one_session(photo, model_id, downloads)
        del photo
        gc.collect()
        compute.release_memory()
        after.append(rss_mb())
        print(f"session {session + 1:2d}: resident {after[-1]:7.0f} MB (peak so far {sampler.peak:.0f} MB), "
              f"cached {sum(compute.cached_bytes().values()) / 1e6:.0f} MB, {time.perf_counter() - began:.0f} s",
              flush=True)
    sampler.running = False
    peak = max(sampler.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3)
    growth = after[-1] - after[0]
    print(f"\n{args.sessions} sessions, {args.megapixels:g}-megapixel photo each, pages: home + "
          f"{', '.join(p.split('/')[-1] for p in every_page())}; {downloads.files} downloads "
          f"({downloads.bytes / 1e6:.0f} MB) generated")
    print(f"resident memory: before {started_mb:.0f} MB, after the first session {after[0]:.0f} MB, "
          f"peak {peak:.0f} MB, final {after[-1]:.0f} MB (final - first: {growth:+.0f} MB; limit {LIMIT_MB} MB)")
    print("PASS" if growth <= LIMIT_MB else "FAIL")
    return 0 if growth <= LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
