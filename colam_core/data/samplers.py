"""Batch samplers that replace the default shuffled split of an epoch (CS-KD pairs)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataError
from .checks import _check_int


def _count_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches of ``batch_size`` in ``n`` items cut in order (``drop_last`` drops a final short batch)."""
    full, rem = divmod(n, batch_size)
    return full if (drop_last and full > 0) or rem == 0 else full + 1


class PairBatchSampler:
    """Batch sampler for CS-KD (Yun et al. 2020, class-wise self-knowledge distillation).

    Called as ``sampler(n_train, batch_size, generator)`` it returns the list of index
    batches of one epoch.  Each batch holds up to ``batch_size`` originals (a shuffled
    permutation of the training set, chunked) followed by one partner per original: a
    random *other* sample of the same class (the original itself only when its class has a
    single sample).  So ``batch[:k]`` are originals, ``batch[k:]`` partners, and
    ``labels[batch[k + i]] == labels[batch[i]]``.  Deterministic given the generator.
    """

    #: batches are [originals, partners]: a data-parallel shard keeps pairs together
    paired = True

    def __init__(self, labels):
        labels = torch.as_tensor(labels).detach().to("cpu")
        if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise DataError(f"make_pair_batch_sampler needs a 1-D integer label tensor, "
                            f"got dtype {labels.dtype} shape {tuple(labels.shape)}")
        labels = labels.long()
        if labels.numel() == 0:
            raise DataError("make_pair_batch_sampler needs at least one label")
        if int(labels.min()) < 0:
            raise DataError(f"labels must be >= 0, found {int(labels.min())}")
        self.labels = labels
        n = labels.numel()
        self._order = torch.argsort(labels, stable=True)  # indices grouped by class
        self._counts = torch.bincount(labels)
        self._starts = torch.cumsum(self._counts, 0) - self._counts
        pos = torch.empty(n, dtype=torch.long)
        pos[self._order] = torch.arange(n) - self._starts[labels[self._order]]
        self._pos = pos  # position of each sample inside its class group

    def __len__(self) -> int:
        return self.labels.numel()

    def num_batches(self, n_train: int, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches per epoch (``drop_last`` drops a final short batch)."""
        return _count_batches(n_train, batch_size, drop_last)

    def partners(self, originals: Tensor, u: Tensor) -> Tensor:
        """Same-class partner of each index in ``originals``; ``u`` are uniforms in [0, 1)."""
        cls = self.labels[originals]
        k = self._counts[cls]
        r = torch.floor(u * (k - 1).double()).long()
        r = torch.minimum(r, (k - 2).clamp(min=0))
        r = r + (r >= self._pos[originals]).long()  # skip the original itself
        partner = self._order[(self._starts[cls] + r).clamp(max=len(self) - 1)]
        return torch.where(k > 1, partner, originals)

    def __call__(self, n_train: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
        if n_train != len(self):
            raise DataError(f"pair sampler was built for {len(self)} labels but the training set "
                            f"has {n_train} samples; build it from data.train_labels")
        _check_int(batch_size, "batch_size", minimum=1)
        perm = torch.randperm(n_train, generator=generator)
        u = torch.rand(n_train, generator=generator, dtype=torch.float64)
        partners = self.partners(perm, u)
        return [torch.cat([perm[s:s + batch_size], partners[s:s + batch_size]])
                for s in range(0, n_train, batch_size)]


def make_pair_batch_sampler(labels) -> PairBatchSampler:
    """Batch sampler for CS-KD: see :class:`PairBatchSampler` (pass ``data.train_labels``)."""
    return PairBatchSampler(labels)

