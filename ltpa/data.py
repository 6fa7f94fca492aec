"""Datasets: torchvision names (cifar10, cifar100, svhn) or ImageFolder trees with train/ and test/.

``load_dataset`` gives the training and test splits (``ltpa train``); ``load_test_split`` is the
one resolver of evaluation data (``ltpa eval``, ``ltpa robustness``): a dataset name, a tree with
``test/`` or a folder of class folders. Image files are decoded by ``ltpa.images.load_image`` and
resized by ``ltpa.preprocess.resize_image``, the same path the app and ``ltpa.inference`` take.

Small image datasets are decoded once into one uint8 tensor (N x 3 x H x W) that can live on the
GPU, where augmentation runs batched (flip, reflect-pad crop, cutout): no per-image Python work in
the training loop, so a CIFAR-sized epoch costs seconds.

Decoding 60,000 small JPEGs takes longer than a short training run's compilation, so a decoded
folder is kept in a cache (``$LTPA_CACHE_DIR``, default ~/.cache/ltpa, under ``decoded/``; set the
variable to an empty string to turn it off). A cache entry is named by a digest of every file's
path, size and modification time, its label and the decoding size: changing, adding or removing
a file decodes the folder again.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ltpa.images import ImageError, decode_plain_jpeg, load_image
from ltpa.preprocess import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, pixels_to_unit, resize_image

logger = logging.getLogger(__name__)

CACHE_ENV = "LTPA_CACHE_DIR"
# Part of every cache entry's name: bump it when decoding or resizing changes what a file gives.
DECODE_VERSION = 1
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
    # Sorted by file name: the order of sorting the paths (one folder each), at a fraction of
    # the cost for tens of thousands of files (bench/data_load.py).
    files = {
        c.name: sorted((f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda f: f.name)
        for c in classes
    }
    empty = [name for name, items in files.items() if not items]
    if empty:
        raise DatasetError(f"{split_dir}: class folder(s) with no images: {', '.join(empty)}")
    return files


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One file as RGB uint8 H x W x 3, resized to ``size`` (height, width) when given."""
    data = path.read_bytes()
    # Plain JPEGs (most datasets' files) skip Pillow's per-file work; the pixels are the same.
    image = decode_plain_jpeg(data)
    if image is None:
        image = load_image(data).array
    return resize_image(image, size) if size is not None else image


def _decode_or_error(path: Path, size: tuple[int, int] | None) -> np.ndarray | str:
    """The decoded image, or the reason it cannot be decoded (collected, then reported at once)."""
    try:
        return _decode(path, size)
    except (ImageError, OSError) as error:
        return str(error)


def _folder_labels(split_dir: Path, names: list[str], class_names: list[str] | None,
                   allow_subset: bool) -> tuple[list[str], dict[str, int]]:
    """The class list of the split and the label of each class folder."""
    if class_names is None:
        return names, {name: i for i, name in enumerate(names)}
    class_names = list(class_names)
    if allow_subset:
        unknown = [name for name in names if name not in class_names]
        if unknown:
            raise DatasetError(
                f"{split_dir / unknown[0]} is not a class of the model "
                f"({len(unknown)} such folder(s): {', '.join(unknown[:5])}); valid class folder "
                f"names: {', '.join(class_names)}"
            )
        return class_names, {name: class_names.index(name) for name in names}
    if names != class_names:
        raise DatasetError(
            f"class folders of {split_dir} ({', '.join(names)}) do not match the training classes "
            f"({', '.join(class_names)})"
        )
    return names, {name: i for i, name in enumerate(names)}


