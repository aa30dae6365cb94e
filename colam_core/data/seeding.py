"""Seeds: randomness of the data pipeline is a function of ``(seed, epoch, batch)`` only.

The shuffling of epoch ``e`` comes from :func:`epoch_generator` ``(seed, e)`` and the
augmentation of batch ``b`` from :func:`batch_generator` ``(seed, e, b)``, both CPU
:class:`torch.Generator` objects seeded through a stable hash (:func:`_derive_seed`).
"""

from __future__ import annotations

import hashlib

import torch


def _derive_seed(*parts) -> int:
    """Mix ``parts`` (strings / ints) into a 63-bit seed (stable across runs and platforms)."""
    text = repr(tuple(p if isinstance(p, str) else int(p) for p in parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """CPU generator for the shuffling of epoch ``epoch`` (depends only on ``(seed, epoch)``)."""
    return torch.Generator().manual_seed(_derive_seed("epoch", seed, epoch))


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """CPU generator for the augmentation of batch ``batch`` of epoch ``epoch``."""
    return torch.Generator().manual_seed(_derive_seed("batch", seed, epoch, batch))

