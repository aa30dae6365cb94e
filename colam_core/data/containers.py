"""The loaded-dataset objects: :class:`DatasetInfo`, the :class:`ImageData` interface
(batch iterators, normalisation, seeding / resuming) and :class:`InMemoryData`, a dataset held
as one uint8 tensor per split and augmented batched on the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..distributed import shard_positions
from ..errors import DataError
from .augment import _augment_settings, _check_augment, crop_flip_params, crop_flip_uint8
from .checks import _as_index_tensor, _check_int, _fmt_allowed, _resolve_device
from .samplers import _count_batches
from .seeding import batch_generator, epoch_generator

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass
class DatasetInfo:
    """Static description of a loaded dataset (after any ``train_limit`` / ``test_limit``)."""

    name: str
    num_classes: int
    class_names: list[str]
    in_channels: int
    image_size: int  # H == W
    num_train: int
    num_test: int
    coarse_labels: list[int] | None = None  # fine class -> coarse (superclass) index, CIFAR-100 only
    coarse_names: list[str] | None = None
    default_padding: int = 4  # crop padding used by "auto" augmentation
    default_flip: bool = True  # False for digits (flipping digits changes meaning)


def _check_split(split) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {_fmt_allowed(SPLITS)}")


# --------------------------------------------------------------------------- ImageData base


class ImageData:
    """A loaded dataset: metadata, labels and batch iterators (see the two implementations)."""

    info: DatasetInfo
    device: torch.device
    train_labels: Tensor
    test_labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    # -- shared machinery

    def _labels(self, split: str) -> Tensor:
        return self.train_labels if split == "train" else self.test_labels

    def _stat_tensors(self, device) -> tuple[Tensor, Tensor]:
        cache = self.__dict__.setdefault("_stat_cache", {})
        key = str(device)
        if key not in cache:
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1)
            cache[key] = (mean, std)
        return cache[key]

    def normalize(self, x_uint8: Tensor) -> Tensor:
        """uint8 ``(..., C, H, W)`` in [0, 255] -> float32 ``(x / 255 - mean) / std`` (same device)."""
        if x_uint8.dtype != torch.uint8:
            raise DataError(f"normalize expects a uint8 tensor with values 0..255, got {x_uint8.dtype}")
        mean, std = self._stat_tensors(x_uint8.device)
        return (x_uint8.to(torch.float32).div_(255.0) - mean).div_(std)

    def num_batches(self, batch_size: int, batch_sampler=None, drop_last: bool = False) -> int:
        """Number of batches :meth:`train_batches` yields per epoch (with ``start_batch=0``)."""
        _check_int(batch_size, "batch_size", minimum=1)
        n = self.info.num_train
        if batch_sampler is None:
            return _count_batches(n, batch_size, drop_last)
        if hasattr(batch_sampler, "num_batches"):
            return int(batch_sampler.num_batches(n, batch_size, drop_last))
        return len(self._epoch_batches(batch_size, 0, 0, batch_sampler, drop_last))

    def _epoch_batches(self, batch_size: int, epoch: int, seed: int, batch_sampler,
                       drop_last: bool) -> list[Tensor]:
        """The index batches (CPU LongTensors) of one epoch, before ``start_batch``."""
        n = self.info.num_train
        gen = epoch_generator(seed, epoch)
        if batch_sampler is None:
            batches = list(torch.randperm(n, generator=gen).split(batch_size))
        else:
            if not callable(batch_sampler):
                raise DataError(f"batch_sampler must be callable (n_train, batch_size, generator) -> "
                                f"list of index tensors, got {type(batch_sampler).__name__}")
            raw = batch_sampler(n, batch_size, gen)
            try:
                raw = list(raw)
            except TypeError as e:
                raise DataError("batch_sampler must return a list of index tensors") from e
            batches = [_as_index_tensor(bt, n, f"batch_sampler batch {i}") for i, bt in enumerate(raw)]
            if any(bt.numel() == 0 for bt in batches):
                raise DataError("batch_sampler returned an empty batch")
        if drop_last and len(batches) > 1 and batches[-1].numel() < batches[0].numel():
            batches = batches[:-1]
        return batches

    def _check_train_args(self, batch_size, epoch, seed, augment, drop_last, start_batch) -> None:
        _check_int(batch_size, "batch_size", minimum=1)
        _check_int(epoch, "epoch")
        _check_int(seed, "seed")
        _check_int(start_batch, "start_batch", minimum=0)
        _check_augment(augment)
        if not isinstance(drop_last, bool):
            raise DataError(f"drop_last={drop_last!r} is invalid; it must be True or False")

    @staticmethod
    def _check_start(start_batch: int, num: int) -> None:
        if start_batch > num:
            raise DataError(f"start_batch={start_batch} is past the end of the epoch; "
                            f"allowed: 0..{num} ({num} batches per epoch)")

    def _checked_epoch(self, batch_size, epoch, seed, augment, batch_sampler, drop_last,
                       start_batch) -> list[Tensor]:
        """Validate the :meth:`train_batches` arguments; return the epoch's index batches (all of them)."""
        self._check_train_args(batch_size, epoch, seed, augment, drop_last, start_batch)
        batches = self._epoch_batches(batch_size, epoch, seed, batch_sampler, drop_last)
        self._check_start(start_batch, len(batches))
        return batches

    # -- interface

    def to(self, device) -> "ImageData":
        """Move resident tensors to ``device``; returns ``self``."""
        raise NotImplementedError

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: str = "auto",
                      batch_sampler=None, drop_last: bool = False, start_batch: int = 0,
                      shard: tuple[int, int] | None = None
                      ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield ``(x, y, idx)`` training batches of one epoch on ``self.device``.

        ``x`` is float32 normalised and augmented, ``y`` the labels and ``idx`` the dataset
        indices (all on the device).  ``augment`` is one of :data:`AUGMENTS`; ``"auto"`` uses
        the dataset's default crop padding and flip.  ``batch_sampler(n_train, batch_size,
        generator)`` may replace the default shuffled split (e.g. :func:`make_pair_batch_sampler`).
        ``start_batch`` skips the first batches without changing the later ones.
        ``shard=(rank, world_size)`` (data-parallel training) yields only the rank's contiguous
        share of every batch, augmented exactly as in the whole batch (see
        :func:`colam_core.distributed.shard_positions`).
        Arguments are validated when this is called, before the first batch is built.
        """
        raise NotImplementedError

    def eval_batches(self, split: str, batch_size: int = 512, indices=None
                     ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Yield un-augmented ``(x, y, idx)`` batches of ``split`` in order (optionally only ``indices``)."""
        raise NotImplementedError

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """Whole ``split`` as CPU ``(x float32 normalised, y long)``, as the model sees it un-augmented."""
        raise NotImplementedError

    def images_uint8(self, split: str, indices) -> np.ndarray:
        """``(n, H, W, C)`` uint8 images of ``split`` at ``indices``, for display."""
        raise NotImplementedError

    def __repr__(self) -> str:
        i = self.info
        return (f"{type(self).__name__}({i.name!r}, classes={i.num_classes}, "
                f"{i.in_channels}x{i.image_size}x{i.image_size}, train={i.num_train}, "
                f"test={i.num_test}, device={self.device})")


