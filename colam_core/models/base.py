"""The :class:`ClassifierModel` contract and the layer helpers shared by the architectures."""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


class ClassifierModel(nn.Module):
    """Base class: a backbone producing a feature map, global average pooling, one linear classifier.

    Subclasses build their backbone, set ``self.num_features`` (``D``) and
    ``self.classifier = nn.Linear(D, num_classes)`` (see :meth:`_set_head`), and
    implement :meth:`forward_features` returning the un-pooled ``(B, D, H, W)``
    map. The head is shared (as in timm)::

        logits = model(x)
               = model.forward_head(model.forward_features(x))
               = model.classifier(model.features(x))

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
        """Backbone forward pass; returns the final ``(B, D, H, W)`` feature map, not pooled."""
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling + flatten, then ``classifier`` unless ``pre_logits``.

        ``x`` is a ``(B, D, H, W)`` map from :meth:`forward_features`; an already
        pooled ``(B, D)`` tensor is passed through unchanged. Returns the pooled
        ``(B, D)`` features if ``pre_logits`` else the ``(B, C)`` logits.
        """
        if x.dim() == 4:
            # a mean, not adaptive_avg_pool2d: the same pooling, and its CUDA backward is deterministic (that of
            # adaptive_avg_pool2d has no deterministic form: torch.use_deterministic_algorithms would raise)
            x = x.mean((2, 3))
        elif x.dim() != 2:
            raise ValueError(f"forward_head expects a (B, D, H, W) or (B, D) tensor, got shape {tuple(x.shape)}")
        return x if pre_logits else self.classifier(x)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation, shape ``(B, D)``: the exact classifier input."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, C)``, equal to ``classifier(features(x))``."""
        return self.forward_head(self.forward_features(x))

    def _set_head(self, num_features: int, num_classes: int) -> None:
        self.num_features = int(num_features)
        self.num_classes = int(num_classes)
        self.classifier = nn.Linear(self.num_features, self.num_classes)


def init_weights(module: nn.Module) -> None:
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


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)
