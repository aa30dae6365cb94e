"""Image classifiers used by the COLAM experiments.

Every model derives from :class:`ClassifierModel`, which splits the network
into a *backbone* producing a penultimate feature vector of size ``D``
(``num_features``) and a final linear layer ``classifier`` (``nn.Linear(D, C)``).
The rows of ``classifier.weight`` are the class *templates* used for the
template-plane projections of Müller, Kornblith & Hinton (2019), "When does
label smoothing help?" (NeurIPS 2019).

The split follows timm's convention::

    logits = model(x)
           = model.forward_head(model.forward_features(x))
           = model.classifier(model.features(x))

Here ``forward_features`` already returns the globally pooled ``(B, D)`` vector,
so ``features`` is an alias that is guaranteed to return exactly the input of
``classifier``.

Architectures (registry name -> reference, penultimate dimension ``D``):

* ``small_cnn`` -- three conv-BN-ReLU blocks (32/64/128 channels) for tiny
  inputs such as scikit-learn digits (1x8x8) and Fashion-MNIST (1x28x28); D=128.
* ``resnet20``, ``resnet56`` -- CIFAR ResNets of He, Zhang, Ren & Sun (2016),
  "Deep Residual Learning for Image Recognition" (CVPR), Sec. 4.2: three stages
  of 16/32/64 channels with n=3 / n=9 basic blocks, parameter-free option-A
  shortcuts; D=64.
* ``preact_resnet18``, ``preact_resnet34`` -- pre-activation ResNets of He,
  Zhang, Ren & Sun (2016), "Identity Mappings in Deep Residual Networks"
  (ECCV), in the 32x32 CIFAR layout of Kuang Liu's ``pytorch-cifar`` (3x3
  stem, no max-pool) that Li et al. (2022) use; D=512.
* ``wrn40_4`` -- Wide ResNet WRN-40-4 of Zagoruyko & Komodakis (2016), "Wide
  Residual Networks" (BMVC); dropout 0 by default; D=256.
* ``densenet_bc_100`` -- DenseNet-BC (L=100, k=12, compression 0.5) of Huang,
  Liu, van der Maaten & Weinberger (2017), "Densely Connected Convolutional
  Networks" (CVPR); D=342.
* ``resnext29_8x64d`` -- ResNeXt-29 (8x64d) of Xie, Girshick, Dollár, Tu & He
  (2017), "Aggregated Residual Transformations for Deep Neural Networks"
  (CVPR), CIFAR variant; D=1024.
* ``resnet50``, ``resnet101`` -- torchvision's ImageNet ResNets (He et al.,
  2016) with torchvision's ``fc`` exposed as ``classifier``; D=2048.

COLAM itself (Li et al., 2022, co-learning of networks and class-wise soft
labels) trains these networks jointly with per-class soft label vectors.

All CIFAR-style models use adaptive global average pooling, so they accept
1- or 3-channel inputs of any reasonable spatial size (e.g. 1x28x28).
Convolutions are initialised with Kaiming-normal (fan-out, ReLU), BatchNorm
with weight 1 / bias 0, and linear biases with 0; no model draws random
numbers after construction (dropout is off by default).

:func:`count_flops` counts forward FLOPs (2 x multiply-accumulates) of the
``Conv2d`` and ``Linear`` layers of a model for one image.
"""

from __future__ import annotations

import operator
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MODELS",
    "ClassifierModel",
    "available_models",
    "build_model",
    "count_flops",
    "SmallCNN",
    "CifarResNet",
    "PreActResNet",
    "WideResNet",
    "DenseNetBC",
    "CifarResNeXt",
    "TorchvisionResNet",
]

#: Smallest spatial input size accepted by :func:`build_model`.
MIN_IMAGE_SIZE = 8


# ---------------------------------------------------------------------------
# Base class and helpers
# ---------------------------------------------------------------------------


class ClassifierModel(nn.Module):
    """Base class: a feature extractor followed by one linear classifier.

    Subclasses build their backbone, set ``self.num_features`` (``D``) and
    ``self.classifier = nn.Linear(D, num_classes)``, and implement
    :meth:`forward_features` returning the pooled ``(B, D)`` representation.

    Attributes:
        classifier: final ``nn.Linear``; ``classifier.weight`` has shape
            ``(C, D)`` and its rows are the class templates.
        num_features: the penultimate dimension ``D``.
        num_classes: the number of classes ``C``.
    """

    classifier: nn.Linear
    num_features: int
    num_classes: int

    def forward_features(self, x: Tensor) -> Tensor:
        """Backbone forward pass; returns the pooled ``(B, D)`` features."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation, shape ``(B, D)``: the exact classifier input."""
        feats = self.forward_features(x)
        if feats.dim() != 2:
            feats = torch.flatten(feats, 1)
        return feats

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Apply the head: ``feats`` if ``pre_logits`` else ``classifier(feats)``."""
        if feats.dim() != 2:
            feats = torch.flatten(feats, 1)
        return feats if pre_logits else self.classifier(feats)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)``, equal to ``classifier(features(x))``."""
        return self.forward_head(self.features(x))

    def _set_head(self, num_features: int, num_classes: int) -> None:
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(self.num_features, self.num_classes)


