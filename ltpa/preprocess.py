"""Normalisation and model input preparation: the one place pixels become model inputs.

Models are trained on normalised tensors; everything user-facing (images, attacks, masks) works in
pixel space [0, 1]. ``PixelModel`` wraps a model with its normalisation so callers never mix the
two spaces (FGSM in normalised space is a classic bug).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from ltpa.models.outputs import ModelOutput

# Channel statistics of the CIFAR-10 training set (pixel space [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


def normalise(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Map pixel-space [0, 1] images to the model's normalised space.

    Args:
        x: B x 3 x H x W float tensor.
        mean: per-channel mean in pixel space.
        std: per-channel standard deviation in pixel space.

    Returns:
        ``(x - mean) / std``, same shape, dtype and device.
    """
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


class PixelModel(nn.Module):
    """A model that takes pixel-space [0, 1] input and normalises it itself."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> ModelOutput:
        return self.model(normalise(x, self.mean, self.std))


def resize_image(image: np.ndarray, size: int | tuple[int, int] = 32) -> np.ndarray:
    """An RGB uint8 image resized to the model's input size: the one resize of every image path.

    Downscaling uses OpenCV's area interpolation (no aliasing), enlarging bilinear interpolation;
    an image already at the size is copied unchanged.

    Args:
        image: H x W x 3 uint8 RGB array.
        size: side of the square input, or (height, width).

    Returns:
        The resized H' x W' x 3 uint8 array (C-contiguous).

    Raises:
        ValueError: ``image`` is not an RGB uint8 array or ``size`` is not positive.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an RGB uint8 image of shape (H, W, 3); got {image.dtype} {image.shape}"
        )
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"the input size must be positive; got {size}")
    if image.shape[:2] == (height, width):
        return image.copy()  # a writable copy, like cv2.resize's result
    shrinking = image.shape[0] > height or image.shape[1] > width
    resized = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return np.ascontiguousarray(resized)


def pixels_to_unit(images: Tensor) -> Tensor:
    """uint8 images (N x 3 x H x W, any device) as float32 in [0, 1], the models' pixel space.

    Args:
        images: uint8 tensor of images in NCHW layout.

    Returns:
        A float32 tensor of the same shape on the same device.
    """
    return images.float() / 255.0


def image_to_input(image: np.ndarray, size: int | tuple[int, int] = 32) -> Tensor:
    """An RGB uint8 image (H x W x 3) as model input: resized by :func:`resize_image` and
    converted by :func:`pixels_to_unit`, so every path (CLI, library, app) builds the same tensor.

    Args:
        image: H x W x 3 uint8 RGB array.
        size: side of the square input, or (height, width).

    Returns:
        A 1 x 3 x S x S float32 tensor in [0, 1].
    """
    resized = resize_image(image, size)
    return pixels_to_unit(torch.from_numpy(resized).permute(2, 0, 1)[None])
