"""VGG-att (the paper's VGG for 32x32 inputs with attention at layers 7, 10, 13) and its baselines.

The first two max-pools of the usual CIFAR VGG are removed so that the tapped layers keep
32x32, 16x16 and 8x8 maps at a 32x32 input (tapping a stock VGG gives useless 8/4/2 maps).
Taps are read after the ReLU and before the following pool. Maps scale with the input size; the
pool before ``g`` is adaptive so any input of at least 32x32 works.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.layers.attention import DEFAULT_DP_SCALE, AttentionBlock, stage_normalisations
from ltpa.models.heads import AttentionHead, PlainHead, attend_and_classify
from ltpa.models.outputs import ModelOutput, check_input

# (channels, pool after this layer) for conv layers 1..15 at width 1.
VGG_LAYERS: tuple[tuple[int, bool], ...] = (
    (64, False), (64, False), (128, False), (128, False), (256, False), (256, False),
    (256, True),  # layer 7: tap l1, 32x32
    (512, False), (512, False), (512, True),  # layer 10: tap l2, 16x16
    (512, False), (512, False), (512, True),  # layer 13: tap l3, 8x8
    (512, True), (512, True),  # layers 14, 15
)
TAP_LAYERS = (7, 10, 13)
GLOBAL_DIM = 512


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 8, a multiple of 8 for tensor cores)."""
    return max(8, int(round(channels * width / 8)) * 8)


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGAtt(nn.Module):
    """VGG with trainable attention at ``taps`` (a subset of layers 7, 10, 13), or none (baseline).

    ``gap=True`` builds VGG-GAP: layers 1-13 then global average pooling and one linear layer,
    the class-activation-map (CAM) architecture; ``features`` then holds layer 13's 8x8 maps.
    """

    def __init__(
        self,
        num_classes: int = 10,
        taps: tuple[int, ...] = (7, 10, 13),
        head: str = "concat",
        compatibility: str = "pc",
        normalisation: str = "softmax",
        match: str = "project_l",
        dp_scale: str = DEFAULT_DP_SCALE,
        temperature: float | str = 1.0,
        stage_classifiers: bool = False,
        width: float = 1.0,
        dropout: float = 0.5,
        gap: bool = False,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive; got {width}")
        bad = [t for t in taps if t not in TAP_LAYERS]
        if bad:
            raise ValueError(f"VGG taps must be among layers {TAP_LAYERS}; got {list(taps)}")
        if gap and taps:
            raise ValueError("VGG-GAP has no attention taps")
        self.taps = tuple(sorted(taps))
        self.gap = gap
        n_layers = 13 if gap else len(VGG_LAYERS)
        layers, in_channels = [], 3
        self.pool_after: list[bool] = []
        for channels, pool in VGG_LAYERS[:n_layers]:
            out_channels = scaled(channels, width)
            layers.append(conv_bn_relu(in_channels, out_channels))
            self.pool_after.append(pool)
            in_channels = out_channels
        self.layers = nn.ModuleList(layers)
        self.feature_dim = in_channels
        global_dim = scaled(GLOBAL_DIM, width)
        self.stage_names = tuple(f"layer{t}" for t in self.taps)
        if gap:
            self.global_fc = None
            self.classifier: nn.Module = nn.Linear(in_channels, num_classes)
            self.attention = nn.ModuleList()
            return
        self.global_fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, global_dim))
        tap_dims = [scaled(VGG_LAYERS[t - 1][0], width) for t in self.taps]
        self.attention = nn.ModuleList(
            AttentionBlock(d, global_dim, compatibility, stage_norm, match, dp_scale, temperature)
            for d, stage_norm in zip(tap_dims, stage_normalisations(normalisation, len(self.taps)))
        )
        if self.taps:
            self.classifier = AttentionHead(
                [block.descriptor_dim for block in self.attention], num_classes, head, dropout,
                stage_classifiers,
            )
        else:
            self.classifier = PlainHead(global_dim, num_classes, dropout)

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x)
        tapped: list[Tensor] = []
        for index, (layer, pool) in enumerate(zip(self.layers, self.pool_after), start=1):
            x = layer(x)
            if index in self.taps:
                tapped.append(x)
            if index == 13:
                features = x
            if pool and not (self.gap and index == 13):
                x = F.max_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x
        if self.gap:
            logits = self.classifier(features.mean(dim=(2, 3)))
            return ModelOutput(logits, (), (), (), features)
        # At 32x32 the last pool leaves 1x1 already; larger inputs are pooled to 1x1 here.
        global_feature = self.global_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
        if not self.taps:
            return ModelOutput(self.classifier(global_feature), (), (), (), features)
        return attend_and_classify(
            self.attention, self.classifier, tapped, global_feature, self.stage_names, features
        )
