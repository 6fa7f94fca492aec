"""Pre-activation bottleneck ResNet-164 for 32x32 inputs, with the paper's RN-att2 attention.

Stages of 64/128/256 output channels at 32/16/8 (18 bottleneck blocks each). RN-att2 taps the
stage-2 output (128 x 16x16) and the stage-3 output (256 x 8x8); its global feature ``g`` (256-d)
comes from an extra head (BN-ReLU, pool, conv 256, pool, FC 256), as in the authors' code.

What a tap sees (``tap_features``): in a pre-activation ResNet a stage's output is the raw residual
stream; batch norm and ReLU only come at the start of the next block. ``"activated"`` (default)
passes the tap through BN-ReLU first: stage 3 uses the final BN-ReLU, i.e. exactly the features the
plain ResNet-164 average-pools, so attention replaces that pooling like for like; stage 2 gets a
BN-ReLU of its own. ``"residual"`` attends over the raw stream (the zoo's first RN-att2 files).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ltpa.choices import check_choice
from ltpa.layers.attention import DEFAULT_DP_SCALE, AttentionBlock, stage_normalisations
from ltpa.models.heads import AttentionHead, attend_and_classify
from ltpa.models.outputs import ModelOutput, check_input
from ltpa.models.vgg import scaled

STAGE_CHANNELS = (64, 128, 256)
RESNET_TAPS = (2, 3)
TAP_FEATURES = ("activated", "residual")
DEFAULT_TAP_FEATURES = "activated"


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (stride), BN-ReLU-conv1x1 (x4), plus the shortcut."""

    # compile_scope="blocks" compiles each block on its own (ltpa.training): the 54 blocks of a
    # ResNet-164 then share a few compilations instead of one very large graph.
    repeated_block = True

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        mid = out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class ResNetAtt(nn.Module):
    """Pre-activation ResNet (depth 9n+2) with attention at stage outputs ``taps`` or none."""

    def __init__(
        self,
        num_classes: int = 10,
        taps: tuple[int, ...] = (2, 3),
        head: str = "concat",
        compatibility: str = "pc",
        normalisation: str = "softmax",
        match: str = "project_l",
        dp_scale: str = DEFAULT_DP_SCALE,
        temperature: float | str = 1.0,
        stage_classifiers: bool = False,
        tap_features: str = DEFAULT_TAP_FEATURES,
        width: float = 1.0,
        depth: int = 164,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if (depth - 2) % 9 or depth < 11:
            raise ValueError(f"bottleneck ResNet depth must be 9n+2 (e.g. 56, 110, 164); got {depth}")
        if width <= 0:
            raise ValueError(f"width must be positive; got {width}")
        bad = [t for t in taps if t not in RESNET_TAPS]
        if bad:
            raise ValueError(
                f"ResNet-att taps stage outputs {RESNET_TAPS} only (RN-att2); got {list(taps)}"
            )
        check_choice("tap features", tap_features, TAP_FEATURES)
        self.taps = tuple(sorted(taps))
        self.tap_features = tap_features
        blocks_per_stage = (depth - 2) // 9
        channels = [scaled(c, width) for c in STAGE_CHANNELS]
        self.stem = nn.Conv2d(3, scaled(16, width), 3, padding=1, bias=False)
        stages, in_channels = [], scaled(16, width)
        for stage_index, out_channels in enumerate(channels):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(PreActBottleneck(in_channels, out_channels, stride))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.feature_dim = in_channels
        self.stage_names = tuple(f"stage{t}" for t in self.taps)
        if not self.taps:
            # The plain ResNet-164: global average pooling then one linear layer, so CAM applies
            # (ltpa.saliency.has_cam reads ``gap``).
            self.gap = True
            self.global_head = None
            self.attention = nn.ModuleList()
            self.classifier: nn.Module = nn.Linear(in_channels, num_classes)
            return
        global_dim = scaled(256, width)
        self.global_head = nn.Sequential(
            nn.MaxPool2d(2),
            nn.Conv2d(in_channels, global_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(global_dim),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(global_dim, global_dim),
        )
        self.attention = nn.ModuleList(
            AttentionBlock(channels[t - 1], global_dim, compatibility, stage_norm, match,
                           dp_scale, temperature)
            for t, stage_norm in zip(self.taps, stage_normalisations(normalisation, len(self.taps)))
        )
        # BN-ReLU for each activated tap before the last stage (the last one reuses final_norm).
        self.tap_norms = nn.ModuleDict(
            {
                f"stage{t}": nn.Sequential(nn.BatchNorm2d(channels[t - 1]), nn.ReLU(inplace=True))
                for t in self.taps
                if tap_features == "activated" and t < len(STAGE_CHANNELS)
            }
        )
        self.classifier = AttentionHead(
            [block.descriptor_dim for block in self.attention], num_classes, head, dropout,
            stage_classifiers,
        )

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x)
        x = self.stem(x)
        tapped: list[Tensor] = []
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if index in self.taps:
                tapped.append(x)
        features = self.final_norm(x)
        if self.global_head is None:
            logits = self.classifier(features.mean(dim=(2, 3)))
            return ModelOutput(logits, (), (), (), features)
        if self.tap_features == "activated":
            tapped = [
                self.tap_norms[name](local) if name in self.tap_norms else features
                for name, local in zip(self.stage_names, tapped)
            ]
        global_feature = self.global_head(features)
        return attend_and_classify(
            self.attention, self.classifier, tapped, global_feature, self.stage_names, features
        )
