"""ResNeXt-29 of Xie, Girshick, Dollár, Tu & He (2017), "Aggregated Residual Transformations
for Deep Neural Networks" (CVPR), CIFAR variant: ``resnext29_8x64d``.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierModel, conv1x1, conv3x3, init_weights
from .registry import register_model

__all__ = ["CifarResNeXt"]


# ---------------------------------------------------------------------------
# ResNeXt-29 (Xie et al., 2017), CIFAR variant
# ---------------------------------------------------------------------------


class _ResNeXtBottleneck(nn.Module):
    """1x1 reduce -> grouped 3x3 -> 1x1 expand (each with BN), + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, group_width: int) -> None:
        super().__init__()
        inner = cardinality * group_width
        self.conv_reduce = conv1x1(in_ch, inner)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_grouped = conv3x3(inner, inner, stride, groups=cardinality)
        self.bn_grouped = nn.BatchNorm2d(inner)
        self.conv_expand = conv1x1(inner, out_ch)
        self.bn_expand = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn_grouped(self.conv_grouped(out)))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class CifarResNeXt(ClassifierModel):
    """ResNeXt-29 (``cardinality`` x ``base_width``d) for CIFAR; D = 256 * widen.

    3x3 stem with 64 channels, three stages of three bottlenecks with output
    widths 64*widen * (1, 2, 4) = 256/512/1024 (widen=4) and grouped widths
    ``cardinality * base_width * (1, 2, 4)`` = 512/1024/2048 for 8x64d.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 29,
        cardinality: int = 8,
        base_width: int = 64,
        widen: int = 4,
    ) -> None:
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.conv1 = conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        stages = []
        for i, mult in enumerate((1, 2, 4)):
            out_ch = 64 * widen * mult
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_ResNeXtBottleneck(in_ch, out_ch, stride, cardinality, base_width * mult))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self._set_head(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return x


@register_model
def resnext29_8x64d(num_classes: int, in_channels: int = 3, image_size: int = 32) -> CifarResNeXt:
    """ResNeXt-29, cardinality 8, base width 64, widen 4; D=1024."""
    return CifarResNeXt(num_classes, in_channels, depth=29, cardinality=8, base_width=64, widen=4)
