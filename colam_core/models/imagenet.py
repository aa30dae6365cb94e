"""torchvision's ImageNet ResNets (He et al., 2016), ``resnet50`` and ``resnet101``, the only registered models with
pretrained weights. Their state dicts are torchvision's: a checkpoint loads into ``torchvision.models.resnet50(
num_classes=C)`` with ``strict=True``; the head ``fc`` is also reachable as ``classifier`` (the models' contract).
"""

from __future__ import annotations

import os
from functools import partial

import torch
import torch.nn as nn
from torch import Tensor

from colam_core.errors import ConfigError

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


def _torchvision_key(key: str) -> str:
    """A state-dict key as torchvision names it (DataParallel's ``module.`` dropped, our ``classifier`` is ``fc``)."""
    key = key.removeprefix("module.")
    return "fc." + key[len("classifier."):] if key.startswith("classifier.") else key


def _load_weights_file(arch: str, path, expected: dict) -> dict:
    """A local weights file for torchvision's ``arch``: read without running code (``weights_only=True``) and
    checked key by key against ``expected`` (the model's own state dict); a classifier of another size is
    dropped (it is replaced for the target classes anyway). Anything else raises a one-line ConfigError."""
    def refuse(why: str):
        raise ConfigError("pretrained", str(path), f"a {arch} weights file (a state dict with torchvision's "
                          f"names and shapes); {why}")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, a pickle that needs code, truncated, unreadable
        refuse(f"it cannot be read with torch.load(weights_only=True): "
               f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
    for key in ("state_dict", "model"):  # a training checkpoint around the weights (ours: last.pt's "model")
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        refuse(f"it holds a {type(state).__name__}, not a dict of tensors")
    state = {_torchvision_key(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items()
             if not (k.startswith("fc.") and k in expected and v.shape != expected[k].shape)}
    missing = [k for k in expected if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        refuse(f"{k} has shape {list(state[k].shape)} in the file and {list(expected[k].shape)} in {arch}"
               + (f" ({len(wrong) - 1} more tensors differ)" if len(wrong) > 1 else ""))
    if missing or unexpected:
        what = [f"{len(missing)} tensors missing (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else ""]
        refuse(", ".join(w for w in what if w) + " (weights of another architecture?)")
    return state


class TorchvisionResNet(ClassifierModel):
    """A torchvision ResNet (``arch``, e.g. ``"resnet50"``) whose ``fc`` is also its ``classifier``.

    ``D = net.fc.in_features`` (2048 for the registered ``resnet50`` / ``resnet101``).

    Submodule names match torchvision (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``), so
    ``torchvision_model.load_state_dict(model.state_dict(), strict=True)`` works both ways; state dicts
    of run-directory format 1, which named the head ``classifier``, still load. With ``pretrained=True`` the ImageNet
    ``DEFAULT`` weights are loaded (a ``RuntimeError`` is raised if they cannot be
    obtained); the classifier is re-initialised when ``num_classes != 1000`` and,
    for ``in_channels == 1``, the stem kernel is the sum of the RGB kernels. A path loads a local weights file
    (torchvision's names, or format 1's ``classifier``; ``weights_only=True``; a file that does not fit raises a
    one-line ``ConfigError``).
    With ``pretrained=False`` the network is never accessed.
    """

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, pretrained: bool | str = False) -> None:
        super().__init__()
        ctor, weights_enum = _torchvision_resnet_spec(arch)
        if isinstance(pretrained, (str, os.PathLike)):
            net = ctor(weights=None)
            net.load_state_dict(_load_weights_file(arch, pretrained, net.state_dict()), strict=False)
            pretrained = True
        elif pretrained:
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
    arch: str, num_classes: int, in_channels: int = 3, image_size: int = 224, pretrained: bool | str = False
) -> TorchvisionResNet:
    """torchvision ResNet ``arch`` (ImageNet layout), optionally with ImageNet weights; D=2048."""
    return TorchvisionResNet(arch, num_classes, in_channels, pretrained)


register_model("resnet50", pretrained=True)(partial(_torchvision_resnet, "resnet50"))
register_model("resnet101", pretrained=True)(partial(_torchvision_resnet, "resnet101"))
