"""Batched on-device augmentation of uint8 images: random crop (zero padding) and horizontal flip,
and the ``augment`` modes (:data:`AUGMENTS`) that select them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import DataError
from .checks import _check_int, _fmt_allowed

if TYPE_CHECKING:
    from .containers import DatasetInfo

AUGMENTS: tuple[str, ...] = ("auto", "crop_flip", "crop", "flip", "none")
"""Values accepted for the ``augment`` argument of :meth:`ImageData.train_batches`."""


def _check_augment(augment) -> None:
    if augment not in AUGMENTS:
        raise DataError(f"unknown augment {augment!r}; allowed: {_fmt_allowed(AUGMENTS)}")


def crop_flip_params(b: int, padding: int, flip: bool, generator: torch.Generator) -> dict:
    """The random offsets / flips :func:`crop_flip_uint8` draws for a batch of ``b`` images (CPU tensors)."""
    if padding > 0:
        shifts = torch.randint(0, 2 * padding + 1, (2, b), generator=generator) - padding
    else:
        shifts = torch.zeros(2, b, dtype=torch.long)
    flips = (torch.rand(b, generator=generator) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    return {"dy": shifts[0], "dx": shifts[1], "flip": flips}


def crop_flip_uint8(x: Tensor, padding: int, flip: bool, generator: torch.Generator,
                    return_params: bool = False, params: dict | None = None):
    """Batched random crop (zero padding ``padding``) and horizontal flip of a uint8 batch.

    Each output image ``out[i]`` is the ``H x W`` window at offset ``(dy[i] + p, dx[i] + p)``
    of the zero-padded input (``dy, dx`` uniform in ``[-p, p]``), mirrored left-right when
    ``flips[i]``.  Random numbers are drawn from the CPU ``generator`` and only the small
    offset / flag tensors are moved to ``x.device``; the pixels are moved with one ``take``
    (flat gather) from the zero-padded batch on the device.

    Returns the augmented batch (same dtype / device), plus ``{"dy", "dx", "flip"}`` (CPU
    tensors) when ``return_params``. ``params`` (from :func:`crop_flip_params`, one entry per
    row of ``x``) replaces the draw: a data-parallel rank draws for the whole global batch and
    applies its rows' share, so every image is augmented as in a single-process run.
    """
    if x.dim() != 4:
        raise DataError(f"crop_flip_uint8 expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    _check_int(padding, "padding", minimum=0)
    b, c, h, w = x.shape
    if params is None:
        params = crop_flip_params(b, padding, flip, generator)
    if padding == 0 and not flip:
        return (x, params) if return_params else x
    dev = x.device
    if dev.type == "cuda":  # one pinned asynchronous copy: a plain .to(cuda) of a CPU tensor syncs the stream
        packed = torch.stack([params["dy"], params["dx"], params["flip"].to(torch.long)]).pin_memory()
        packed = packed.to(dev, non_blocking=True)
        dy, dx, fl = packed[0], packed[1], packed[2].bool()
    else:
        dy, dx, fl = params["dy"].to(dev), params["dx"].to(dev), params["flip"].to(dev)
    hp, wp = h + 2 * padding, w + 2 * padding
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding)) if padding else x
    # output pixel (i, j) <- padded pixel (i + dy + p, j' + dx + p), j' = W-1-j when flipped
    rows = torch.arange(h, device=dev)[None, :] + (dy + padding)[:, None]  # (B, H)
    cols = torch.arange(w, device=dev)[None, :] + (dx + padding)[:, None]  # (B, W)
    cols = torch.where(fl[:, None], cols.flip(1), cols)
    plane = torch.arange(b * c, device=dev).view(b, c, 1, 1) * (hp * wp)
    flat = plane + (rows * wp)[:, None, :, None] + cols[:, None, None, :]  # (B, C, H, W)
    out = padded.reshape(-1).take(flat)
    return (out, params) if return_params else out


def _augment_settings(augment: str, info: DatasetInfo) -> tuple[int, bool]:
    """(padding, flip) for an ``augment`` mode of an in-memory dataset."""
    _check_augment(augment)
    pad = info.default_padding
    return {
        "auto": (pad, info.default_flip),
        "crop_flip": (pad, True),
        "crop": (pad, False),
        "flip": (0, True),
        "none": (0, False),
    }[augment]

