"""torchvision's ImageNet ResNets (He et al., 2016), ``resnet50`` and ``resnet101``, the only registered models with
pretrained weights. Their state dicts are torchvision's: a checkpoint loads into ``torchvision.models.resnet50(
num_classes=C)`` with ``strict=True``; the head ``fc`` is also reachable as ``classifier`` (the models' contract).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

from .base import ClassifierModel
from .registry import register_model

__all__ = ["TorchvisionResNet"]


def _torchvision_resnet_spec(arch: str):
    """torchvision's constructor and weights enum for the ResNet ``arch`` (torchvision's own registry)."""
    import torchvision.models as tvm

    allowed = sorted(n for n in tvm.list_models(module=tvm) if n.startswith("resnet"))
    if arch not in allowed:
        raise ValueError(f"unknown torchvision ResNet {arch!r}; allowed: {', '.join(allowed)}")
    return tvm.get_model_builder(arch), tvm.get_model_weights(arch)


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
    """A torchvision ResNet (``arch``, e.g. ``"resnet50"``) whose ``fc`` is also its ``classifier``.

    ``D = net.fc.in_features`` (2048 for the registered ``resnet50`` / ``resnet101``).

    Submodule names match torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``), so
    ``torchvision_model.load_state_dict(model.state_dict(), strict=True)`` works both ways; state dicts
    of run-directory format 1, which named the head ``classifier``, still load. With ``pretrained=True`` the ImageNet
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
        self.fc = net.fc if net.fc.out_features == num_classes else nn.Linear(self.num_features, num_classes)
        self._register_load_state_dict_pre_hook(_rename_old_head)

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _rename_old_head(state_dict, prefix, *args) -> None:
    """Run-directory format 1 named torchvision's ``fc`` ``classifier``: rename those keys while loading."""
    for key in [k for k in state_dict if k.startswith(prefix + "classifier.")]:
        state_dict[prefix + "fc." + key[len(prefix + "classifier."):]] = state_dict.pop(key)


def _torchvision_resnet(
    arch: str, num_classes: int, in_channels: int = 3, image_size: int = 224, pretrained: bool = False
) -> TorchvisionResNet:
    """torchvision ResNet ``arch`` (ImageNet layout), optionally with ImageNet weights; D=2048."""
    return TorchvisionResNet(arch, num_classes, in_channels, pretrained)


register_model("resnet50", pretrained=True)(partial(_torchvision_resnet, "resnet50"))
register_model("resnet101", pretrained=True)(partial(_torchvision_resnet, "resnet101"))
