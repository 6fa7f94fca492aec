"""Datasets: torchvision names (cifar10, cifar100, svhn) or ImageFolder trees with train/ and test/.

Small image datasets are decoded once into one uint8 tensor (N x 3 x H x W) that can live on the
GPU, where augmentation runs batched (flip, reflect-pad crop, cutout): no per-image Python work in
the training loop, so a CIFAR-sized epoch costs seconds.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
TORCHVISION_DATASETS = ("cifar10", "cifar100", "svhn")


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message saying what to fix."""


@dataclass
class ImageSet:
    """A whole split in memory: ``images`` uint8 N x 3 x H x W, ``labels`` int64 N."""

    images: Tensor
    labels: Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.class_names)


def _list_class_folders(split_dir: Path) -> dict[str, list[Path]]:
    if not split_dir.is_dir():
        raise DatasetError(f"missing folder {split_dir}: an ImageFolder dataset needs train/ and test/ "
                           "folders, each with one sub-folder per class")
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{split_dir} has no class sub-folders (expected {split_dir}/<class>/<image>)")
    files = {
        c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes
    }
    empty = [name for name, items in files.items() if not items]
    if empty:
        raise DatasetError(f"{split_dir}: class folder(s) with no images: {', '.join(empty)}")
    return files


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def load_image_folder(
    split_dir: str | Path, class_names: list[str] | None = None, image_size: int | None = None
) -> ImageSet:
    """Decode every image of ``split_dir/<class>/*`` into memory (threads; same size required,
    or resized to ``image_size``). ``class_names`` checks the split has exactly those classes."""
    split_dir = Path(split_dir)
    files = _list_class_folders(split_dir)
    names = list(files)
    if class_names is not None and names != list(class_names):
        raise DatasetError(
            f"class folders of {split_dir} ({', '.join(names)}) do not match the training classes "
            f"({', '.join(class_names)})"
        )
    paths = [p for name in names for p in files[name]]
    labels = [i for i, name in enumerate(names) for _ in files[name]]
    size = (image_size, image_size) if image_size else None
    if size is None:
        first = _decode(paths[0], None)
        size = first.shape[:2]
    with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 2) * 2)) as pool:
        try:
            arrays = list(pool.map(lambda p: _decode(p, size), paths, chunksize=256))
        except OSError as error:
            raise DatasetError(f"could not decode an image in {split_dir}: {error}") from None
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(labels, dtype=torch.long), names)


def _torchvision_split(name: str, root: Path, train: bool, download: bool) -> ImageSet:
    import torchvision

    try:
        if name == "svhn":
            dataset = torchvision.datasets.SVHN(str(root), split="train" if train else "test",
                                                download=download)
            images = torch.from_numpy(dataset.data)
            labels = torch.from_numpy(dataset.labels.astype(np.int64))
            classes = [str(i) for i in range(10)]
        else:
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            dataset = cls(str(root), train=train, download=download)
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.tensor(dataset.targets, dtype=torch.long)
            classes = list(dataset.classes)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise DatasetError(
            f"{name} is not in {root} and could not be downloaded ({error}). Offline, download it "
            f"elsewhere and pass --data-root to its folder, or pass an ImageFolder tree with "
            f"train/ and test/ folders as --data"
        ) from None
    except OSError as error:  # no network
        raise DatasetError(
            f"could not download {name} ({error}); offline, point --data at a local ImageFolder tree "
            f"with train/ and test/ folders, or --data-root at a folder holding the torchvision files"
        ) from None
    return ImageSet(images, labels, classes)


def load_dataset(
    data: str, data_root: str | Path | None = None, download: bool = True,
    image_size: int | None = None,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) for a torchvision dataset name or an ImageFolder tree with train/ and test/."""
    if data.lower() in TORCHVISION_DATASETS:
        root = Path(data_root or Path.home() / ".cache" / "ltpa" / "datasets")
        return (_torchvision_split(data.lower(), root, True, download),
                _torchvision_split(data.lower(), root, False, download))
    root = Path(data)
    if not root.exists():
        raise DatasetError(
            f"{data!r} is neither a dataset name ({', '.join(TORCHVISION_DATASETS)}) nor an existing folder"
        )
    train = load_image_folder(root / "train", image_size=image_size)
    test = load_image_folder(root / "test", class_names=train.class_names,
                             image_size=image_size or train.images.shape[-1])
    return train, test


def dataset_normalisation(data: str, train: ImageSet) -> tuple[list[float], list[float]]:
    """Per-channel mean/std in pixel space: CIFAR-10's published values for CIFAR-10 (and its
    JPEG copy, whose means match to 1e-4), else measured on the training images."""
    if train.class_names == list(CIFAR10_CLASSES):
        return list(CIFAR10_MEAN), list(CIFAR10_STD)
    pixels = train.images[: 20000].float().div_(255)
    return (pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).tolist())


class DeviceLoader:
    """Batches from an on-device uint8 ImageSet, normalised, augmented on the device when training.

    Augmentation: random horizontal flip, reflect-pad-``pad`` random crop (an offset per image,
    done with one advanced-indexing gather), and cutout of a ``cutout`` x ``cutout`` square.
    """

    def __init__(
        self, data: ImageSet, batch_size: int, mean: list[float], std: list[float], train: bool,
        pad: int = 4, cutout: int = 0, drop_last: bool = False, generator: torch.Generator | None = None,
        channels_last: bool = False,
    ) -> None:
        self.data, self.batch_size, self.train = data, batch_size, train
        self.pad, self.cutout, self.drop_last = pad, cutout, drop_last
        self.generator = generator
        self.channels_last = channels_last
        device = data.images.device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _rand(self, *shape: int, high: int) -> Tensor:
        return torch.randint(0, high, shape, generator=self.generator, device="cpu").to(
            self.data.images.device, non_blocking=True)

    def _cutout(self, x: Tensor) -> Tensor:
        # Applied after normalisation, so the erased square is the mean colour (zero).
        n, _, h, w = x.shape
        top = self._rand(n, high=h) - self.cutout // 2
        left = self._rand(n, high=w) - self.cutout // 2
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        in_y = (ys >= top[:, None]) & (ys < top[:, None] + self.cutout)
        in_x = (xs >= left[:, None]) & (xs < left[:, None] + self.cutout)
        erase = in_y[:, :, None] & in_x[:, None, :]
        return x.masked_fill(erase[:, None], 0.0)

    def _augment(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        flip = self._rand(n, high=2).bool()
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.pad:
            padded = torch.nn.functional.pad(x, (self.pad,) * 4, mode="reflect")
            dy = self._rand(n, high=2 * self.pad + 1)
            dx = self._rand(n, high=2 * self.pad + 1)
            rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # n x h
            cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])  # n x w
            index = torch.arange(n, device=x.device)[:, None, None, None]
            channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]
        return x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.data)
        device = self.data.images.device
        if self.train:
            order = torch.randperm(n, generator=self.generator).to(device)
        else:
            order = torch.arange(n, device=device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.drop_last and index.numel() < self.batch_size:
                break
            x = self.data.images[index].float()
            if self.train:
                x = self._augment(x)
            x = (x - self.mean) / self.std
            if self.train and self.cutout:
                x = self._cutout(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.data.labels[index]