# --------------------------------------------------------------------------- in-memory data


def _channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean / std of uint8 images ``(N, C, H, W)`` scaled to [0, 1] (float64, chunked)."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for s in range(0, x.shape[0], chunk):
        part = x[s:s + chunk].to("cpu", torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp(min=0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant channel: do not divide by 0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class InMemoryData(ImageData):
    """A dataset held as one uint8 tensor per split, augmented batched on the device."""

    def __init__(self, info: DatasetInfo, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                 y_test: Tensor, device="cpu"):
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(f"{info.name} {split} images must be a uint8 (N, C, H, W) tensor, "
                                f"got {x.dtype} {tuple(x.shape)}")
            if y.dim() != 1 or y.numel() != x.shape[0]:
                raise DataError(f"{info.name} {split}: {x.shape[0]} images but {y.numel()} labels")
        self.info = info
        self._x_cpu = {"train": x_train.contiguous(), "test": x_test.contiguous()}
        self.train_labels = y_train.to("cpu", torch.long)
        self.test_labels = y_test.to("cpu", torch.long)
        self.mean, self.std = _channel_stats(self._x_cpu["train"])
        self.device = torch.device("cpu")
        self._x_dev = dict(self._x_cpu)
        self._y_dev = {"train": self.train_labels, "test": self.test_labels}
        self.to(device)

    def to(self, device) -> "InMemoryData":
        dev = _resolve_device(device)
        self.device = dev
        self._x_dev = {s: t.to(dev) for s, t in self._x_cpu.items()}
        self._y_dev = {"train": self.train_labels.to(dev), "test": self.test_labels.to(dev)}
        return self

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: str = "auto",
                      batch_sampler=None, drop_last: bool = False, start_batch: int = 0,
                      shard: tuple[int, int] | None = None):
        batches = self._checked_epoch(batch_size, epoch, seed, augment, batch_sampler, drop_last, start_batch)
        padding, flip = _augment_settings(augment, self.info)
        if shard is not None:
            return self._sharded_train_iter(batches, epoch, seed, padding, flip, start_batch, shard,
                                            getattr(batch_sampler, "paired", False))
        return self._train_iter(batches, epoch, seed, padding, flip, start_batch)

    def _sharded_train_iter(self, batches, epoch, seed, padding, flip, start_batch, shard, paired):
        x_all, y_all, dev = self._x_dev["train"], self._y_dev["train"], self.device
        for b in range(start_batch, len(batches)):
            pos = shard_positions(batches[b].numel(), shard[0], shard[1], paired)
            idx = batches[b][pos].to(dev, non_blocking=True)
            xb = x_all.index_select(0, idx)
            if padding > 0 or flip:
                full = crop_flip_params(batches[b].numel(), padding, flip, batch_generator(seed, epoch, b))
                xb = crop_flip_uint8(xb, padding, flip, None, params={k: v[pos] for k, v in full.items()})
            yield self.normalize(xb), y_all.index_select(0, idx), idx

    def _train_iter(self, batches, epoch, seed, padding, flip, start_batch):
        x_all, y_all, dev = self._x_dev["train"], self._y_dev["train"], self.device
        todo = batches[start_batch:]  # the epoch's indices reach the device in one copy, not one per batch
        idx_dev = torch.cat(todo).to(dev).split([t.numel() for t in todo]) if todo else ()
        for b in range(start_batch, len(batches)):
            idx = idx_dev[b - start_batch]
            xb = x_all.index_select(0, idx)
            if padding > 0 or flip:
                xb = crop_flip_uint8(xb, padding, flip, batch_generator(seed, epoch, b))
            yield self.normalize(xb), y_all.index_select(0, idx), idx

    def eval_batches(self, split: str, batch_size: int = 512, indices=None):
        _check_split(split)
        _check_int(batch_size, "batch_size", minimum=1)
        n = self._x_cpu[split].shape[0]
        idx_all = None if indices is None else _as_index_tensor(indices, n, "indices")
        return self._eval_iter(split, batch_size, idx_all)

    def _eval_iter(self, split, batch_size, idx_all):
        x_all, y_all, dev = self._x_dev[split], self._y_dev[split], self.device
        n = x_all.shape[0] if idx_all is None else idx_all.numel()
        for s in range(0, n, batch_size):
            if idx_all is None:
                e = min(s + batch_size, n)
                idx = torch.arange(s, e, device=dev)
                yield self.normalize(x_all[s:e]), y_all[s:e], idx
            else:
                idx = idx_all[s:s + batch_size].to(dev)
                yield self.normalize(x_all.index_select(0, idx)), y_all.index_select(0, idx), idx

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        _check_split(split)
        return self.normalize(self._x_cpu[split]), self._labels(split).clone()

    def uint8_tensor(self, split: str) -> Tensor:
        """The resident CPU uint8 ``(N, C, H, W)`` tensor of ``split`` (do not modify)."""
        _check_split(split)
        return self._x_cpu[split]

    def images_uint8(self, split: str, indices) -> np.ndarray:
        _check_split(split)
        idx = _as_index_tensor(indices, self._x_cpu[split].shape[0], "indices")
        return self._x_cpu[split].index_select(0, idx).permute(0, 2, 3, 1).contiguous().numpy()

