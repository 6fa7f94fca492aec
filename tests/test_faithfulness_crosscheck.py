"""ltpa's hook-free Grad-CAM and Grad-CAM++ against pytorch-grad-cam on the same model and images.

pytorch-grad-cam registers hooks, so it runs on a private deep copy of the model. It returns each
map min-max scaled and resized to the input with OpenCV; ltpa's maps go through the same two
steps before comparing. Skipped only where pytorch-grad-cam (``pip install grad-cam``) is missing.
"""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import ltpa
from ltpa.preprocess import CIFAR10_MEAN, CIFAR10_STD, PixelModel
from ltpa.saliency import grad_cam, grad_cam_plus_plus

library = pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam (pip install grad-cam) is not installed")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


LIBRARY_EPS = 1e-6  # pytorch_grad_cam/grad_cam_plusplus.py


class LogitsOnly(nn.Module):
    """pytorch-grad-cam wants a model returning logits, not a ModelOutput."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def scaled_like_the_library(maps: torch.Tensor, size: int) -> np.ndarray:
    """Min-max scale each map, resize it to the input, min-max scale again (what
    pytorch-grad-cam returns for one target layer)."""
    def min_max(single: np.ndarray) -> np.ndarray:
        single = single - single.min()
        return single / (1e-7 + single.max())

    return np.stack([min_max(cv2.resize(min_max(single), (size, size)))
                     for single in maps[:, 0].numpy().astype(np.float32)])


@pytest.mark.parametrize("name", ["vgg_att3_concat_pc", "vgg_gap", "resnet_att2_concat_pc"])
@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp"])
def test_own_grad_cam_matches_pytorch_grad_cam(name, method):
    torch.manual_seed(0)
    extra = {"depth": 11, "width": 0.25} if name.startswith("resnet") else {"width": 0.25}
    model = PixelModel(ltpa.create_model(name, **extra), CIFAR10_MEAN, CIFAR10_STD).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    classes = model(x).logits.argmax(1)
    # pytorch-grad-cam adds 1e-6 to Grad-CAM++'s denominator; ltpa's default is the exact formula.
    ours = grad_cam(model, x) if method == "grad_cam" else grad_cam_plus_plus(model, x, eps=LIBRARY_EPS)
    private = copy.deepcopy(model)  # the library's hooks never touch the model ltpa scored
    inner = private.model
    layer = inner.layers[12] if name.startswith("vgg") else inner.final_norm
    wrapped = LogitsOnly(private).eval()
    cls = library.GradCAM if method == "grad_cam" else library.GradCAMPlusPlus
    with cls(model=wrapped, target_layers=[layer]) as explainer:
        theirs = explainer(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    mine = scaled_like_the_library(ours, 32)
    assert theirs.shape == mine.shape
    correlation = np.corrcoef(theirs.ravel(), mine.ravel())[0, 1]
    assert correlation > 0.9999, correlation
    np.testing.assert_allclose(mine, theirs, atol=1e-3)
    assert all(p.grad is None for p in model.parameters())