def _init_weights(module: nn.Module) -> None:
    """Standard initialisation: Kaiming-normal convs, BN (1, 0), zero linear bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


def _global_pool(x: Tensor) -> Tensor:
    """Global average pooling to ``(B, C)`` (works for any spatial size)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


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
                _conv3x3(ch, width),
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
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return _global_pool(self.blocks(x))


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
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride == 1 and in_ch == out_ch:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ShortcutA(in_ch, out_ch, stride)
        else:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))

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
        self.conv1 = _conv3x3(in_channels, 16)
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
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return _global_pool(x)


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
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.dropout = float(dropout)
        self.shortcut = _conv1x1(in_ch, out_ch, stride) if (stride != 1 or in_ch != out_ch) else None

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
        self.conv1 = _conv3x3(in_channels, 64)
        in_ch = 64
        stages = []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            stages.append(_preact_stage(in_ch, width, n, stride=1 if i == 0 else 2))
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self._set_head(in_ch, num_classes)
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return _global_pool(F.relu(self.bn(x)))


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
        self.conv1 = _conv3x3(in_channels, 16)
        in_ch = 16
        stages = []
        for i, width in enumerate(widths):
            stages.append(_preact_stage(in_ch, width, n, stride=1 if i == 0 else 2, dropout=dropout))
            in_ch = width
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self._set_head(in_ch, num_classes)
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        return _global_pool(F.relu(self.bn(x)))


# ---------------------------------------------------------------------------
# DenseNet-BC (Huang et al., 2017)
# ---------------------------------------------------------------------------


class _DenseBottleneck(nn.Module):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k); output concatenated to the input."""

    def __init__(self, in_ch: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _conv1x1(in_ch, 4 * growth)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = _conv3x3(4 * growth, growth)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class _Transition(nn.Module):
    """BN-ReLU-Conv1x1 (compression) followed by 2x2 average pooling."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_ch)
        self.conv = _conv1x1(in_ch, out_ch)

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
        self.conv1 = _conv3x3(in_channels, ch)
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
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.dense(self.conv1(x))
        return _global_pool(F.relu(self.bn(x)))


# ---------------------------------------------------------------------------
# ResNeXt-29 (Xie et al., 2017), CIFAR variant
# ---------------------------------------------------------------------------


