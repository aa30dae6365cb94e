"""Forward FLOPs of a model, counted by PyTorch's own ``FlopCounterMode``."""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .registry import _is_int

__all__ = ["count_flops"]


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs per image: ``2 * MACs`` of the convolutions and matrix products.

    Runs one ``(1, *input_shape)`` zero batch in eval mode under ``no_grad`` and
    ``torch.utils.flop_counter.FlopCounterMode``, on the device and dtype of the
    model's parameters (CPU for a freshly built model). A convolution costs
    ``out.numel() * (in_channels / groups) * kh * kw`` MACs, a linear layer
    ``out.numel() * in_features``; biases, normalisation, activations and pooling
    are not counted. The training flag is restored.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(_is_int(s) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    shape = tuple(operator.index(s) for s in shape)

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if (param is not None and param.is_floating_point()) else torch.float32
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
