"""Median time of a full rerun of the home page (AppTest, in-process) after a new upload and after
a slider change. Targets on a 2-core CPU with the shipped models: <= 0.5 s and <= 0.15 s.

    python3 bench/app_latency.py [--zoo DIR] [--model ID] [--repeats N]

Uses the shipped zoo (assets/models) when its manifest lists models, else builds a tiny zoo of
small untrained models in a temporary folder (and says so).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_tiny_zoo(folder: Path) -> Path:
    """Small untrained models (the test fixture's recipe) for when no trained zoo is shipped."""
    import torch

    import ltpa
    from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
    from ltpa.zoo import make_card, write_manifest

    torch.manual_seed(0)
    meta = {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": 32, "dataset": "untrained benchmark fixture"}
    cards = []
    for name, overrides in (("vgg_att3_concat_pc", {"width": 0.125}), ("vgg", {"width": 0.125})):
        model = ltpa.create_model(name, **overrides).eval()
        path = ltpa.save_checkpoint(folder / f"{name}.pt", model, meta)
        cards.append(make_card(name, path, meta, model))
    write_manifest(cards, folder)
    return folder


def variants(data: bytes, count: int) -> list[bytes]:
    """``count`` different files of the same photo (one pixel changed), so every upload is new to
    the caches, as a fresh upload by a user would be."""
    import numpy as np
    from PIL import Image

    base = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
    files = []
    for index in range(count):
        pixels = base.copy()
        pixels[0, 0] = (index % 256, (index // 256) % 256, 7)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    return files


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="zoo folder (default: the shipped zoo, else a tiny one)")
    parser.add_argument("--model", help="model id for the home page (default: the zoo's first)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--image", type=Path, default=REPO / "assets" / "examples" / "photo_coffee.jpg")
    args = parser.parse_args()

    shipped = REPO / "assets" / "models"
    temporary = None
    if args.zoo is not None:
        zoo, kind = args.zoo, f"zoo at {args.zoo}"
    elif (shipped / "manifest.json").is_file() and json.loads((shipped / "manifest.json").read_text())["models"]:
        zoo, kind = shipped, "the shipped (trained) zoo"
    else:
        temporary = tempfile.TemporaryDirectory()
        zoo, kind = build_tiny_zoo(Path(temporary.name)), "a TINY untrained zoo (no trained zoo shipped yet)"
    os.environ["LTPA_ZOO"] = str(zoo)

    import torch
    from streamlit.testing.v1 import AppTest

    from ltpa.zoo import list_zoo
    from pages.ui import state

    model_id = args.model or list_zoo()[0].id
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state[state.MODEL_ID] = model_id
    at.run()
    if at.exception:
        raise SystemExit(f"the home page failed: {at.exception}")

    files = variants(args.image.read_bytes(), args.repeats + 2)
    uploads = [timed(lambda f=f, i=i: at.file_uploader[0].set_value((f"u{i}.jpg", f, "image/jpeg")).run())
               for i, f in enumerate(files)][2:]  # the first two warm up the caches' code paths
    opacities = [round(0.05 * k, 2) for k in range(21) if round(0.05 * k, 2) != state.DEFAULT_OPACITY]
    slider = at.slider(key=f"widget.{state.OPACITY}")
    changes = [timed(lambda v=v: slider.set_value(v).run()) for v in opacities[: args.repeats + 2]][2:]
    if at.exception:
        raise SystemExit(f"the home page failed: {at.exception}")

    stages = len(next(e for e in list_zoo() if e.id == model_id).card.get("stages") or [])
    print(f"zoo: {kind}; model {model_id} ({stages} attention stages); image {args.image.name} "
          f"({len(files)} distinct uploads); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"rerun after a new upload:   median {statistics.median(uploads):.3f} s "
          f"(min {min(uploads):.3f}, max {max(uploads):.3f}, n={len(uploads)}; target <= 0.5 s)")
    print(f"rerun after a slider change: median {statistics.median(changes):.3f} s "
          f"(min {min(changes):.3f}, max {max(changes):.3f}, n={len(changes)}; target <= 0.15 s)")
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
