"""DenseNet-BC of Huang, Liu, van der Maaten & Weinberger (2017), "Densely Connected
Convolutional Networks" (CVPR), CIFAR variant: ``densenet_bc_100``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierModel, conv1x1, conv3x3, init_weights
from .registry import register_model

__all__ = ["DenseNetBC"]


# ---------------------------------------------------------------------------
# DenseNet-BC (Huang et al., 2017)
# ---------------------------------------------------------------------------


class _DenseBottleneck(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); output concatenated to the input."""

    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv1x1(in_ch, 4 * growth)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = conv3x3(4 * growth, growth)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class _Transition(nn.Module):
    """BN-ReLU-Conv1x1 (compression) followed by 2x2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = conv1x1(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(ClassifierModel):
    """DenseNet-BC for CIFAR: three dense blocks of ``(depth - 4) / 6`` bottlenecks.

    With depth 100, growth 12 and compression 0.5 the channel counts are
    24 -> 216 -> 108 -> 300 -> 150 -> 342, so D=342.
    """

    def __init__(
        self,
        depth: int,
        growth: int,
        num_classes: int,
        in_channels: int = 3,
        compression: float = 0.5,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = 2 * growth
        self.conv1 = conv3x3(in_channels, ch)
        blocks: list[nn.Module] = []
        for i in range(3):
            layers = []
            for _ in range(n):
                layers.append(_DenseBottleneck(ch, growth))
                ch += growth
            blocks.append(nn.Sequential(*layers))
            if i < 2:
                out_ch = int(ch * compression)
                blocks.append(_Transition(ch, out_ch))
                ch = out_ch
        self.dense = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(ch)
        self._set_head(ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.dense(self.conv1(x))
        return F.relu(self.bn(x))


@register_model
def densenet_bc_100(num_classes: int, in_channels: int = 3, image_size: int = 32) -> DenseNetBC:
    """DenseNet-BC, L=100, k=12, compression 0.5; D=342."""
    return DenseNetBC(100, 12, num_classes, in_channels, compression=0.5)
