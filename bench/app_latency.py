"""Median time the app takes to answer each page's main interactions (AppTest, in-process), idle
and while a busy-loop process keeps one core busy.

    python3 bench/app_latency.py [--zoo DIR] [--repeats N] [--pages home,compare,models,masks,adversarial]
                                 [--no-busy] [--image PHOTO]

An interaction is one widget change and the page's rerun: upload (a new file), model switch,
stage, epsilon, attack kind, target class, threshold, rule, ... Before each timed interaction the
background work of the previous one (the Adversarial page's curves) is let finish, and the time
that work then takes is printed too ("curves ready"). Targets (issue 19, 2-core CPU): Adversarial
interactions within 1 s for FGSM and 2 s for I-FGSM / targeted attacks (medians), twice that with
one busy core.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAGES = {"home": None, "compare": "pages/1_Compare.py", "models": "pages/2_Models.py",
         "masks": "pages/3_Masks.py", "adversarial": "pages/4_Adversarial.py"}


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
    for name, overrides in (("vgg_att3_concat_pc", {"width": 0.125}), ("vgg_att3_concat_dp", {"width": 0.125}),
                            ("vgg", {"width": 0.125}), ("vgg_gap", {"width": 0.125}),
                            ("resnet_att2_concat_pc", {"width": 0.25, "depth": 11})):
        model = ltpa.create_model(name, **overrides).eval()
        path = ltpa.save_checkpoint(folder / f"{name}.pt", model, meta)
        cards.append(make_card(name, path, meta, model))
    write_manifest(cards, folder)
    return folder


def variants(data: bytes, count: int, max_side: int | None = None) -> list[bytes]:
    """``count`` different files of the same photo (a 16x16 corner patch recoloured: a one-pixel
    change can vanish in JPEG's quantisation and give the same file), so every upload is new to
    the caches, as a fresh upload by a user would be; optionally shrunk to ``max_side``."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    if max_side is not None:
        image.thumbnail((max_side, max_side))
    base = np.asarray(image).copy()
    files = []
    for index in range(count):
        pixels = base.copy()
        pixels[:16, :16] = ((37 * index) % 256, (91 * index + 50) % 256, (13 * index + 100) % 256)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    if len(set(files)) != len(files):
        raise RuntimeError("two photo variants came out as the same file")
    return files


def find(at: Any, kind: str, key_prefix: str) -> Any | None:
    """The first widget of ``kind`` whose key starts with ``key_prefix`` (None when absent)."""
    return next((w for w in getattr(at, kind) if (w.key or "").startswith(key_prefix)), None)


def cycle(key: str) -> Callable[[Any, int], bool]:
    """An interaction that moves a selectbox to its next option (False when it is absent)."""
    def act(at: Any, index: int) -> bool:
        widget = find(at, "selectbox", key)
        if widget is None or not widget.options:
            return False
        widget.select_index(((widget.index or 0) + 1) % len(widget.options))
        return True
    return act


def choose(kind: str, key: str, values: list[Any]) -> Callable[[Any, int], bool]:
    """An interaction that sets a radio (or slider) to the next of ``values``."""
    def act(at: Any, index: int) -> bool:
        widget = find(at, kind, key)
        if widget is None:
            return False
        widget.set_value(values[index % len(values)])
        return True
    return act


def slide(key: str, values: list[Any]) -> Callable[[Any, int], bool]:
    return choose("slider", key, values)


_UPLOADS = iter(range(10 ** 9))  # shared by every upload interaction: each file is new to the caches


def upload(files: list[bytes]) -> Callable[[Any, int], bool]:
    counter = _UPLOADS

    def act(at: Any, index: int) -> bool:
        n = next(counter)
        at.file_uploader[0].set_value((f"photo{n}.jpg", files[n % len(files)], "image/jpeg"))
        return True
    return act


def interactions(files: list[bytes]) -> dict[str, list[tuple[str, Callable[[Any, int], bool], Callable[[Any], None] | None]]]:
    """Per page: (name, action, set-up run once before the timed repeats)."""
    def target_mode(at: Any) -> None:
        find(at, "radio", "widget.adv.method").set_value("ifgsm")
        at.run()
        find(at, "radio", "widget.adv.label_mode").set_value("target")

    def fgsm_mode(at: Any) -> None:
        find(at, "radio", "widget.adv.method").set_value("fgsm")
        find(at, "radio", "widget.adv.label_mode").set_value("predicted")

    def ifgsm_mode(at: Any) -> None:
        find(at, "radio", "widget.adv.method").set_value("ifgsm")
        find(at, "radio", "widget.adv.label_mode").set_value("predicted")

    from pages.ui.mask_compute import RULE_LABELS

    return {
        "home": [("upload", upload(files), None), ("model switch", cycle("model.backbone"), None),
                 ("opacity", slide("widget.ltpa.display.opacity", [0.3, 0.7]), None)],
        "compare": [("upload", upload(files), None), ("opacity", slide("widget.ltpa.display.opacity", [0.3, 0.7]), None)],
        "models": [("model switch", cycle("model.backbone"), None)],
        "masks": [("upload", upload(files), None), ("stage", cycle("widget.ltpa.masks.stage"), None),
                  ("rule", choose("radio", "widget.ltpa.masks.rule", ["top", "otsu", "mass", "fraction"]), None),
                  ("threshold", slide("widget.ltpa.masks.threshold", [0.3, 0.6]), None)],
        "adversarial": [
            ("FGSM: upload", upload(files), fgsm_mode),
            ("FGSM: model switch", cycle("model.backbone"), fgsm_mode),
            ("FGSM: epsilon", slide("widget.adv.eps", [2, 6, 8, 12]), fgsm_mode),
            ("attack kind (FGSM <-> I-FGSM)", choose("radio", "widget.adv.method", ["ifgsm", "fgsm"]), fgsm_mode),
            ("I-FGSM: epsilon", slide("widget.adv.eps", [3, 5, 7, 9]), ifgsm_mode),
            ("I-FGSM: upload", upload(files), ifgsm_mode),
            ("targeted I-FGSM: target class", cycle("widget.adv.class"), target_mode),
        ],
    }


def measure(at: Any, page: str | None, actions: list, repeats: int, wait_idle: Callable[[], None]) -> list[tuple[str, list[float], list[float]]]:
    """Time each action ``repeats`` times; returns (name, rerun times, background times)."""
    rows = []
    if page is not None:
        at.switch_page(page)
    at.run()
    for name, act, setup in actions:
        if setup is not None:
            setup(at)
            at.run()
        wait_idle()
        reruns, background = [], []
        for index in range(repeats):
            if not act(at, index):
                break
            started = time.perf_counter()
            at.run()
            reruns.append(time.perf_counter() - started)
            if at.exception:
                raise SystemExit(f"{page or 'home'}: {name} failed: {at.exception}")
            problems = [e.value for e in at.error] + [w.value for w in at.warning]
            if problems or not at.subheader:
                raise SystemExit(f"{page or 'home'}: {name} did not show a result: {problems[:2]}")
            if os.environ.get("LTPA_BENCH_DEBUG"):
                from pages.ui import state
                print(f"  [{name}] image {at.session_state[state.IMAGE_NAME]}, "
                      f"model {at.session_state[state.MODEL_ID]}, {[m.value for m in at.metric]}, {at.subheader[0].value}",
                      file=sys.stderr)
            started = time.perf_counter()
            wait_idle()
            background.append(time.perf_counter() - started)
        rows.append((name, reruns, background))
    return rows


def busy_core() -> subprocess.Popen:
    """A process that keeps one core busy until stopped."""
    return subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])


