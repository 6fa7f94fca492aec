"""``ltpa segment-eval`` end to end on a tiny generated folder with the tiny zoo, plus its parts."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import ltpa
from ltpa import masks, segmentation
from ltpa.cli import main
from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD
from ltpa.zoo import load_zoo_model

ATTENTION_IDS = ("vgg_att3_concat_pc", "vgg_att3_concat_dp", "resnet_att2_concat_pc")


def write_pair(images: Path, masks_dir: Path, stem: str, rng: np.random.Generator,
               size: tuple[int, int] = (48, 64), mask_size: tuple[int, int] | None = None,
               mask_kind: str = "object") -> None:
    height, width = size
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(images / f"{stem}.jpg"), image)
    mh, mw = mask_size or size
    mask = np.zeros((mh, mw), dtype=np.uint8)
    if mask_kind == "object":
        mask[mh // 4: 3 * mh // 4, mw // 4: 3 * mw // 4] = 255
    elif mask_kind == "full":
        mask[:] = 255
    cv2.imwrite(str(masks_dir / f"{stem}.png"), mask)


def write_pairs(root: Path, count: int, seed: int,
                prefix: str = "good") -> tuple[Path, Path, np.random.Generator]:
    """``count`` good image/mask pairs (``<prefix>0`` ...) under ``root/images`` and ``root/masks``;
    the random generator is returned along with them for more pairs to follow."""
    images, masks_dir = root / "images", root / "masks"
    images.mkdir()
    masks_dir.mkdir()
    rng = np.random.default_rng(seed)
    for k in range(count):
        write_pair(images, masks_dir, f"{prefix}{k}", rng)
    return images, masks_dir, rng


@pytest.fixture()
def folder(tmp_path: Path) -> tuple[Path, Path]:
    """Four good pairs (one mask at half size), plus every kind of bad input."""
    images, masks_dir, rng = write_pairs(tmp_path, 3, seed=0)
    write_pair(images, masks_dir, "halfmask", rng, size=(96, 128), mask_size=(48, 64))
    write_pair(images, masks_dir, "empty", rng, mask_kind="empty")
    write_pair(images, masks_dir, "full", rng, mask_kind="full")
    write_pair(images, masks_dir, "squashed", rng, size=(48, 64), mask_size=(48, 48))
    (masks_dir / "stray_mask.png").write_bytes((masks_dir / "good0.png").read_bytes())
    (images / "stray_image.jpg").write_bytes((images / "good0.jpg").read_bytes())
    (images / "notes.txt").write_text("not an image")
    (images / "broken.png").write_bytes(b"not really a png")
    (masks_dir / "broken.png").write_bytes((masks_dir / "good1.png").read_bytes())
    return images, masks_dir


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_segment_eval_end_to_end(tiny_zoo: Path, folder: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    images, masks_dir = folder
    out = tmp_path / "out"
    code = main(["segment-eval", "--images", str(images), "--masks", str(masks_dir),
                 "--out", str(out), "--batch-size", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    info = json.loads((out / "summary.json").read_text())
    assert info["evaluated"] == 4
    assert info["skipped_by_reason"] == {
        "not_an_image": 1, "mask_without_image": 1, "image_without_mask": 1,
        "unreadable_image": 1, "empty_mask": 1, "full_mask": 1, "aspect_ratio": 1,
    }
    assert "skipped 7" in printed and "mask has no foreground" in printed

    summary = read_csv(out / "summary.csv")
    sources = {(r["method"], r["model"], r["stage"]) for r in summary}
    expected = {("attention", "vgg_att3_concat_pc", s) for s in ("layer7", "layer10", "layer13", "combined")}
    expected |= {("attention", "resnet_att2_concat_pc", s) for s in ("stage2", "stage3", "combined")}
    expected |= {("cam", "vgg_gap", "cam"), ("grad_cam", "vgg", "grad_cam"), ("centre_prior", "", "centre_prior")}
    assert expected <= sources
    assert len(sources) == 4 + 4 + 3 + 3
    assert {r["rule"] for r in summary} == set(masks.RULES)
    assert all(r["images"] == "4" for r in summary)
    assert all(r["blank_maps"] == "0" for r in summary if r["method"] == "centre_prior")
    assert {r["threshold"] for r in summary if r["rule"] == "fraction"} == {"0.5"}

    per_image = read_csv(out / "per_image.csv")
    assert len(per_image) == 4 * 14 * len(masks.RULES)
    assert {r["image"] for r in per_image} == {"good0", "good1", "good2", "halfmask"}
    # The summary is the mean of the per-image rows.
    rows = [float(r["jaccard"]) for r in per_image
            if r["model"] == "vgg_gap" and r["rule"] == "top"]
    cam_top = next(r for r in summary if r["model"] == "vgg_gap" and r["rule"] == "top")
    assert float(cam_top["mean_jaccard"]) == pytest.approx(np.mean(rows), abs=1e-5)
    # The centre prior's peak is the image centre, inside every centred square object.
    prior = [r for r in per_image if r["method"] == "centre_prior"]
    assert prior and all(r["pointing_hit"] == "1" for r in prior)

    sweep = read_csv(out / "sweep.csv")
    assert len([r for r in sweep if r["model"] == "vgg_gap" and r["rule"] == "fraction"]) == 20
    best = read_csv(out / "best_thresholds.csv")
    for row in best:
        curve = [float(r["mean_jaccard"]) for r in sweep if (r["method"], r["model"], r["stage"], r["rule"])
                 == (row["method"], row["model"], row["stage"], row["rule"])]
        assert float(row["best_mean_jaccard"]) == pytest.approx(max(curve), abs=1e-5)
    skipped = read_csv(out / "skipped.csv")
    assert {"images/stray_image.jpg", "masks/stray_mask.png", "images/notes.txt"} <= {r["name"] for r in skipped}
    results_md = (out / "results.md").read_text()
    assert "not tuned" in results_md and "tuned on this set" in results_md
    assert "| CAM (vgg_gap) |" in results_md


def test_segment_eval_models_stages_rules_and_clean_up(tiny_zoo: Path, folder: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    images, masks_dir = folder
    out = tmp_path / "out"
    code = main(["segment-eval", "--images", str(images), "--masks", str(masks_dir), "--out", str(out),
                 "--models", "vgg_att3_concat_pc", "--stages", "layer13,combined", "--rules", "mass,otsu",
                 "--mass", "70", "--compare", "centre_prior", "--largest-component", "--opening", "3"])
    assert code == 0
    summary = read_csv(out / "summary.csv")
    assert {(r["model"], r["stage"], r["rule"]) for r in summary} == {
        (m, s, rule) for m, s in (("vgg_att3_concat_pc", "layer13"), ("vgg_att3_concat_pc", "combined"),
                                  ("", "centre_prior")) for rule in ("mass", "otsu")}
    assert {r["threshold"] for r in summary if r["rule"] == "mass"} == {"70"}
    assert {r["threshold"] for r in summary if r["rule"] == "otsu"} == {"auto"}
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["largest_component"] and settings["opening"] == 3


@pytest.mark.parametrize("argv, message", [
    (["--fraction", "1.5"], r"\(0, 1\]"),
    (["--top", "0"], r"\(0, 100\]"),
    (["--rules", "median"], "valid choices"),
    (["--models", "nope"], "neither a checkpoint file, a run folder nor a shipped model id"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--models", "vgg"], "no attention stages"),
    (["--stages", "layer99"], "unknown stage"),
])
def test_segment_eval_bad_arguments(tiny_zoo: Path, folder: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture, argv: list[str], message: str) -> None:
    images, masks_dir = folder
    code = main(["segment-eval", "--images", str(images), "--masks", str(masks_dir),
                 "--out", str(tmp_path / "out"), *argv])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and error.startswith("ltpa segment-eval: error:")  # no traceback
    assert re.search(message, error)


def test_missing_folder_and_empty_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      folder: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    code = main(["segment-eval", "--images", str(tmp_path / "nope"), "--masks", str(tmp_path)])
    assert code == 2 and "no image folder" in capsys.readouterr().err
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path / "empty_zoo"))
    images, masks_dir = folder
    code = main(["segment-eval", "--images", str(images), "--masks", str(masks_dir),
                 "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "no attention model in the zoo" in printed and "CAM left out" in printed
    assert {r["method"] for r in read_csv(tmp_path / "out" / "summary.csv")} == {"centre_prior"}


def test_pairing_with_mask_suffix(tmp_path: Path) -> None:
    images, masks_dir = tmp_path / "i", tmp_path / "m"
    images.mkdir()
    masks_dir.mkdir()
    for name in ("a.jpg", "b.png"):
        (images / name).write_bytes(b"")
    for name in ("a_mask.png", "b_mask.png", "c.png"):
        (masks_dir / name).write_bytes(b"")
    pairs, skips = segmentation.pair_folders(images, masks_dir, mask_suffix="_mask")
    assert [(p.stem, p.mask.name) for p in pairs] == [("a", "a_mask.png"), ("b", "b_mask.png")]
    assert [(s.name, s.reason) for s in skips] == [("masks/c.png", "mask_without_image")]


def test_batched_maps_equal_one_at_a_time(tiny_zoo: Path) -> None:
    loaded = load_zoo_model("vgg_att3_concat_pc")
    x = torch.rand(5, 3, 32, 32)
    batched = segmentation.native_maps(loaded, "attention", x, batch_size=2)
    single = segmentation.native_maps(loaded, "attention", x[3:4])
    assert set(batched) == {"layer7", "layer10", "layer13"}
    for stage in batched:
        assert batched[stage].shape[0] == 5
        np.testing.assert_allclose(batched[stage][3], single[stage][0], rtol=1e-4, atol=1e-7)
    baseline = load_zoo_model("vgg")
    grad = segmentation.native_maps(baseline, "grad_cam", x, batch_size=2)
    grad_single = segmentation.native_maps(baseline, "grad_cam", x[3:4])
    np.testing.assert_allclose(grad["grad_cam"][3], grad_single["grad_cam"][0], rtol=1e-3, atol=1e-6)


def test_blank_maps_score_zero_and_are_counted() -> None:
    truth = np.zeros((10, 12), dtype=bool)
    truth[2:8, 3:9] = True
    sample = segmentation.Sample("one", truth, (10, 12), {})
    result = segmentation.SegmentationResult(segmentation.SegmentationSettings())
    result.settings.check()
    blank = segmentation.MapSource("grad_cam", "vgg", "grad_cam")
    perfect = segmentation.MapSource("centre_prior", "", "centre_prior")
    segmentation.score_sources(result, sample, {blank: np.zeros((10, 12), np.float32),
                                                perfect: truth.astype(np.float32)})
    rows = {(r["method"], r["rule"]): r for r in result.rows}
    assert all(rows[("grad_cam", rule)]["jaccard"] == 0.0 for rule in masks.RULES)
    assert all(rows[("centre_prior", rule)]["jaccard"] == 1.0 for rule in ("fraction", "otsu"))
    summary = {r["method"]: r for r in result.summary() if r["rule"] == "otsu"}
    assert summary["grad_cam"]["blank_maps"] == 1 and summary["centre_prior"]["blank_maps"] == 0
    assert "Grad-CAM (vgg): 1 of 1" in segmentation.summary_markdown(result)


def test_masks_folder_of_photos_is_refused(tiny_zoo: Path, folder: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    images, _ = folder
    code = main(["segment-eval", "--images", str(images), "--masks", str(images),
                 "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    error = error.splitlines()[-1]  # after the progress line: one line of error
    assert error.startswith("ltpa segment-eval: error:")
    assert f"{images} does not hold ground-truth masks" in error and "binary" in error


def test_one_photo_among_masks_is_skipped_and_jpeg_masks_pass(tmp_path: Path) -> None:
    images, masks_dir, rng = write_pairs(tmp_path, 3, seed=1)
    # A JPEG-compressed mask has grey ringing along its edges: still a mask.
    mask = cv2.imread(str(masks_dir / "good0.png"), cv2.IMREAD_GRAYSCALE)
    (masks_dir / "good0.png").unlink()
    cv2.imwrite(str(masks_dir / "good0.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 75])
    photo = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(images / "photo.jpg"), photo)
    cv2.imwrite(str(masks_dir / "photo.png"), photo)
    assert segmentation.grey_fraction(photo) > 0.2
    pairs, _ = segmentation.pair_folders(images, masks_dir)
    samples, skips = segmentation.load_samples(pairs)
    assert sorted(s.stem for s in samples) == ["good0", "good1", "good2"]
    assert [(s.name, s.reason) for s in skips] == [("photo.png", "not_a_mask")]
    segmentation.check_masks_folder(masks_dir, len(pairs), skips)  # one photo in four: a skip only


def test_checkpoint_files_and_run_folders_with_json_scores(tiny_zoo: Path, folder: tuple[Path, Path],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images, masks_dir = folder
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes((tiny_zoo / "vgg_att3_concat_pc.pt").read_bytes())
    checkpoint = tiny_zoo / "resnet_att2_concat_pc.pt"
    out = tmp_path / "out"
    code = main(["segment-eval", "--images", str(images), "--masks", str(masks_dir), "--out", str(out),
                 "--models", f"{run},{checkpoint}", "--cam-model", str(tiny_zoo / "vgg_gap.pt"),
                 "--compare", "cam,centre_prior", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "summary.json").read_text())["scores"]
    # Files and folders are labelled by their path and the model name their checkpoint records.
    expected = {f"{run} [vgg_att3_concat_pc] / {s}" for s in ("layer7", "layer10", "layer13", "combined")}
    expected |= {f"{checkpoint} [resnet_att2_concat_pc] / {s}" for s in ("stage2", "stage3", "combined")}
    expected |= {f"CAM ({tiny_zoo / 'vgg_gap.pt'} [vgg_gap])", "centre prior"}
    assert set(printed) == expected
    for label, scores in printed.items():
        assert set(scores["jaccard"]) == set(masks.RULES) and scores["images"] == 4
        assert 0.0 <= scores["pointing_game"] <= 1.0
    assert printed["centre prior"]["pointing_game"] == 1.0
    # The same model as a zoo id scores the same (one image path, one model).
    zoo_out = tmp_path / "zoo_out"
    assert main(["segment-eval", "--images", str(images), "--masks", str(masks_dir), "--out", str(zoo_out),
                 "--models", "vgg_att3_concat_pc", "--compare", "none", "--json"]) == 0
    by_id = json.loads(capsys.readouterr().out)
    assert (by_id["vgg_att3_concat_pc / layer13"]["jaccard"]
            == printed[f"{run} [vgg_att3_concat_pc] / layer13"]["jaccard"])


# ------------------------------------------------------------------ --checkpoint: trained models
VGG_STAGES = ("layer7", "layer10", "layer13", "combined")


def save_tiny(path: Path, name: str, seed: int) -> Path:
    """A small untrained model saved as ``ltpa train`` saves its model.pt (same metadata keys)."""
    torch.manual_seed(seed)
    model = ltpa.create_model(name, width=0.125).eval()
    meta = {"class_names": list(CIFAR10_CLASSES), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": 32, "dataset": "untrained test fixture"}
    return ltpa.save_checkpoint(path, model, meta)


def make_run(folder: Path, name: str, seed: int) -> Path:
    """A run folder as ``ltpa train`` leaves it: model.pt and log.json."""
    save_tiny(folder / "model.pt", name, seed)
    (folder / "log.json").write_text(json.dumps({"config": {"model": name}, "epochs": []}))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trained")
    return {
        "run": make_run(root / "att_run", "vgg_att3_concat_pc", 1),
        "file": save_tiny(root / "att_dp.pt", "vgg_att3_concat_dp", 2),
        "gap": make_run(root / "gap_run", "vgg_gap", 3),
        "baseline": save_tiny(root / "vgg.pt", "vgg", 4),
    }


def segment_eval(images: Path, masks_dir: Path, out: Path, *argv: str) -> int:
    return main(["segment-eval", "--images", str(images), "--masks", str(masks_dir), "--out", str(out), *argv])


def test_checkpoints_are_scored_per_stage_with_the_gap_run_as_cam(
        tiny_zoo: Path, folder: tuple[Path, Path], trained: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    images, masks_dir = folder
    run, file, gap = trained["run"], trained["file"], trained["gap"]
    out = tmp_path / "out"
    code = segment_eval(images, masks_dir, out, "--checkpoint", str(run), "--checkpoint", str(file),
                        "--checkpoint", str(gap), "--json")
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    # Only the checkpoints (no zoo attention model); the GAP run's CAM replaces the zoo's vgg_gap.
    expected = {f"{run} [vgg_att3_concat_pc] / {s}" for s in VGG_STAGES}
    expected |= {f"{file} [vgg_att3_concat_dp] / {s}" for s in VGG_STAGES}
    expected |= {f"CAM ({gap} [vgg_gap])", "Grad-CAM (vgg)", "centre prior"}
    assert set(printed) == expected
    for scores in printed.values():
        assert set(scores["jaccard"]) == set(masks.RULES) and scores["images"] == 4
        assert all(0.0 <= v <= 1.0 for v in scores["jaccard"].values())
        assert 0.0 <= scores["pointing_game"] <= 1.0
    assert printed[f"{run} [vgg_att3_concat_pc] / layer13"]["model"] == str(run)
    assert printed[f"CAM ({gap} [vgg_gap])"]["method"] == "cam"
    assert printed["centre prior"]["pointing_game"] == 1.0
    # The tables and CSVs carry the same rows: the default thresholds, the path as the model.
    summary = read_csv(out / "summary.csv")
    assert {r["model"] for r in summary} == {str(run), str(file), str(gap), "vgg", ""}
    assert {r["threshold"] for r in summary if r["rule"] == "top"} == {f"{masks.DEFAULT_THRESHOLDS['top']:g}"}
    assert len(read_csv(out / "per_image.csv")) == 4 * len(expected) * len(masks.RULES)
    assert f"| {run} [vgg_att3_concat_pc] / layer10 |" in (out / "results.md").read_text()


def test_checkpoints_combine_with_zoo_models(tiny_zoo: Path, folder: tuple[Path, Path],
                                             trained: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    images, masks_dir = folder
    run, gap = trained["run"], trained["gap"]
    code = segment_eval(images, masks_dir, tmp_path / "out", "--models", "vgg_att3_concat_pc",
                        "--checkpoint", str(run), "--checkpoint", str(run), "--checkpoint", str(gap),
                        "--cam-model", "vgg_gap", "--compare", "cam,centre_prior", "--stages", "layer13",
                        "--json")
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    # An explicit --cam-model is scored beside the GAP run; a repeated path counts once.
    assert list(printed) == ["vgg_att3_concat_pc / layer13", f"{run} [vgg_att3_concat_pc] / layer13",
                             "CAM (vgg_gap)", f"CAM ({gap} [vgg_gap])", "centre prior"]


def test_checkpoints_without_a_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   folder: tuple[Path, Path], trained: dict[str, Path],
                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("LTPA_ZOO", str(tmp_path / "empty_zoo"))
    images, masks_dir = folder
    out = tmp_path / "out"
    assert segment_eval(images, masks_dir, out, "--checkpoint", str(trained["run"])) == 0
    printed = capsys.readouterr().out
    assert "CAM left out" in printed and "Grad-CAM left out" in printed
    assert "no attention model in the zoo" not in printed
    scores = json.loads((out / "summary.json").read_text())["scores"]
    assert set(scores) == {f"{trained['run']} [vgg_att3_concat_pc] / {s}" for s in VGG_STAGES} | {"centre prior"}


def bad_checkpoint(kind: str, root: Path, trained: dict[str, Path]) -> Path:
    """A --checkpoint argument that must be refused."""
    if kind == "missing":
        return root / "missing_run"
    if kind == "log_only":
        (root / "log.json").write_text("{}")  # a run folder without its model.pt
    if kind == "not_a_checkpoint":
        (root / "notes.pt").write_text("not a checkpoint")
        return root / "notes.pt"
    if kind == "baseline":
        return trained["baseline"]
    return root


@pytest.mark.parametrize("kind, message", [
    ("missing", r"--checkpoint \S*missing_run: no such file or folder"),
    ("empty_folder", r"is a folder without model\.pt"),
    ("log_only", r"is a folder without model\.pt"),
    ("not_a_checkpoint", r"notes\.pt is not a readable PyTorch checkpoint"),
    ("baseline", r"\(vgg\) has neither attention stages nor global average pooling"),
])
def test_bad_checkpoints_are_refused_in_one_line(tiny_zoo: Path, folder: tuple[Path, Path],
                                                 trained: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture, kind: str, message: str) -> None:
    images, masks_dir = folder
    root = tmp_path / "bad"
    root.mkdir()
    code = segment_eval(images, masks_dir, tmp_path / "out", "--checkpoint", str(trained["run"]),
                        "--checkpoint", str(bad_checkpoint(kind, root, trained)))
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and error.startswith("ltpa segment-eval: error:")  # no traceback
    assert re.search(message, error)
    assert not (tmp_path / "out").exists()  # refused before any evaluation