class _ResNeXtBottleneck(nn.Module):
    """1x1 reduce -> grouped 3x3 -> 1x1 expand (each with BN), + shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cardinality: int, group_width: int) -> None:
        super().__init__()
        inner = cardinality * group_width
        self.conv_reduce = _conv1x1(in_ch, inner)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_grouped = _conv3x3(inner, inner, stride, groups=cardinality)
        self.bn_grouped = nn.BatchNorm2d(inner)
        self.conv_expand = _conv1x1(inner, out_ch)
        self.bn_expand = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
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
        self.conv1 = _conv3x3(in_channels, 64)
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
        _init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return _global_pool(x)


# ---------------------------------------------------------------------------
# torchvision ResNet-50 / 101
# ---------------------------------------------------------------------------


def _torchvision_resnet_spec(arch: str):
    import torchvision.models as tvm

    specs = {
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
        "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
    }
    if arch not in specs:
        raise ValueError(f"unknown torchvision ResNet {arch!r}; allowed: {', '.join(sorted(specs))}")
    return specs[arch]


def _load_pretrained_state_dict(arch: str, weights) -> dict:
    """Fetch torchvision weights (torch.hub cache first); RuntimeError on failure."""
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, map_location="cpu")
    except Exception as exc:  # network down, cache missing, corrupt file, ...
        raise RuntimeError(
            f"could not obtain pretrained weights for {arch!r} ({weights}) from {weights.url}: {exc}. "
            f"This machine may be offline; place the file in {torch.hub.get_dir()}/checkpoints "
            f"or use pretrained=False."
        ) from exc


class TorchvisionResNet(ClassifierModel):
    """torchvision ``resnet50`` / ``resnet101`` with ``fc`` exposed as ``classifier``; D=2048.

    Submodule names match torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``)
    except ``fc``, which is ``classifier``. With ``pretrained=True`` the ImageNet
    ``DEFAULT`` weights are loaded (a ``RuntimeError`` is raised if they cannot be
    obtained); the classifier is re-initialised when ``num_classes != 1000`` and,
    for ``in_channels == 1``, the stem kernel is the sum of the RGB kernels.
    With ``pretrained=False`` the network is never accessed.
    """

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        ctor, weights_enum = _torchvision_resnet_spec(arch)
        if pretrained:
            weights = weights_enum.DEFAULT
            state = _load_pretrained_state_dict(arch, weights)
            net = ctor(weights=None)
            net.load_state_dict(state)
        else:
            net = ctor(weights=None, num_classes=num_classes)

        if in_channels != 3:
            old = net.conv1
            new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            if pretrained and in_channels == 1:
                with torch.no_grad():
                    new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
            else:
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            net.conv1 = new

        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.num_features = int(net.fc.in_features)
        self.num_classes = int(num_classes)
        if net.fc.out_features == num_classes:
            self.classifier = net.fc
        else:
            self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return _global_pool(x)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

#: Builder signature: ``builder(num_classes, in_channels, image_size, pretrained)``.
Builder = Callable[[int, int, int, bool], ClassifierModel]


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(
            f"no pretrained weights are available for {name!r}; pretrained=True is only "
            f"supported for: resnet50, resnet101"
        )


def _build_small_cnn(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
    _no_pretrained("small_cnn", pretrained)
    return SmallCNN(num_classes, in_channels, image_size)


def _cifar_resnet(depth: int, name: str) -> Builder:
    def build(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
        _no_pretrained(name, pretrained)
        return CifarResNet(depth, num_classes, in_channels)

    build.__doc__ = f"CIFAR ResNet-{depth} (He et al., 2016), D=64."
    return build


def _preact(num_blocks: Sequence[int], name: str) -> Builder:
    def build(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
        _no_pretrained(name, pretrained)
        return PreActResNet(num_blocks, num_classes, in_channels)

    build.__doc__ = f"Pre-activation {name} for 32x32 inputs, D=512."
    return build


def _build_wrn40_4(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
    _no_pretrained("wrn40_4", pretrained)
    return WideResNet(40, 4, num_classes, in_channels)


def _build_densenet_bc_100(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
    _no_pretrained("densenet_bc_100", pretrained)
    return DenseNetBC(100, 12, num_classes, in_channels, compression=0.5)


def _build_resnext29_8x64d(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
    _no_pretrained("resnext29_8x64d", pretrained)
    return CifarResNeXt(num_classes, in_channels, depth=29, cardinality=8, base_width=64, widen=4)


def _torchvision(arch: str) -> Builder:
    def build(num_classes: int, in_channels: int, image_size: int, pretrained: bool) -> ClassifierModel:
        return TorchvisionResNet(arch, num_classes, in_channels, pretrained)

    build.__doc__ = f"torchvision {arch} (ImageNet layout), D=2048."
    return build


#: Registry: model name -> builder ``(num_classes, in_channels, image_size, pretrained)``.
MODELS: dict[str, Builder] = {
    "small_cnn": _build_small_cnn,
    "resnet20": _cifar_resnet(20, "resnet20"),
    "resnet56": _cifar_resnet(56, "resnet56"),
    "preact_resnet18": _preact((2, 2, 2, 2), "preact_resnet18"),
    "preact_resnet34": _preact((3, 4, 6, 3), "preact_resnet34"),
    "wrn40_4": _build_wrn40_4,
    "densenet_bc_100": _build_densenet_bc_100,
    "resnext29_8x64d": _build_resnext29_8x64d,
    "resnet50": _torchvision("resnet50"),
    "resnet101": _torchvision("resnet101"),
}


def available_models() -> list[str]:
    """Sorted list of registered model names."""
    return sorted(MODELS)


def _is_int(value) -> bool:
    """True for Python/NumPy/0-d tensor integers (``operator.index``), not bools."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    pretrained: bool = False,
) -> ClassifierModel:
    """Build a registered classifier.

    Args:
        name: a key of :data:`MODELS` (see :func:`available_models`).
        num_classes: number of classes ``C`` (>= 2).
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: spatial input size (>= 8). Only ``small_cnn`` uses it (to
            decide where to max-pool); all other models pool adaptively.
        pretrained: load ImageNet weights (``resnet50``/``resnet101`` only).

    Raises:
        ValueError: unknown name or invalid argument.
        RuntimeError: ``pretrained=True`` and the weights cannot be obtained.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(available_models())}")
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not _is_int(in_channels) or in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    num_classes, in_channels, image_size = (operator.index(v) for v in (num_classes, in_channels, image_size))
    return MODELS[name](num_classes, in_channels, image_size, bool(pretrained))


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs per image of the ``Conv2d`` and ``Linear`` layers.

    Runs one ``(1, *input_shape)`` zero batch in eval mode under ``no_grad``
    with forward hooks, on the device of the model's parameters (CPU for a
    freshly built model), and returns ``2 * MACs``: a convolution costs
    ``out.numel() * (in_channels / groups) * kh * kw`` MACs, a linear layer
    ``out.numel() * in_features``. Biases, normalisation, activations and
    pooling are not counted. The training flag is restored and hooks removed.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    shape = tuple(operator.index(s) for s in shape)

    macs = 0

    def conv_hook(module: nn.Conv2d, inputs, output: Tensor) -> None:
        nonlocal macs
        kh, kw = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output: Tensor) -> None:
        nonlocal macs
        macs += output.numel() * module.in_features

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if (param is not None and param.is_floating_point()) else torch.float32

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(2 * macs)
