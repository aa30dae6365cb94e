"""CIFAR-size classifiers: ``small_cnn``, the CIFAR ResNets, the pre-activation ResNets and WRN-40-4.

References: He, Zhang, Ren & Sun (2016), "Deep Residual Learning for Image
Recognition" (CVPR) and "Identity Mappings in Deep Residual Networks" (ECCV);
Zagoruyko & Komodakis (2016), "Wide Residual Networks" (BMVC).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierModel, conv1x1, conv3x3, init_weights
from .registry import register_model

__all__ = ["SmallCNN", "CifarResNet", "PreActResNet", "WideResNet"]


# ---------------------------------------------------------------------------
# small_cnn
# ---------------------------------------------------------------------------


class SmallCNN(ClassifierModel):
    """Three conv-BN-ReLU blocks (32/64/128 channels) + global average pooling.

    A 2x2 max-pool follows a block while the current spatial size is at least 4,
    so 8x8 inputs go 8->4->2->2, 28x28 go 28->14->7->3 and 32x32 go
    32->16->8->4. Penultimate dimension ``D = widths[-1] = 128``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 28,
        widths: Sequence[int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        blocks = []
        size, ch = int(image_size), in_channels
        for width in widths:
            layers: list[nn.Module] = [
                conv3x3(ch, width),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            blocks.append(nn.Sequential(*layers))
            ch = width
        self.blocks = nn.Sequential(*blocks)
        self._set_head(ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(x)


# ---------------------------------------------------------------------------
# CIFAR ResNet-20 / 56 (He et al., 2016, Sec. 4.2)
# ---------------------------------------------------------------------------


class _ShortcutA(nn.Module):
    """Option-A shortcut: strided identity with zero-padded extra channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_ch - in_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            lo = self.pad // 2
            x = F.pad(x, (0, 0, 0, 0, lo, self.pad - lo))
        return x


class _BasicBlock(nn.Module):
    """Post-activation basic block: conv-BN-ReLU-conv-BN, + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ShortcutA(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(ClassifierModel):
    """ResNet-(6n+2) for CIFAR: stages of 16/32/64 channels, ``n`` blocks each; D=64.

    ``shortcut="A"`` (default, as in the paper's CIFAR experiments) uses
    parameter-free zero-padding shortcuts; ``"B"`` uses 1x1 conv + BN projections.
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, shortcut: str = "A") -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        in_ch = 16
        for i, width in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(_BasicBlock(in_ch, width, stride, shortcut))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self._set_head(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x


# ---------------------------------------------------------------------------
# Pre-activation ResNet-18 / 34 and WRN-40-4
# ---------------------------------------------------------------------------


class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., ECCV 2016; also the WRN block).

    BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, added to the input; when the
    shape changes, the shortcut is a 1x1 conv applied to the pre-activated input.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.dropout = float(dropout)
        self.shortcut = conv1x1(in_ch, out_ch, stride) if (stride != 1 or in_ch != out_ch) else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + shortcut


def _preact_stage(in_ch: int, out_ch: int, num_blocks: int, stride: int, dropout: float = 0.0) -> nn.Sequential:
    blocks = [_PreActBlock(in_ch, out_ch, stride, dropout)]
    blocks += [_PreActBlock(out_ch, out_ch, 1, dropout) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class PreActResNet(ClassifierModel):
    """Pre-activation ResNet for 32x32 inputs (Kuang Liu's CIFAR layout); D=512.

    3x3 stride-1 stem, four stages of 64/128/256/512 channels (strides 1, 2, 2, 2).
    Unlike ``pytorch-cifar`` we add the final BN-ReLU that He et al. (ECCV 2016)
    place before global pooling, so the penultimate features are post-activation.
    """

    def __init__(self, num_blocks: Sequence[int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, 64)
        in_ch = 64
        stages = []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stages.append(_preact_stage(in_ch, width, n, stride=1 if i == 0 else 2))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self._set_head(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.relu(self.bn(x))


class WideResNet(ClassifierModel):
    """WRN-``depth``-``widen`` (Zagoruyko & Komodakis, 2016); D = 64 * widen.

    ``(depth - 4) / 6`` pre-activation blocks per group, groups of
    16k/32k/64k channels (strides 1, 2, 2), final BN-ReLU and global pooling.
    """

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3x3(in_channels, 16)
        in_ch = 16
        stages = []
        for i, width in enumerate(widths):
            stages.append(_preact_stage(in_ch, width, n, stride=1 if i == 0 else 2, dropout=dropout))
            in_ch = width
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self._set_head(in_ch, num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        return F.relu(self.bn(x))


# ---------------------------------------------------------------------------
# Registered builders: (num_classes, in_channels, image_size) -> model
# ---------------------------------------------------------------------------


@register_model
def small_cnn(num_classes: int, in_channels: int = 1, image_size: int = 28) -> SmallCNN:
    """Three conv-BN-ReLU blocks (32/64/128) for tiny inputs; D=128."""
    return SmallCNN(num_classes, in_channels, image_size)


def _cifar_resnet(depth: int, num_classes: int, in_channels: int = 3, image_size: int = 32) -> CifarResNet:
    """CIFAR ResNet-``depth`` (He et al., 2016, Sec. 4.2), option-A shortcuts; D=64."""
    return CifarResNet(depth, num_classes, in_channels)


def _preact_resnet(
    num_blocks: Sequence[int], num_classes: int, in_channels: int = 3, image_size: int = 32
) -> PreActResNet:
    """Pre-activation ResNet with ``num_blocks`` per stage, 32x32 layout; D=512."""
    return PreActResNet(num_blocks, num_classes, in_channels)


register_model("resnet20")(partial(_cifar_resnet, 20))
register_model("resnet56")(partial(_cifar_resnet, 56))
register_model("preact_resnet18")(partial(_preact_resnet, (2, 2, 2, 2)))
register_model("preact_resnet34")(partial(_preact_resnet, (3, 4, 6, 3)))


@register_model
def wrn40_4(num_classes: int, in_channels: int = 3, image_size: int = 32) -> WideResNet:
    """WRN-40-4 (Zagoruyko & Komodakis, 2016), dropout 0; D=256."""
    return WideResNet(40, 4, num_classes, in_channels)
