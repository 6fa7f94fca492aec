"""CAM applies to every model that ends in global average pooling and one linear layer."""
from __future__ import annotations

import pytest
import torch

import ltpa
from ltpa.registry import get_spec
from ltpa.saliency import cam, has_cam


@pytest.mark.parametrize("name", ["vgg_gap", "resnet164"])
def test_cam_applies_to_each_gap_model_and_its_map_adds_up_to_the_logit(name: str) -> None:
    torch.manual_seed(0)
    model = ltpa.create_model(name, num_classes=10).eval()
    assert get_spec(name).cam_applies and has_cam(model)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    classes = out.logits.argmax(dim=1)
    weights, bias = model.classifier.weight[classes], model.classifier.bias[classes]
    raw = torch.einsum("bc,bchw->bhw", weights, out.features)
    # What makes CAM exact: the logit is the map's mean plus the class bias.
    assert torch.allclose(raw.mean(dim=(1, 2)) + bias, out.logits.gather(1, classes[:, None])[:, 0], atol=1e-4)
    maps = cam(model, x)
    assert maps.shape == (2, 1, *out.features.shape[2:])
    assert torch.allclose(maps[:, 0], raw.clamp(min=0), atol=1e-5)


@pytest.mark.parametrize("name", ["vgg", "resnet_att2_concat_pc", "vgg_att3_concat_pc"])
def test_cam_is_refused_where_no_global_average_pooling_ends_the_model(name: str) -> None:
    model = ltpa.create_model(name, num_classes=10).eval()
    assert not get_spec(name).cam_applies and not has_cam(model)
    with pytest.raises(ValueError, match="global-average-pooling"):
        cam(model, torch.rand(1, 3, 32, 32))
