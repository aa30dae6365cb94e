"""Forward FLOPs of the ``Conv2d`` and ``Linear`` layers of a model."""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
from torch import Tensor

from .registry import _is_int

__all__ = ["count_flops"]


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
