"""Speed of mask evaluation: images/s of ``ltpa segment-eval`` and the Masks page's rerun time
after a threshold change (target: at most 0.1 s, the maps being cached).

    python3 bench/segment_speed.py                      # Weizmann Horse (unpacked into /tmp), 64 images
    python3 bench/segment_speed.py --limit 0            # all 328 images
    python3 bench/segment_speed.py --images DIR --masks DIR

Uses the shipped zoo when its manifest lists models (else an untrained zoo of full-size models
built in a temporary folder: the same forward cost). Prints its figures; times nothing in tests.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WEIZMANN = Path("/work/shared/data/weizmann-horse.tar.xz")
UNPACKED = Path(tempfile.gettempdir()) / "weizmann_horse_db"
FULL_SIZE_MODELS = {  # the ids of the shipped zoo, at full width
    "vgg_att3_concat_pc": "vgg_att3_concat_pc", "vgg_att3_concat_dp": "vgg_att3_concat_dp",
    "resnet_att2_concat_pc": "resnet_att2_concat_pc", "resnet_att2_concat_dp": "resnet_att2_concat_dp",
    "vgg": "vgg", "vgg_gap": "vgg_gap",
}


def weizmann() -> tuple[Path, Path]:
    if not (UNPACKED / "rgb").is_dir():
        with tarfile.open(WEIZMANN) as archive:
            archive.extractall(UNPACKED.parent, filter="data")
    return UNPACKED / "rgb", UNPACKED / "figure_ground"


def subset(images: Path, masks: Path, limit: int, folder: Path) -> tuple[Path, Path]:
    """The first ``limit`` image/mask pairs copied into ``folder`` (all of them for 0)."""
    if limit <= 0:
        return images, masks
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    mask_by_stem = {p.stem: p for p in masks.iterdir()}
    pairs = [(p, mask_by_stem[p.stem]) for p in sorted(images.iterdir()) if p.stem in mask_by_stem][:limit]
    for image, mask in pairs:
        shutil.copy(image, folder / "images" / image.name)
        shutil.copy(mask, folder / "masks" / mask.name)
    return folder / "images", folder / "masks"


def zoo_for_bench(folder: Path) -> tuple[Path, str]:
    from ltpa.zoo import DEFAULT_ZOO_DIR, ZooError, read_manifest

    try:
        read_manifest(DEFAULT_ZOO_DIR)
        return DEFAULT_ZOO_DIR, "shipped zoo"
    except ZooError:  # no shipped zoo: a stand-in of untrained models
        pass
    import torch

    import ltpa
    from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
    from ltpa.zoo import make_card, write_manifest

    torch.manual_seed(0)
    cards = []
    meta = {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": 32, "dataset": "untrained (benchmark)"}
    for model_id, name in FULL_SIZE_MODELS.items():
        model = ltpa.create_model(name).eval()
        path = ltpa.save_checkpoint(folder / f"{model_id}.pt", model, meta)
        cards.append(make_card(model_id, path, meta, model))
    write_manifest(cards, folder)
    return folder, "untrained full-size models (the real zoo has not landed)"


def bench_segment_eval(images: Path, masks: Path, zoo: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "ltpa", "segment-eval", "--images", str(images), "--masks", str(masks),
               "--out", str(out), "--device", "cpu"]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=dict(os.environ, LTPA_ZOO=str(zoo)), capture_output=True)
    wall = time.perf_counter() - started
    info = json.loads((out / "summary.json").read_text())
    with (out / "summary.csv").open() as handle:
        maps = {(r["method"], r["model"], r["stage"]) for r in csv.DictReader(handle)}
    return {"images": info["evaluated"], "evaluation_s": info["seconds"], "images_per_s": info["images_per_s"],
            "command_wall_s": round(wall, 2), "maps_per_image": len(maps)}


def keep_script_cache() -> None:
    """AppTest compiles the page afresh on every run; ``streamlit run`` keeps the compiled page in
    one ScriptCache. Sharing one cache across runs times what a user of the server waits for."""
    import streamlit.testing.v1.app_test as app_test
    import streamlit.testing.v1.local_script_runner as local_script_runner
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    shared = ScriptCache()
    app_test.ScriptCache = lambda: shared
    local_script_runner.ScriptCache = lambda: shared


def bench_page(image: Path, mask: Path, zoo: Path, changes: int, server_like: bool) -> dict:
    from streamlit.testing.v1 import AppTest

    os.environ["LTPA_ZOO"] = str(zoo)
    if server_like:
        keep_script_cache()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/3_Masks.py").run()
    at.file_uploader(key="image.upload").set_value((image.name, image.read_bytes(), "image/jpeg")).run()
    at.file_uploader(key="masks.truth").set_value((mask.name, mask.read_bytes(), "image/jpeg")).run()
    if at.exception:
        raise RuntimeError(str(at.exception))
    results = {}
    for rule, values in (("fraction", [round(0.05 + 0.9 * k / changes, 2) for k in range(changes)]),
                         ("top", [5 + (90 * k) // changes for k in range(changes)])):
        at.radio(key="masks.rule").set_value(rule).run()
        slider = f"masks.threshold.{rule}"
        at.slider(key=slider).set_value(values[-1]).run()  # warm: first run of this rule fills the caches
        times = []
        for value in values:
            started = time.perf_counter()
            at.slider(key=slider).set_value(value).run()
            times.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(str(at.exception))
        results[rule] = {"median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path)
    parser.add_argument("--masks", type=Path)
    parser.add_argument("--limit", type=int, default=64, help="pairs to evaluate (0 = all)")
    parser.add_argument("--changes", type=int, default=15, help="threshold changes timed per rule")
    args = parser.parse_args()
    images, masks = (args.images, args.masks) if args.images else weizmann()
    with tempfile.TemporaryDirectory() as temp:
        temp = Path(temp)
        (temp / "zoo").mkdir()
        zoo, zoo_kind = zoo_for_bench(temp / "zoo")
        sub_images, sub_masks = subset(images, masks, args.limit, temp / "data")
        import torch

        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads; zoo: {zoo_kind}")
        evaluation = bench_segment_eval(sub_images, sub_masks, zoo, temp / "out")
        print(f"segment-eval: {evaluation['images']} images in {evaluation['evaluation_s']:.1f} s "
              f"= {evaluation['images_per_s']:.2f} images/s ({evaluation['maps_per_image']} maps x 4 rules "
              f"per image, with sweeps; decoding included, model loading excluded); whole command {evaluation['command_wall_s']} s")
        first_image = sorted(sub_images.iterdir())[0]
        first_mask = next(p for p in sub_masks.iterdir() if p.stem == first_image.stem)
        # Plain AppTest first (it recompiles the page each run), then with the server's script cache.
        for server_like in (False, True):
            page = bench_page(first_image, first_mask, zoo, args.changes, server_like)
            how = "script cache kept, as `streamlit run` does" if server_like else "plain AppTest, page recompiled each run"
            for rule, figures in page.items():
                verdict = "meets" if figures["median_s"] <= 0.1 else "misses"
                print(f"Masks page rerun after a threshold change ({rule} rule, {first_image.name}, comparisons "
                      f"on; {how}): median {figures['median_s']:.3f} s, max {figures['max_s']:.3f} s "
                      f"({verdict} the 0.1 s target)")


if __name__ == "__main__":
    main()
