"""Post-hoc saliency for contrast with learned attention: CAM, Grad-CAM and a centre prior.

Computed from ``ModelOutput.features`` with ``torch.autograd.grad``: no hooks and no ``.backward``,
so the one cached model shared by all app sessions is never mutated and parameter ``.grad`` stays
untouched.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _class_index(logits: Tensor, class_index: int | None) -> Tensor:
    if class_index is None:
        return logits.argmax(dim=1)
    if not 0 <= class_index < logits.shape[1]:
        raise ValueError(f"class index must be in [0, {logits.shape[1] - 1}]; got {class_index}")
    return torch.full((logits.shape[0],), class_index, dtype=torch.long, device=logits.device)


def cam(model: nn.Module, x: Tensor, class_index: int | None = None) -> Tensor:
    """Class activation maps (Zhou et al. 2016) of a GAP model (``vgg_gap``): B x 1 x h x w, >= 0.

    ``model`` may be a ``PixelModel`` wrapper; the GAP classifier is found on the inner model.
    """
    inner = getattr(model, "model", model)
    if not getattr(inner, "gap", False):
        raise ValueError("CAM needs a global-average-pooling model such as 'vgg_gap'")
    with torch.no_grad():
        out = model(x)
        classes = _class_index(out.logits, class_index)
        weights = inner.classifier.weight[classes]  # B x C
        maps = torch.einsum("bc,bchw->bhw", weights.float(), out.features.float())[:, None]
    return F.relu(maps)


def grad_cam(model: nn.Module, x: Tensor, class_index: int | None = None) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on the last spatial features: B x 1 x h x w, >= 0."""
    with torch.enable_grad():
        out = model(x)
        classes = _class_index(out.logits, class_index)
        selected = out.logits.gather(1, classes[:, None]).sum()
        (grads,) = torch.autograd.grad(selected, out.features)
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    maps = (weights * out.features.detach().float()).sum(dim=1, keepdim=True)
    return F.relu(maps)


def centre_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian blob in the middle of the image (sigma as a fraction of each side), summing to 1:
    the trivial guess every saliency method should beat."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive; got {sigma}")
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    blob = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (blob / blob.sum()).astype(np.float32)
