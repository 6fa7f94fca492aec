"""``ltpa eval`` and the data it reads: one image path shared with the app, class subsets, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample_images as samples
from ltpa.cli import main
from ltpa.commands import evaluate as evaluate_command
from ltpa.data import DatasetError, DeviceLoader, load_dataset, load_image_folder, load_test_split
from ltpa.images import load_image
from ltpa.inference import analyse, load_model_source
from ltpa.preprocess import CIFAR10_CLASSES, PixelModel

FIXTURE = Path(__file__).parent / "data" / "cifar10_fixture"
MODEL_ID = "vgg_att3_concat_pc"


class RecordingPixelModel(PixelModel):
    """A real PixelModel that keeps a copy of every input it is given."""

    inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor):
        RecordingPixelModel.inputs.append(x.detach().clone())
        return super().forward(x)


def photo_folder(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """A test folder with one class folder per entry, each holding one photo-like image of its
    (height, width): larger than the model input, so the resize is exercised."""
    for index, (name, (height, width)) in enumerate(sizes.items()):
        (root / name).mkdir(parents=True)
        rng = np.random.default_rng(index)
        image = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        Image.fromarray(image).save(root / name / "photo.png")
    return root


def test_cli_eval_feeds_the_model_what_analyse_feeds_it(tiny_zoo: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = photo_folder(tmp_path / "data", {"cat": (97, 131), "horse": (20, 24)})
    files = [data / "cat" / "photo.png", data / "horse" / "photo.png"]
    shutil.copy(FIXTURE / "ship" / "0000.jpg", data / "cat" / "zz_fixture.jpg")
    files.insert(1, data / "cat" / "zz_fixture.jpg")
    RecordingPixelModel.inputs = []
    monkeypatch.setattr(evaluate_command, "PixelModel", RecordingPixelModel)
    assert main(["eval", MODEL_ID, "--data", str(data), "--device", "cpu", "--batch-size", "2"]) == 0
    cli_inputs = torch.cat(RecordingPixelModel.inputs)
    assert cli_inputs.shape == (3, 3, 32, 32)

    loaded = load_model_source(MODEL_ID)
    inner = loaded.model.model
    loaded.model = RecordingPixelModel(inner, loaded.entry.card["mean"], loaded.entry.card["std"])
    for index, path in enumerate(files):
        RecordingPixelModel.inputs = []
        analyse(loaded, load_image(path.read_bytes()).array)
        (library_input,) = RecordingPixelModel.inputs
        assert library_input.dtype == cli_inputs.dtype == torch.float32
        assert torch.equal(library_input[0], cli_inputs[index]), path.name  # bit-equal


def test_eval_scores_a_subset_of_the_model_classes(tiny_zoo: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "subset"
    for name in ("cat", "horse"):
        shutil.copytree(FIXTURE / name, data / name)
    out = tmp_path / "out"
    assert main(["eval", MODEL_ID, "--data", str(data), "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads((out / "eval.json").read_text())
    per_class = len(list((FIXTURE / "cat").iterdir()))
    assert report["images"] == 2 * per_class
    assert report["class_names"] == list(CIFAR10_CLASSES)
    assert report["classes_evaluated"] == ["cat", "horse"]
    assert set(report["per_class_accuracy"]) == {"cat", "horse"}
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10)
    row_sums = confusion.sum(axis=1)
    # Labels are the model's indices: cat is class 3, horse class 7.
    assert row_sums[3] == row_sums[7] == per_class and row_sums.sum() == 2 * per_class
    correct = confusion[3, 3] + confusion[7, 7]
    assert report["top1_error"] == pytest.approx(100 * (1 - correct / (2 * per_class)))
    assert "2 of the model's 10 classes" in capsys.readouterr().out


def test_eval_refuses_a_class_folder_the_model_does_not_know(tiny_zoo: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE / "cat", data / "cat")
    shutil.copytree(FIXTURE / "horse", data / "zebra")
    assert main(["eval", MODEL_ID, "--data", str(data), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(data / "zebra") in err
    assert "valid class folder names: airplane, automobile" in err


@pytest.mark.parametrize("size", ["-5", "0"])
def test_eval_refuses_a_batch_size_below_one(tiny_zoo: Path, tmp_path: Path, capsys, size: str) -> None:
    out = tmp_path / "out"
    assert main(["eval", MODEL_ID, "--data", str(FIXTURE), "--batch-size", size, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--batch-size must be a positive integer; got {size}" in err
    assert not out.exists()


def test_eval_accepts_a_run_folder_and_names_bad_model_sources(tiny_zoo: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_zoo / f"{MODEL_ID}.pt", run / "model.pt")
    assert main(["eval", str(run), "--data", str(FIXTURE), "--device", "cpu"]) == 0
    assert "top-1 error" in capsys.readouterr().out
    assert main(["eval", str(tmp_path), "--data", str(FIXTURE)]) == 2
    assert "without model.pt" in capsys.readouterr().err
    assert main(["eval", "no_such_model", "--data", str(FIXTURE)]) == 2
    assert "shipped: " in capsys.readouterr().err


def test_device_loader_refuses_batch_sizes_below_one() -> None:
    data = load_image_folder(FIXTURE)
    for size in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="batch size must be a positive integer"):
            DeviceLoader(data, size, None, None, train=False)


def test_pixel_space_batches_are_the_images_over_255() -> None:
    data = load_image_folder(FIXTURE)
    (x, y), *_ = list(DeviceLoader(data, 1000, None, None, train=False))
    assert torch.equal(x, data.images.float() / 255.0) and torch.equal(y, data.labels)


def corrupt_pngs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    good = samples.png_rgb(32, 32)
    for index in range(count):
        (folder / f"{index}.png").write_bytes(good[:40] + b"\x00" * 30)  # a PNG signature, then junk


def test_training_folder_of_corrupt_pngs_is_a_clear_error(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            corrupt_pngs(tmp_path / "data" / split / name, 3)
    with pytest.raises(DatasetError) as info:
        load_dataset(str(tmp_path / "data"))
    message = str(info.value)
    assert "none of its 6 image files can be decoded" in message
    assert str(tmp_path / "data" / "train") in message and "\n" not in message


def test_some_corrupt_images_are_counted_and_named(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE / "cat", tmp_path / "split" / "cat")
    (tmp_path / "split" / "cat" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n junk")
    with pytest.raises(DatasetError, match=r"1 of its 21 image files cannot be decoded \(first: .*zz\.png"):
        load_image_folder(tmp_path / "split")


def test_one_resolver_for_names_trees_and_folders(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE, tree / "test")
    from_tree, source = load_test_split(str(tree), class_names=list(CIFAR10_CLASSES), image_size=32)
    from_folder, _ = load_test_split(str(FIXTURE), class_names=list(CIFAR10_CLASSES), image_size=32)
    assert source == str(tree / "test")
    assert torch.equal(from_tree.images, from_folder.images)
    with pytest.raises(DatasetError, match="do not match"):
        load_test_split(str(FIXTURE), class_names=["cat", "dog"])
    with pytest.raises(DatasetError, match="neither a dataset name"):
        load_test_split(str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match="image size must be a positive"):
        load_test_split(str(FIXTURE), image_size=0)


def test_eval_scores_flip_and_flip_and_translate_tta_when_asked(tiny_zoo: Path, tmp_path: Path,
                                                                capsys) -> None:
    out = tmp_path / "out"
    assert main(["eval", MODEL_ID, "--data", str(FIXTURE), "--device", "cpu", "--out", str(out),
                 "--tta-translate", "2"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["tta_translate"] == 2
    assert 0 <= report["top1_error_tta"] <= 100 and 0 <= report["top1_error_flip"] <= 100
    assert "with flip-and-translate TTA (2 px)" in capsys.readouterr().out
    assert main(["eval", MODEL_ID, "--data", str(FIXTURE), "--device", "cpu", "--out", str(out)]) == 0
    assert "top1_error_tta" not in json.loads((out / "eval.json").read_text())
    assert main(["eval", MODEL_ID, "--data", str(FIXTURE), "--tta-translate", "9"]) == 2
    assert "--tta-translate must be an integer in [0, 8]; got 9" in capsys.readouterr().err
