"""Argument checks shared by the data modules: every bad value becomes a :class:`DataError`
naming the value and what is allowed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError


def _fmt_allowed(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _check_int(value, what: str, minimum: int | None = None, allow_none: bool = False) -> None:
    """Raise DataError unless ``value`` is an int (not bool) ``>= minimum``."""
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if ok and minimum is not None and value < minimum:
        ok = False
    if not ok:
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        if allow_none:
            need += " or None"
        raise DataError(f"{what}={value!r} is invalid; it must be {need}")


def _resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DataError(f"invalid device {device!r} ({e}); use e.g. 'cpu' or 'cuda'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


def _as_index_tensor(indices, n: int, what: str) -> Tensor:
    """Convert ``indices`` to a 1-D CPU LongTensor and check every entry is in ``[0, n)``."""
    try:
        t = torch.as_tensor(indices)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{what} must be a 1-D sequence of integers, got {type(indices).__name__}") from e
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise DataError(f"{what} must contain integers, got dtype {t.dtype}")
    t = t.detach().to("cpu", torch.long).reshape(-1) if t.dim() <= 1 else None
    if t is None:
        raise DataError(f"{what} must be 1-D")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        bad = t[(t < 0) | (t >= n)][0].item()
        raise DataError(f"{what} contains index {bad}, outside the allowed range 0..{n - 1}")
    return t