def run_all(args: argparse.Namespace, files: list[bytes], model_id: str, label: str) -> None:
    from streamlit.testing.v1 import AppTest

    from pages.ui import compute, state

    import streamlit as st

    compute.clear_caches()  # the second run must not reuse the first run's results
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    at.session_state[state.MODEL_ID] = model_id
    at.run()
    at.file_uploader[0].set_value(("start.jpg", files[-1], "image/jpeg"))
    at.run()
    if at.exception:
        raise SystemExit(f"the home page failed: {at.exception}")
    table = interactions(files)
    print(f"\n## {label}")
    print("| page | interaction | median rerun (s) | min | max | n | curves ready after (median s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for page in args.pages:
        for name, reruns, background in measure(at, PAGES[page], table[page], args.repeats,
                                                 lambda: compute.BACKGROUND.wait_idle(900)):
            if not reruns:
                print(f"| {page} | {name} | (control not on the page) | | | 0 | |")
                continue
            ready = statistics.median(background) if page == "adversarial" else None
            print(f"| {page} | {name} | {statistics.median(reruns):.2f} | {min(reruns):.2f} | {max(reruns):.2f} | "
                  f"{len(reruns)} | {'' if ready is None else f'{ready:.1f}'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, help="zoo folder (default: the shipped zoo, else a tiny one)")
    parser.add_argument("--model", help="model id to start with (default: the zoo's first)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated: " + ", ".join(PAGES))
    parser.add_argument("--no-busy", action="store_true", help="skip the run with one busy core")
    parser.add_argument("--image", type=Path, default=REPO / "assets" / "examples" / "photo_coffee.jpg")
    parser.add_argument("--max-side", type=int, default=None, help="shrink the photo first (quick runs)")
    args = parser.parse_args()
    args.pages = [p for p in args.pages.split(",") if p]
    unknown = [p for p in args.pages if p not in PAGES]
    if unknown:
        parser.error(f"unknown page(s) {', '.join(unknown)}; valid choices: {', '.join(PAGES)}")

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

    from ltpa.zoo import list_zoo
    from pages.ui.compute import configure_torch_threads

    model_id = args.model or list_zoo()[0].id
    files = variants(args.image.read_bytes(), 12 * args.repeats + 4, args.max_side)
    threads = configure_torch_threads()
    print(f"zoo: {kind}; first model {model_id}; image {args.image.name}; torch {torch.__version__}, "
          f"{threads} app thread(s), {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"median of {args.repeats} per interaction")
    run_all(args, files, model_id, "idle")
    if not args.no_busy:
        process = busy_core()
        try:
            run_all(args, files, model_id, "one core kept busy by another process")
        finally:
            process.kill()
            process.wait()
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