def load_image_folder(
    split_dir: str | Path, class_names: list[str] | None = None, image_size: int | None = None,
    allow_subset: bool = False,
) -> ImageSet:
    """Decode every image of ``split_dir/<class>/*`` into memory (threads).

    Args:
        split_dir: folder with one sub-folder per class.
        class_names: the classes the split must have (same names, same order), or None to take
            the folders' names.
        image_size: side every image is resized to; None keeps the first image's size and
            resizes the others to it.
        allow_subset: with ``class_names``, accept any subset of them as folders; labels are then
            indices into ``class_names`` and the set's class list is ``class_names``.

    Returns:
        The split as an ImageSet (uint8 N x 3 x H x W).

    Raises:
        DatasetError: a missing or empty folder, unknown classes, or undecodable images.
    """
    split_dir = Path(split_dir)
    files = _list_class_folders(split_dir)
    names, label_of = _folder_labels(split_dir, list(files), class_names, allow_subset)
    paths = [p for name in files for p in files[name]]
    labels = [label_of[name] for name in files for _ in files[name]]
    if image_size is not None and (isinstance(image_size, bool) or int(image_size) < 1):
        raise DatasetError(f"the image size must be a positive number of pixels; got {image_size}")
    size = (int(image_size), int(image_size)) if image_size else None
    cache = _cache_file(paths, labels, names, size)
    cached = _read_cache(cache)
    if cached is not None:
        return cached
    images = _decode_all(split_dir, paths, size)
    decoded_set = ImageSet(images, torch.tensor(labels, dtype=torch.long), names)
    _write_cache(cache, decoded_set)
    return decoded_set


