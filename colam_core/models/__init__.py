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
           = model.classifier(model.forward_head(model.forward_features(x), pre_logits=True))
           = model.classifier(model.features(x))

``forward_features`` returns the un-pooled final feature map ``(B, D, H, W)``
(after the final BN-ReLU where the architecture has one); ``forward_head``
applies global average pooling and the classifier, or stops after pooling with
``pre_logits=True``. ``features(x)`` is that pooled ``(B, D)`` vector, exactly
the input of ``classifier``.

Models are registered by name with :func:`register_model` (as in timm), one
small builder per name; :data:`MODELS` maps name -> builder in registration
order and :func:`build_model` validates the arguments and builds one. Only
builders registered with ``pretrained=True`` (the torchvision ResNets) accept
``pretrained``; :func:`build_model` rejects it for every other model.

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
  2016) with torchvision's module names (their state dicts load strictly into
  torchvision's models); ``classifier`` is torchvision's ``fc``; D=2048.

COLAM itself (Li et al., 2022, co-learning of networks and class-wise soft
labels) trains these networks jointly with per-class soft label vectors.

All CIFAR-style models use adaptive global average pooling, so they accept
1- or 3-channel inputs of any reasonable spatial size (e.g. 1x28x28).
Convolutions are initialised with Kaiming-normal (fan-out, ReLU), BatchNorm
with weight 1 / bias 0, and linear biases with 0; no model draws random
numbers after construction (dropout is off by default).

:func:`count_flops` counts the forward FLOPs of a model for one image with
``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of the
convolutions and matrix products).

Submodules: ``base`` (:class:`ClassifierModel`, layer helpers), ``registry``
(:func:`register_model`, :data:`MODELS`, :func:`build_model`), ``cifar``
(SmallCNN, CIFAR and pre-activation ResNets, WRN), ``densenet``, ``resnext``,
``imagenet`` (torchvision ResNets) and ``flops``. Importing the package imports
the architecture modules, which registers their builders.
"""

from __future__ import annotations

from .base import ClassifierModel
from .registry import MIN_IMAGE_SIZE, MODELS, Builder, available_models, build_model, register_model

# Importing an architecture module registers its builders: this order is the registration order.
from .cifar import CifarResNet, PreActResNet, SmallCNN, WideResNet
from .densenet import DenseNetBC
from .resnext import CifarResNeXt
from .imagenet import TorchvisionResNet

from .flops import count_flops

__all__ = [
    "MODELS",
    "MIN_IMAGE_SIZE",
    "Builder",
    "ClassifierModel",
    "available_models",
    "build_model",
    "count_flops",
    "register_model",
    "SmallCNN",
    "CifarResNet",
    "PreActResNet",
    "WideResNet",
    "DenseNetBC",
    "CifarResNeXt",
    "TorchvisionResNet",
]
