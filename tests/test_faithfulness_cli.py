"""``ltpa faithfulness`` on the tiny zoo: the files it writes agree with the library, a fixed
subset is reproducible, the figure can be rebuilt from the JSON, and bad input exits 2 with one
line naming the valid choices."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from ltpa.cli import main
from ltpa.faithfulness_results import RESULTS_FORMAT, load_images, load_results, results_markdown, score_dataset
from ltpa.preprocess import CIFAR10_CLASSES
from ltpa.zoo import load_zoo_model
from app_helpers import GALLERY  # the shipped example photos

FAST = ["--steps", "4", "--batch-size", "3", "--randomisation-images", "2", "--cascade-steps", "2", "--device", "cpu"]


@pytest.fixture()
def photos(tmp_path):
    """A flat folder of five example photos (no class folders)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(GALLERY.glob("*.jpg"))[:5]:
        shutil.copy(path, folder / path.name)
    return folder


def test_command_writes_results_that_match_the_library(tiny_zoo, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["faithfulness", "--models", "vgg_att3_concat_dp,vgg_gap", "--data", str(photos),
                 "--subset", "4", "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    results = load_results(out)
    assert results["format"] == RESULTS_FORMAT and results["dataset"]["n_images"] == 4
    attention, gap = results["models"]
    assert list(attention["methods"]) == ["layer7", "layer10", "layer13", "attention", "grad_cam",
                                          "grad_cam_pp", "random", "centre"]
    assert list(gap["methods"]) == ["cam", "grad_cam", "grad_cam_pp", "random", "centre"]
    # The same four images scored directly give the same numbers.
    images, _ = load_images(str(photos), list(CIFAR10_CLASSES), 32)
    from ltpa.faithfulness_results import fixed_subset

    indices = fixed_subset(images.shape[0], 4, 0)
    direct = score_dataset(load_zoo_model("vgg_gap").model, images[indices], steps=4, batch_size=3,
                           randomisation_images=2, cascade_steps=2, image_indices=indices)
    for method, entry in direct["methods"].items():
        for key in ("deletion_auc", "insertion_auc", "average_drop", "increase"):
            assert gap["methods"][method][key] == pytest.approx(entry[key], abs=1e-5), (method, key)
        np.testing.assert_allclose(gap["methods"][method]["rho"], entry["rho"], atol=1e-6)
    with open(out / "faithfulness.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 + 5 and rows[0]["model"] == "vgg_att3_concat_dp"
    assert float(rows[0]["deletion_auc"]) == pytest.approx(attention["methods"]["layer7"]["deletion_auc"], rel=1e-5)
    with open(out / "faithfulness_curves.csv") as handle:
        assert sum(1 for _ in handle) == 1 + 13 * 2 * 5  # 13 methods x 2 curves x 5 fractions
    assert (out / "faithfulness.md").read_text() == results_markdown(results)
    assert "| random (floor) |" in results_markdown(results)
    assert (out / "faithfulness.html").is_file()  # Plotly is installed here
    printed = capsys.readouterr().out
    assert "wrote" in printed and "**VGG-GAP** (`vgg_gap`)" in printed


def test_figure_is_rebuilt_from_the_json(tiny_zoo, photos, tmp_path):
    out = tmp_path / "gpu"
    assert main(["faithfulness", "--models", "vgg", "--data", str(photos), "--metrics", "deletion",
                 "--no-figure", "--out", str(out), *FAST]) == 0
    assert not (out / "faithfulness.html").exists()
    results = json.loads((out / "faithfulness.json").read_text())
    assert set(results["models"][0]["methods"]["grad_cam"]) == {"deletion_curve", "deletion_auc", "deletion_auc_sem"}
    (out / "faithfulness.md").unlink()
    assert main(["faithfulness", "--figure-from", str(out / "faithfulness.json")]) == 0
    assert (out / "faithfulness.html").is_file() and (out / "faithfulness.md").is_file()


def test_class_folders_and_a_fixed_subset(tiny_zoo, tmp_path):
    root = tmp_path / "cifar" / "test"
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(i + len(name)).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            import cv2

            cv2.imwrite(str(root / name / f"{i}.png"), pixels)
    images, source = load_images(str(tmp_path / "cifar"), list(CIFAR10_CLASSES), 32)
    assert images.shape == (6, 3, 32, 32) and source.endswith("test")
    args = ["faithfulness", "--models", "vgg", "--data", str(tmp_path / "cifar"), "--subset", "3",
            "--metrics", "deletion,confidence", *FAST]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    first, second = (load_results(tmp_path / k)["models"][0]["methods"] for k in "ab")
    assert first == second and first["random"]["deletion_auc"] > 0


@pytest.mark.parametrize("args, message", [
    (["--methods", "lime"], "unknown method 'lime'; valid choices: stages, attention, cam, grad_cam"),
    (["--metrics", "auc"], "unknown metric 'auc'; valid choices: deletion, insertion, confidence, randomisation"),
    (["--models", "vgg", "--methods", "stages"], "no attention stages, so 'stages' does not apply; valid methods for it: grad_cam"),
    (["--models", "vgg", "--methods", "cam"], "CAM needs a global-average-pooling model"),
    (["--models", "nonexistent"], "shipped: vgg_att3_concat_pc"),
    (["--subset", "0"], "--subset must be a positive number of images"),
])
def test_bad_input_exits_2_with_one_line(tiny_zoo, photos, tmp_path, capsys, args, message):
    base = ["faithfulness", "--models", "vgg_att3_concat_pc", "--data", str(photos), "--out", str(tmp_path), *FAST]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_an_empty_folder_says_what_it_looked_for(tiny_zoo, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["faithfulness", "--models", "vgg", "--data", str(empty), "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "has no images (looked for .bmp, .gif, .jpeg, .jpg" in err
    assert main(["faithfulness", "--figure-from", str(tmp_path / "nothing.json")]) == 2
    assert "no faithfulness results" in capsys.readouterr().err


def test_the_scored_model_is_left_untouched(tiny_zoo):
    model = load_zoo_model("resnet_att2_concat_pc").model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    score_dataset(model, images, steps=4, randomisation_images=2, cascade_steps=2)
    assert not model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