def decoded_cache_dir() -> Path | None:
    """Where decoded folders are cached (None when ``$LTPA_CACHE_DIR`` is set empty)."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and not value.strip():
        return None
    return Path(value or Path.home() / ".cache" / "ltpa") / "decoded"


def _cache_file(paths: list[Path], labels: list[int], names: list[str],
                size: tuple[int, int] | None) -> Path | None:
    folder = decoded_cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(f"v{DECODE_VERSION} size {size} classes {names}\n".encode())
    # Each class folder is resolved once, not each file: resolving every one of CIFAR-10's 60,000
    # paths took most of a cached load (bench/data_load.py). A regular file's key is unchanged.
    resolved: dict[str, str] = {}
    for path, label in zip(paths, labels):
        parent, name = os.path.split(str(path))
        if parent not in resolved:
            resolved[parent] = os.path.realpath(parent)
        full = os.path.join(resolved[parent], name)
        stat = os.stat(full)
        digest.update(f"{full}\t{stat.st_size}\t{stat.st_mtime_ns}\t{label}\n".encode())
    return folder / f"{digest.hexdigest()[:32]}.pt"


def _read_cache(cache: Path | None) -> ImageSet | None:
    if cache is None or not cache.is_file():
        return None
    try:
        saved = torch.load(cache, weights_only=True)
        images, labels, names = saved["images"], saved["labels"], list(saved["class_names"])
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("unexpected contents")
        return ImageSet(images, labels, names)
    except Exception as error:  # a damaged entry is decoded again and rewritten
        logger.warning("ignoring the damaged decoded-image cache %s (%s)", cache, error)
        return None


def _write_cache(cache: Path | None, images: ImageSet) -> None:
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"images": images.images, "labels": images.labels,
                    "class_names": list(images.class_names)}, tmp)
        tmp.replace(cache)
    except OSError as error:  # a read-only or full disk only costs the next run a decode
        logger.warning("could not cache decoded images in %s (%s)", cache, error)


# Files decoded per thread-pool task.
DECODE_CHUNK = 256
# Images up to this many pixels (CIFAR's 32x32, ImageNet-64's 64x64) are decoded in one thread:
# their Python work per file outweighs the decoding that OpenCV does without the GIL, so threads
# only contend for it (on a 2-core machine four threads took 1.5 times as long as one for CIFAR-10
# JPEGs, and half as long as one for the 300x200 Weizmann horses).
SERIAL_DECODE_PIXELS = 64 * 64


def _decode_all(split_dir: Path, paths: list[Path], size: tuple[int, int] | None) -> Tensor:
    """Every file decoded (in threads, for larger images) into one uint8 N x 3 x H x W tensor."""
    first = _decode_or_error(paths[0], None)
    if size is None and not isinstance(first, str):
        size = first.shape[:2]

    def decode(part: list[Path]) -> list[np.ndarray | str]:
        return [_decode_or_error(p, size) for p in part]

    if not isinstance(first, str) and first.shape[0] * first.shape[1] <= SERIAL_DECODE_PIXELS:
        decoded = decode(paths)
    else:
        # One task per chunk of files: a future per file costs more than decoding a small JPEG.
        chunks = [paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK)]
        with ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 2) * 2)) as pool:
            decoded = [image for chunk in pool.map(decode, chunks) for image in chunk]
    failed = [(path, reason) for path, reason in zip(paths, decoded) if isinstance(reason, str)]
    if failed:
        path, reason = failed[0]
        count = "none" if len(failed) == len(paths) else f"{len(failed)}"
        verb = "can" if len(failed) == len(paths) else "cannot"
        raise DatasetError(
            f"{split_dir}: {count} of its {len(paths)} image files {verb} be decoded "
            f"(first: {path}: {reason})"
        )
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()


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


def _default_root(data_root: str | Path | None) -> Path:
    return Path(data_root or Path.home() / ".cache" / "ltpa" / "datasets")


def _existing_folder(data: str) -> Path:
    root = Path(data)
    if not root.is_dir():
        raise DatasetError(
            f"{data!r} is neither a dataset name ({', '.join(TORCHVISION_DATASETS)}) nor an existing folder"
        )
    return root


def load_dataset(
    data: str, data_root: str | Path | None = None, download: bool = True,
    image_size: int | None = None,
) -> tuple[ImageSet, ImageSet]:
    """The training and test splits of a dataset.

    Args:
        data: a torchvision dataset name (cifar10, cifar100, svhn) or an ImageFolder tree with
            train/ and test/ (the same class folders in each).
        data_root: folder of the torchvision files (default ~/.cache/ltpa/datasets).
        download: whether torchvision may download a missing dataset.
        image_size: side the images are resized to (default: the training images' own size).

    Returns:
        (train, test) ImageSets.
    """
    if data.lower() in TORCHVISION_DATASETS:
        root = _default_root(data_root)
        return (_torchvision_split(data.lower(), root, True, download),
                _torchvision_split(data.lower(), root, False, download))
    root = _existing_folder(data)
    train = load_image_folder(root / "train", image_size=image_size)
    test = load_image_folder(root / "test", class_names=train.class_names,
                             image_size=image_size or train.images.shape[-1])
    return train, test


def load_test_split(
    data: str, class_names: list[str] | None = None, image_size: int | None = None,
    data_root: str | Path | None = None, download: bool = True, allow_subset: bool = False,
) -> tuple[ImageSet, str]:
    """The evaluation images of a dataset: the one resolver behind ``ltpa eval`` and
    ``ltpa robustness``.

    Args:
        data: a torchvision dataset name (its test split), an ImageFolder tree with a ``test/``
            folder, or a folder of class folders itself.
        class_names: the model's classes; the data's classes must be the same (or, with
            ``allow_subset``, a subset of them named like them).
        image_size: side the images are resized to (the model's input size).
        data_root: folder of the torchvision files (default ~/.cache/ltpa/datasets).
        download: whether torchvision may download a missing dataset.
        allow_subset: accept class folders that are only some of ``class_names``; labels are
            indices into ``class_names``.

    Returns:
        (the test ImageSet, a description of where it came from).

    Raises:
        DatasetError: unknown name or folder, classes that are not the model's, bad images.
    """
    if data.lower() in TORCHVISION_DATASETS:
        name = data.lower()
        test = _torchvision_split(name, _default_root(data_root), False, download)
        if class_names is not None and list(test.class_names) != list(class_names):
            raise DatasetError(f"{name}'s classes ({', '.join(test.class_names)}) are not the "
                               f"model's ({', '.join(class_names)})")
        if image_size and test.images.shape[-1] != image_size:
            raise DatasetError(f"{name} images are {test.images.shape[-1]} pixels wide, the model "
                               f"takes {image_size}")
        return test, f"{name} test split (torchvision)"
    folder = _existing_folder(data)
    if (folder / "test").is_dir():
        folder = folder / "test"
    test = load_image_folder(folder, class_names=class_names, image_size=image_size,
                             allow_subset=allow_subset)
    return test, str(folder)


def dataset_normalisation(data: str, train: ImageSet) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in pixel space [0, 1] for a training set.

    CIFAR-10 (and its JPEG copy, whose means match to 1e-4) gets the published values; any other
    set is measured on (up to 20,000 of) its training images.

    Args:
        data: the dataset name or folder, as given to ``load_dataset``.
        train: the training split.

    Returns:
        (mean, std), three floats each.
    """
    if train.class_names == list(CIFAR10_CLASSES):
        return list(CIFAR10_MEAN), list(CIFAR10_STD)
    pixels = train.images[: 20000].float().div_(255)
    return (pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).tolist())


# How a training loader flips: each image at random each epoch, or alternating (a random flip per
# image in even epochs, the opposite one in odd epochs: each image is seen both ways every two
# epochs, which random flips leave to chance; the fastest CIFAR-10 trainers do this).
TRAIN_FLIPS = ("random", "alternating")


class DeviceLoader:
    """Batches from an on-device uint8 ImageSet, normalised, augmented on the device when training.

    Augmentation: horizontal flip (random, or alternating by ``epoch``: :data:`TRAIN_FLIPS`),
    reflect-pad-``pad`` random crop (an offset per image, done with one advanced-indexing
    gather), and cutout of a ``cutout`` x ``cutout`` square.
    With ``mean`` and ``std`` None the batches stay in pixel space [0, 1]
    (``ltpa.preprocess.pixels_to_unit``), for a ``PixelModel`` that normalises itself: the
    evaluation path then feeds the model exactly what ``ltpa.preprocess.image_to_input`` builds.
    """

    def __init__(
        self, data: ImageSet, batch_size: int, mean: list[float] | None, std: list[float] | None,
        train: bool, pad: int = 4, cutout: int = 0, drop_last: bool = False,
        generator: torch.Generator | None = None, channels_last: bool = False,
        flip: str = "random", flip_seed: int = 0,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"the batch size must be a positive integer; got {batch_size!r}")
        if flip not in TRAIN_FLIPS:
            raise ValueError(f"flip must be one of {', '.join(TRAIN_FLIPS)}; got {flip!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither (pixel-space batches)")
        self.data, self.batch_size, self.train = data, batch_size, train
        self.pad, self.cutout, self.drop_last = pad, cutout, drop_last
        self.generator = generator
        self.channels_last = channels_last
        # Set by the trainer before each epoch (1-based); only alternating flips read it.
        self.epoch = 1
        device = data.images.device
        # The even epochs' flip of each image, from its own seed: a resumed run, whose loader
        # generator has moved on, still flips each image as the uninterrupted run would.
        self.first_flips = (torch.randint(0, 2, (len(data),), generator=torch.Generator().manual_seed(
            flip_seed)).bool().to(device) if flip == "alternating" else None)
        self.mean = None if mean is None else torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = None if std is None else torch.tensor(std, device=device).view(1, 3, 1, 1) * 255

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

    def _augment(self, x: Tensor, index: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if self.first_flips is None:
            flip = self._rand(n, high=2).bool()
        else:
            flip = self.first_flips[index] ^ bool(self.epoch % 2)
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
            yield self.batch(index)

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The images at ``index`` as model input (augmented when training) and their labels.

        Args:
            index: indices into the on-device set.

        Returns:
            The input batch and its labels.
        """
        if self.mean is None:
            x = pixels_to_unit(self.data.images[index])
            if self.train:
                x = self._augment(x, index)
        else:
            x = self.data.images[index].float()
            if self.train:
                x = self._augment(x, index)
            x = (x - self.mean) / self.std
        if self.train and self.cutout:
            x = self._cutout(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.data.labels[index]
