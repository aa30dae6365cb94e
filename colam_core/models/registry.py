"""The model registry, filled by :func:`register_model` (modelled on timm's), and :func:`build_model`."""

from __future__ import annotations

import operator
import os
from typing import Callable

from .base import ClassifierModel

#: Builder signature: ``builder(num_classes, in_channels, image_size)``; a builder
#: registered with ``pretrained=True`` also takes the keyword ``pretrained``.
Builder = Callable[..., ClassifierModel]

#: Registry: model name -> builder, in registration order. Filled only by :func:`register_model`.
MODELS: dict[str, Builder] = {}

#: Names registered with ``pretrained=True`` (their builders can load ImageNet weights).
_HAS_PRETRAINED: set[str] = set()

#: Smallest spatial input size accepted by :func:`build_model`.
MIN_IMAGE_SIZE = 8


def _register(name: str, fn: Builder, pretrained: bool) -> Builder:
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"builder for {name!r} must be callable, got {fn!r}")
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = fn
    if pretrained:
        _HAS_PRETRAINED.add(name)
    return fn


def register_model(fn_or_name: Builder | str | None = None, /, *, pretrained: bool = False):
    """Register a builder under a model name (the function's ``__name__`` unless given).

    Usable as ``@register_model``, ``@register_model("name")``,
    ``@register_model(pretrained=True)`` or ``register_model("name")(builder)``
    (e.g. for a ``functools.partial`` of a family's builder). ``pretrained=True``
    declares that the builder accepts ``pretrained`` and can load weights;
    :func:`build_model` rejects ``pretrained=True`` for every other model.
    The builder is returned unchanged. A name registered twice raises ``ValueError``.
    """
    if callable(fn_or_name) and not isinstance(fn_or_name, str):
        return _register(getattr(fn_or_name, "__name__", None), fn_or_name, pretrained)

    def decorator(fn: Builder) -> Builder:
        name = fn_or_name if fn_or_name is not None else getattr(fn, "__name__", None)
        return _register(name, fn, pretrained)

    return decorator


def available_models(pretrained: bool = False) -> list[str]:
    """Registered model names in registration order (only those with pretrained weights if ``pretrained``)."""
    return [name for name in MODELS if not pretrained or name in _HAS_PRETRAINED]


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
    pretrained: bool | str = False,
) -> ClassifierModel:
    """Build a registered classifier.

    Args:
        name: a key of :data:`MODELS` (see :func:`available_models`).
        num_classes: number of classes ``C`` (>= 2).
        in_channels: 1 (grayscale) or 3 (RGB).
        image_size: spatial input size (>= 8). Only ``small_cnn`` uses it (to
            decide where to max-pool); all other models pool adaptively.
        pretrained: ``True`` loads torchvision's ImageNet weights, a path loads a local weights file
            (``torch.load(weights_only=True)``, shape-checked); the classifier is replaced for
            ``num_classes``. Only models registered with ``pretrained=True``
            (``available_models(pretrained=True)``).

    Raises:
        ValueError: unknown name or invalid argument, or ``pretrained`` for a model without pretrained
            weights; a weights file that does not fit the model (a ``ConfigError``, one line).
        RuntimeError: ``pretrained=True`` and the weights cannot be obtained.
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
    if not _is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not _is_int(in_channels) or in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels!r}")
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    num_classes, in_channels, image_size = (operator.index(v) for v in (num_classes, in_channels, image_size))
    builder = MODELS[name]
    if name in _HAS_PRETRAINED:
        return builder(num_classes, in_channels, image_size,
                       pretrained=pretrained if isinstance(pretrained, (str, os.PathLike)) else bool(pretrained))
    if pretrained:
        raise ValueError(
            f"no pretrained weights are available for {name!r}; pretrained=True is only "
            f"supported for: {', '.join(available_models(pretrained=True))}"
        )
    return builder(num_classes, in_channels, image_size)
