"""Post-hoc saliency for contrast with learned attention: CAM, Grad-CAM, Grad-CAM++ and a centre prior.

Computed from ``ModelOutput.features`` with ``torch.autograd.grad``: no hooks and no ``.backward``,
so the one cached model shared by all app sessions is never mutated and parameter ``.grad`` stays
untouched.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _class_index(logits: Tensor, class_index: int | Tensor | None) -> Tensor:
    if class_index is None:
        return logits.argmax(dim=1)
    if isinstance(class_index, Tensor):  # one class per image
        if class_index.shape != (logits.shape[0],):
            raise ValueError(f"expected one class index per image ({logits.shape[0]}); got shape "
                             f"{tuple(class_index.shape)}")
        if class_index.numel() and not (0 <= int(class_index.min()) and int(class_index.max()) < logits.shape[1]):
            raise ValueError(f"class indices must be in [0, {logits.shape[1] - 1}]")
        return class_index.to(device=logits.device, dtype=torch.long)
    if not 0 <= class_index < logits.shape[1]:
        raise ValueError(f"class index must be in [0, {logits.shape[1] - 1}]; got {class_index}")
    return torch.full((logits.shape[0],), class_index, dtype=torch.long, device=logits.device)


def cam(model: nn.Module, x: Tensor, class_index: int | None = None) -> Tensor:
    """Class activation maps (Zhou et al. 2016) of a GAP model (``vgg_gap``): B x 1 x h x w, >= 0.

    ``model`` may be a ``PixelModel`` wrapper; the GAP classifier is found on the inner model.
    """
    if not has_cam(model):
        raise ValueError("CAM needs a global-average-pooling model such as 'vgg_gap'")
    with torch.no_grad():
        out = model(x)
        return cam_from_features(model, out.features, _class_index(out.logits, class_index))


def grad_cam(model: nn.Module, x: Tensor, class_index: int | Tensor | None = None) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on the last spatial features: B x 1 x h x w, >= 0."""
    features, grads = _features_and_gradients(model, x, class_index)
    return grad_cam_from_gradients(features, grads)


def _features_and_gradients(model: nn.Module, x: Tensor, class_index: int | Tensor | None
                            ) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        out = model(x)
        classes = _class_index(out.logits, class_index)
        selected = out.logits.gather(1, classes[:, None]).sum()
        (grads,) = torch.autograd.grad(selected, out.features)
    return out.features.detach(), grads


def has_cam(model: nn.Module) -> bool:
    """Whether ``cam`` applies: a global-average-pooling model (``model`` may be a ``PixelModel``)."""
    return bool(getattr(getattr(model, "model", model), "gap", False))


def cam_from_features(model: nn.Module, features: Tensor, classes: Tensor) -> Tensor:
    """CAM of already computed last spatial ``features`` (B x C x h x w) of a GAP model for one
    class per image (``classes``, int64 B): B x 1 x h x w, >= 0. Same maps as ``cam``."""
    inner = getattr(model, "model", model)
    if not has_cam(model):
        raise ValueError("CAM needs a global-average-pooling model such as 'vgg_gap'")
    weights = inner.classifier.weight[classes]  # B x C
    return F.relu(torch.einsum("bc,bchw->bhw", weights.float(), features.float())[:, None])


def grad_cam_from_gradients(features: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM from the last spatial features and the class score's gradient with respect to
    them (both B x C x h x w): channel weights are the spatial mean of the gradient."""
    weights = grads.float().mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * features.float()).sum(dim=1, keepdim=True))


def grad_cam_plus_plus_from_gradients(features: Tensor, grads: Tensor, eps: float = 0.0) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018) from features and the class score's gradient.

    The paper's closed form for an exponential of the score: higher derivatives become powers of
    the first, so one gradient suffices. Each position's coefficient is
    ``g^2 / (2 g^2 + sum(A) g^3 + eps)`` (zero where the gradient is zero); channel weights sum
    the coefficients times ``relu(g)`` over positions. ``eps`` is 0 (the exact formula) by
    default: pytorch-grad-cam adds 1e-6, which dominates wherever gradients are below ~1e-3.
    """
    grads, features = grads.float(), features.float()
    squared, cubed = grads.pow(2), grads.pow(3)
    activation_sum = features.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * squared + activation_sum * cubed + eps
    denominator = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(grads != 0, squared / denominator, torch.zeros_like(grads))
    weights = (alpha * F.relu(grads)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * features).sum(dim=1, keepdim=True))


def grad_cam_plus_plus(model: nn.Module, x: Tensor, class_index: int | Tensor | None = None,
                       eps: float = 0.0) -> Tensor:
    """Grad-CAM++ on the last spatial features: B x 1 x h x w, >= 0 (see
    ``grad_cam_plus_plus_from_gradients``)."""
    features, grads = _features_and_gradients(model, x, class_index)
    return grad_cam_plus_plus_from_gradients(features, grads, eps)


def centre_prior(height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """A Gaussian blob in the middle of the image (sigma as a fraction of each side), summing to 1:
    the trivial guess every saliency method should beat."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive; got {sigma}")
    ys = (np.arange(height) + 0.5) / height - 0.5
    xs = (np.arange(width) + 0.5) / width - 0.5
    blob = np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return (blob / blob.sum()).astype(np.float32)
