"""Datasets, batching and augmentation for COLAM experiments.

Two families of datasets are supported:

* **Small datasets** (``digits``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
  ``synthetic``) are held in memory as one ``uint8`` tensor ``(N, C, H, W)`` per
  split and moved to the training device once (:class:`InMemoryData`).  Random
  crop (zero padding) and horizontal flip run *batched* on the device on the
  ``uint8`` batch (one flat ``take`` from the zero-padded batch, no per-image loop,
  no PIL); the batch is then converted to ``float32`` and normalised with the
  per-channel mean / std of the train split.
* **ImageNet-style folders** (``imagefolder``: ``root/train/<class>/*`` and
  ``root/val/<class>/*``) are streamed from disk with
  :class:`torchvision.datasets.ImageFolder`, a :class:`~torch.utils.data.DataLoader`
  with worker processes and the usual torchvision transforms (:class:`FolderData`).

Randomness is fully determined by ``(seed, epoch, batch)``: the shuffling
permutation of epoch ``e`` comes from a CPU :class:`torch.Generator` seeded from
``(seed, e)`` (:func:`epoch_generator`) and the augmentation of batch ``b`` of
epoch ``e`` from one seeded from ``(seed, e, b)`` (:func:`batch_generator`).
A run resumed at batch ``b`` (``start_batch=b``) therefore sees bit-identical
batches to an uninterrupted run.

Every bad input raises :class:`DataError` (a :class:`ValueError`) naming the bad
value and what is allowed, before any expensive work is done.

CIFAR files are Python pickles, and unpickling can execute arbitrary code; they
are read through a restricted unpickler (:class:`_RestrictedUnpickler`) that
only resolves the handful of globals the genuine files reference.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

__all__ = [
    "DATASETS",
    "AUGMENTS",
    "DataError",
    "DatasetInfo",
    "ImageData",
    "InMemoryData",
    "FolderData",
    "PairBatchSampler",
    "check_dataset_args",
    "load_dataset",
    "make_pair_batch_sampler",
    "crop_flip_uint8",
    "epoch_generator",
    "batch_generator",
    "stratified_subset",
    "read_idx",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# --------------------------------------------------------------------------- constants

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
"""Names accepted by :func:`load_dataset` / :func:`check_dataset_args`."""

AUGMENTS: tuple[str, ...] = ("auto", "crop_flip", "crop", "flip", "none")
"""Values accepted for the ``augment`` argument of :meth:`ImageData.train_batches`."""

SPLITS: tuple[str, ...] = ("train", "test")

#: Where ``download=True`` stores data when no ``data_root`` is given (also searched then).
DEFAULT_DATA_ROOT = "~/.cache/colam/data"
#: Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files here.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = CIFAR10_TRAIN_FILES + ("test_batch", "batches.meta")
CIFAR100_DIR = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224

# native sizes of the in-memory datasets (image_size must match if given)
_NATIVE_SIZE = {"digits": 8, "fashion_mnist": 28, "cifar10": 32, "cifar100": 32, "synthetic": 8}


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


# --------------------------------------------------------------------------- small helpers


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


def _check_split(split) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {_fmt_allowed(SPLITS)}")


def _check_augment(augment) -> None:
    if augment not in AUGMENTS:
        raise DataError(f"unknown augment {augment!r}; allowed: {_fmt_allowed(AUGMENTS)}")


def _resolve_device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DataError(f"invalid device {device!r} ({e}); use e.g. 'cpu' or 'cuda'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return dev


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


def stratified_subset(labels: Tensor, limit: int, what: str = "limit") -> Tensor:
    """Deterministic class-stratified subset of ``limit`` indices (sorted, in dataset order).

    Within each class the samples are ordered by a fixed random permutation; a sample at
    position ``k`` of a class of size ``n_c`` gets the key ``(k + 0.5) / n_c`` and the
    ``limit`` smallest keys are kept.  Every class therefore contributes in proportion to its
    size, subsets are nested (a smaller ``limit`` keeps a subset of a larger one), and the
    choice is independent of any training seed so that all runs see the same data.
    """
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    n = labels.numel()
    if limit >= n:
        return torch.arange(n)
    num_present = int(torch.unique(labels).numel())
    if limit < num_present:
        raise DataError(f"{what}={limit} is smaller than the number of classes present ({num_present}); "
                        f"a class-stratified subset needs at least one sample per class")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(20220101))
    order = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, shuffled within
    lab_sorted = labels[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(n) - starts[lab_sorted]
    key = (pos.double() + 0.5) / counts[lab_sorted].double()
    # sort by (key, class); lexsort via two stable sorts
    o1 = torch.argsort(lab_sorted, stable=True)
    o2 = o1[torch.argsort(key[o1], stable=True)]
    chosen = order[o2[:limit]]
    return torch.sort(chosen).values


# --------------------------------------------------------------------------- augmentation


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


# --------------------------------------------------------------------------- CS-KD pair sampler


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
        full, rem = divmod(n_train, batch_size)
        return full if (drop_last and full > 0) or rem == 0 else full + 1

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
            full, rem = divmod(n, batch_size)
            return full if (drop_last and full > 0) or rem == 0 else full + 1
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
        self._check_train_args(batch_size, epoch, seed, augment, drop_last, start_batch)
        padding, flip = _augment_settings(augment, self.info)
        batches = self._epoch_batches(batch_size, epoch, seed, batch_sampler, drop_last)
        self._check_start(start_batch, len(batches))
        if shard is not None:
            return self._sharded_train_iter(batches, epoch, seed, padding, flip, start_batch, shard,
                                            getattr(batch_sampler, "paired", False))
        return self._train_iter(batches, epoch, seed, padding, flip, start_batch)

    def _sharded_train_iter(self, batches, epoch, seed, padding, flip, start_batch, shard, paired):
        from ..distributed import shard_positions
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


# --------------------------------------------------------------------------- image folders


def _load_image_rgb(path: str):
    """PIL loader for ImageFolder that turns undecodable files into a DataError naming them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot decode image file '{path}': {type(e).__name__}: {e}") from e


class _IndexedFolder(torch.utils.data.Dataset):
    """Subset of an ImageFolder returning ``(x, label, position)``.

    An item key may be ``(position, sample_seed)``: the transform then runs under a forked
    torch RNG seeded with ``sample_seed`` so that augmentation depends only on the key (not on
    worker assignment or on the main process's RNG state).
    """

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            pos, sample_seed = key
        else:
            pos, sample_seed = key, None
        path, target = self.samples[pos]
        img = _load_image_rgb(path)
        if sample_seed is None:
            x = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                x = self.transform(img)
        return x, target, pos


class FolderData(ImageData):
    """An ImageNet-style folder tree streamed through DataLoader workers.

    ``train`` is ``root/train`` and ``test`` is ``root/val``.  Training batches follow the
    same index / seed scheme as :class:`InMemoryData`; each sample's random transform is
    seeded from the batch generator, so results do not depend on ``num_workers``.
    """

    def __init__(self, info: DatasetInfo, train_samples: list[tuple[str, int]],
                 test_samples: list[tuple[str, int]], device="cpu", num_workers: int = 2):
        from torchvision import transforms as T

        self.info = info
        self._samples = {"train": train_samples, "test": test_samples}
        self.train_labels = torch.tensor([t for _, t in train_samples], dtype=torch.long)
        self.test_labels = torch.tensor([t for _, t in test_samples], dtype=torch.long)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.num_workers = num_workers
        size = info.image_size
        self.resize_size = int(size * 256 / 224)
        norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self._display_tf = T.Compose([T.Resize(self.resize_size), T.CenterCrop(size)])
        self._tf = {
            "crop_flip": T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()] + norm),
            "crop": T.Compose([T.RandomResizedCrop(size)] + norm),
            "flip": T.Compose([T.Resize(self.resize_size), T.CenterCrop(size), T.RandomHorizontalFlip()] + norm),
            "none": T.Compose([T.Resize(self.resize_size), T.CenterCrop(size)] + norm),
        }
        self._tf["auto"] = self._tf["crop_flip"]
        self.device = torch.device("cpu")
        self.to(device)

    def to(self, device) -> "FolderData":
        self.device = _resolve_device(device)
        return self

    def _loader(self, dataset, batch_sampler) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda")

    def _move(self, batch):
        x, y, idx = batch
        dev = self.device
        return (x.to(dev, non_blocking=True), y.to(dev, torch.long, non_blocking=True),
                idx.to(dev, torch.long, non_blocking=True))

    def train_batches(self, batch_size: int, epoch: int, seed: int, augment: str = "auto",
                      batch_sampler=None, drop_last: bool = False, start_batch: int = 0,
                      shard: tuple[int, int] | None = None):
        self._check_train_args(batch_size, epoch, seed, augment, drop_last, start_batch)
        batches = self._epoch_batches(batch_size, epoch, seed, batch_sampler, drop_last)
        self._check_start(start_batch, len(batches))
        keyed = []
        for b in range(start_batch, len(batches)):
            idx = batches[b]
            seeds = torch.randint(0, 2 ** 62, (idx.numel(),), generator=batch_generator(seed, epoch, b))
            if shard is not None:  # the rank's share, each sample keeping its own seed
                from ..distributed import shard_positions
                pos = shard_positions(idx.numel(), shard[0], shard[1], getattr(batch_sampler, "paired", False))
                idx, seeds = idx[pos], seeds[pos]
            keyed.append(list(zip(idx.tolist(), seeds.tolist())))
        dataset = _IndexedFolder(self._samples["train"], self._tf[augment])
        return (self._move(batch) for batch in self._loader(dataset, keyed))

    def eval_batches(self, split: str, batch_size: int = 512, indices=None):
        _check_split(split)
        _check_int(batch_size, "batch_size", minimum=1)
        n = len(self._samples[split])
        idx = torch.arange(n) if indices is None else _as_index_tensor(indices, n, "indices")
        chunks = [c.tolist() for c in idx.split(batch_size)]
        dataset = _IndexedFolder(self._samples[split], self._tf["none"])
        return (self._move(batch) for batch in self._loader(dataset, chunks))

    def tensors(self, split: str) -> tuple[Tensor, Tensor]:
        """Whole split as CPU tensors (decodes every image: only sensible for small folders)."""
        _check_split(split)
        xs = [x.cpu() for x, _, _ in self.eval_batches(split, 256)]
        c, s = self.info.in_channels, self.info.image_size
        x = torch.cat(xs) if xs else torch.empty(0, c, s, s)
        return x, self._labels(split).clone()

    def images_uint8(self, split: str, indices) -> np.ndarray:
        _check_split(split)
        idx = _as_index_tensor(indices, len(self._samples[split]), "indices")
        s = self.info.image_size
        out = np.empty((idx.numel(), s, s, 3), dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            out[k] = np.asarray(self._display_tf(_load_image_rgb(self._samples[split][i][0])))
        return out


# --------------------------------------------------------------------------- locating files


def _root_dirs(data_root) -> list[Path]:
    """The roots searched for a dataset: ``data_root`` or, when None, the download cache."""
    return [Path(os.path.expanduser(str(data_root if data_root is not None else DEFAULT_DATA_ROOT)))]


def _download_root(data_root) -> Path:
    return _root_dirs(data_root)[0]


def _fashion_candidates(data_root) -> list[Path]:
    cands = []
    for r in _root_dirs(data_root):
        cands += [r, r / "FashionMNIST" / "raw", r / "fashion-mnist"]
    cands.append(Path(FASHION_MNIST_SYSTEM_DIR))
    return cands


def _fashion_files_in(d: Path) -> tuple[dict[str, Path], list[str]]:
    """Map of found IDX files in ``d`` (plain or .gz) and the list of missing ones."""
    found, missing = {}, []
    for key, base in FASHION_MNIST_FILES.items():
        for name in (base, base + ".gz"):
            p = d / name
            if p.is_file():
                found[key] = p
                break
        else:
            missing.append(base + "[.gz]")
    return found, missing


def _cifar_candidates(name: str, data_root) -> list[Path]:
    sub = CIFAR10_DIR if name == "cifar10" else CIFAR100_DIR
    cands = []
    for r in _root_dirs(data_root):
        cands += [r / sub, r]
    return cands


def _cifar_missing(name: str, d: Path) -> list[str]:
    files = CIFAR10_FILES if name == "cifar10" else CIFAR100_FILES
    return [f for f in files if not (d / f).is_file()]


def _describe(d: Path, missing: list[str]) -> str:
    if not d.is_dir():
        return f"  {d} (no such directory)"
    return f"  {d} (missing: {', '.join(missing)})"


def _locate(name: str, data_root):
    """Return (directory, None) where the dataset's files are, or (None, list of descriptions)."""
    looked = []
    if name == "fashion_mnist":
        for d in _fashion_candidates(data_root):
            found, missing = _fashion_files_in(d) if d.is_dir() else ({}, list(FASHION_MNIST_FILES.values()))
            if not missing:
                return d, None
            looked.append(_describe(d, missing))
    else:  # cifar10 / cifar100
        for d in _cifar_candidates(name, data_root):
            files = CIFAR10_FILES if name == "cifar10" else CIFAR100_FILES
            missing = _cifar_missing(name, d) if d.is_dir() else list(files)
            if not missing:
                return d, None
            looked.append(_describe(d, missing))
    return None, looked


_HOLDS = {
    "fashion_mnist": "the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    "cifar10": f"{CIFAR10_DIR}/ (data_batch_1..5, test_batch, batches.meta)",
    "cifar100": f"{CIFAR100_DIR}/ (train, test, meta)",
}


def _missing_error(name: str, data_root, looked: list[str]) -> DataError:
    where = "\n".join(looked)
    target = _download_root(data_root)
    return DataError(
        f"{name} data not found. Looked in:\n{where}\n"
        f"Fix: pass data_root=<dir holding {_HOLDS[name]}> (CLI --data-root DIR), "
        f"or download=True (CLI --download) to fetch it into {target}.")


def _check_imagefolder_root(data_root) -> Path:
    """Validate an imagefolder root with train/ and val/ (stat calls only); return it."""
    hint = ("imagefolder needs data_root=<dir with train/<class>/*.jpg and val/<class>/*> "
            "(CLI --data-root DIR); it cannot be downloaded (download=True / --download does not apply)")
    if data_root is None:
        raise DataError(f"imagefolder: no data_root given. {hint}")
    root = Path(os.path.expanduser(str(data_root)))
    if not root.is_dir():
        raise DataError(f"imagefolder: data_root '{root}' is not a directory. {hint}")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(f"imagefolder: '{root}' has no {' or '.join(s + '/' for s in missing)} folder. {hint}")
    return root


def check_dataset_args(name, data_root=None, download=False) -> None:
    """Cheap validation of dataset arguments (stat calls only, no loading).

    Raises :class:`DataError` for an unknown ``name`` (listing the allowed ones), a bad
    ``data_root`` / ``download`` type, or, for datasets that need files, when the files are
    not found and ``download`` is False (listing every place looked and both fixes).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {_fmt_allowed(DATASETS)}")
    if data_root is not None and not isinstance(data_root, (str, os.PathLike)):
        raise DataError(f"data_root={data_root!r} is invalid; it must be a path (str) or None")
    if not isinstance(download, bool):
        raise DataError(f"download={download!r} is invalid; it must be True or False")
    if name in ("digits", "synthetic"):
        return
    if name == "imagefolder":
        _check_imagefolder_root(data_root)
        return
    if download:
        return
    found, looked = _locate(name, data_root)
    if found is None:
        raise _missing_error(name, data_root, looked)


# --------------------------------------------------------------------------- readers: IDX


def _read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped when the file starts with the gzip magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"'{path}' is a truncated or corrupt gzip file ({type(e).__name__}: {e})") from e
    except OSError as e:
        raise DataError(f"cannot read '{path}': {e}") from e


def read_idx(path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (plain or gzipped) with ``ndim`` dimensions.

    Checks the magic number (``0x0000_08_<ndim>``), the dimensions and that the byte count
    matches the header; any mismatch raises :class:`DataError` naming the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    want_magic = 0x0800 | ndim
    if len(raw) < 4:
        raise DataError(f"'{path}' is truncated: {len(raw)} bytes, shorter than an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != want_magic:
        raise DataError(f"'{path}' is not an IDX file of {ndim}-D unsigned bytes: magic number "
                        f"0x{magic:08x}, expected 0x{want_magic:08x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"'{path}' is truncated inside its IDX header ({len(raw)} bytes)")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"'{path}' is {kind}: header dims {list(dims)} need {expected} bytes, "
                        f"file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_fashion_dir(d: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    found, missing = _fashion_files_in(d)
    if missing:
        raise DataError(f"fashion_mnist: '{d}' is missing {', '.join(missing)}")
    out = {}
    for split, (img_key, lab_key) in {"train": ("train_images", "train_labels"),
                                      "test": ("test_images", "test_labels")}.items():
        images = read_idx(found[img_key], 3)
        labels = read_idx(found[lab_key], 1)
        if images.shape[1:] != (28, 28):
            raise DataError(f"'{found[img_key]}' holds {images.shape[1]}x{images.shape[2]} images, "
                            f"expected 28x28 for Fashion-MNIST")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"'{found[lab_key]}' has {labels.shape[0]} labels but "
                            f"'{found[img_key]}' has {images.shape[0]} images")
        if labels.size and int(labels.max()) >= 10:
            raise DataError(f"'{found[lab_key]}' contains label {int(labels.max())}; allowed 0..9")
        out[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return out["train"][0], out["train"][1], out["test"][0], out["test"][1]


# --------------------------------------------------------------------------- readers: CIFAR pickles


def _numpy_attr(module: str, name: str):
    # numpy >= 2 moved numpy.core to numpy._core (the old name warns); files name either
    if module.startswith("numpy.core"):
        try:
            return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
        except (ImportError, AttributeError):
            pass
    return getattr(importlib.import_module(module), name)


_SAFE_BUILTINS = {"list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                  "int", "float", "complex", "bool"}
_SAFE_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals genuine CIFAR files (and numpy arrays) need.

    Anything else (``os.system``, ``builtins.eval``, arbitrary classes...) is refused with a
    :class:`DataError`, because resolving and calling such globals is how malicious pickles
    execute code.
    """

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if (module, name) == ("_codecs", "encode"):  # bytes pickled by Python 3 with protocol < 3
            import _codecs
            return _codecs.encode
        if (module, name) in _SAFE_NUMPY:
            return _numpy_attr(module, name)
        raise DataError(f"refusing to load '{self._path}': it references {module}.{name}, which a "
                        f"CIFAR data file never needs (pickles can run code; only numpy arrays and "
                        f"plain containers are allowed)")


def _unpickle(path: Path):
    """Load a CIFAR pickle through :class:`_RestrictedUnpickler`; errors name the file."""
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"cannot read '{path}': {e}") from e
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... from corrupt data
        raise DataError(f"cannot unpickle '{path}' ({type(e).__name__}: {e}); the file is truncated "
                        f"or not a CIFAR python pickle") from e


def _as_bytes_keyed_dict(obj, path: Path) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"'{path}' holds a {type(obj).__name__}, expected a dict like the CIFAR "
                        f"python files")
    return {(k.encode() if isinstance(k, str) else k): v for k, v in obj.items()}


def _labels_array(value, path: Path, key: bytes, n: int, num_classes: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"'{path}': {key.decode()} must be a list of integers, got "
                        f"{arr.dtype} array of shape {arr.shape}")
    if arr.shape[0] != n:
        raise DataError(f"'{path}': {n} images in data but {arr.shape[0]} entries in {key.decode()}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= num_classes):
        bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
        raise DataError(f"'{path}': {key.decode()} contains {bad}, outside the allowed range "
                        f"0..{num_classes - 1}")
    return arr.astype(np.int64)


def _read_cifar_batch(path: Path, label_keys: dict[bytes, int]) -> tuple[np.ndarray, dict[bytes, np.ndarray]]:
    """Read one CIFAR batch: ``data`` (n, 3072) uint8 and each label list in ``label_keys``."""
    d = _as_bytes_keyed_dict(_unpickle(path), path)
    required = [b"data", *label_keys]
    missing = [k.decode() for k in required if k not in d]
    if missing:
        raise DataError(f"'{path}' lacks key(s) {missing}; expected keys {[k.decode() for k in required]}")
    data = d[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise DataError(f"'{path}': data is a {desc}, expected a uint8 array of shape (n, 3072)")
    labels = {k: _labels_array(d[k], path, k, data.shape[0], n) for k, n in label_keys.items()}
    return data, labels


def _read_names(path: Path, key: bytes, count: int) -> list[str]:
    d = _as_bytes_keyed_dict(_unpickle(path), path)
    if key not in d:
        raise DataError(f"'{path}' lacks key {key.decode()!r} (expected {count} class names)")
    names = d[key]
    if not isinstance(names, (list, tuple)) or len(names) != count:
        got = len(names) if isinstance(names, (list, tuple)) else type(names).__name__
        raise DataError(f"'{path}': {key.decode()} must be a list of {count} names, got {got}")
    out = []
    for v in names:
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise DataError(f"'{path}': {key.decode()} entries must be strings, got {type(v).__name__}")
        out.append(v)
    return out


def _to_images(data: np.ndarray) -> Tensor:
    """(n, 3072) CIFAR rows (R plane, G plane, B plane, row-major) -> (n, 3, 32, 32) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))


def _load_cifar10_dir(d: Path):
    names = _read_names(d / "batches.meta", b"label_names", 10)
    parts = [_read_cifar_batch(d / f, {b"labels": 10}) for f in CIFAR10_TRAIN_FILES]
    test_data, test_labels = _read_cifar_batch(d / "test_batch", {b"labels": 10})
    x_train = _to_images(np.concatenate([p[0] for p in parts]))
    y_train = torch.from_numpy(np.concatenate([p[1][b"labels"] for p in parts]))
    return names, x_train, y_train, _to_images(test_data), torch.from_numpy(test_labels[b"labels"])


def _coarse_mapping(fine_by_split: dict[Path, tuple[np.ndarray, np.ndarray]], fine_names, coarse_names):
    """Fine class -> coarse index, checked consistent across all samples of every file."""
    mapping: dict[int, tuple[int, Path]] = {}
    for path, (fine, coarse) in fine_by_split.items():
        pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0) if fine.size else np.empty((0, 2), int)
        for f, c in pairs.tolist():
            if f in mapping and mapping[f][0] != c:
                c0, p0 = mapping[f]
                raise DataError(
                    f"'{path}': fine class {f} ({fine_names[f]!r}) has coarse label {c} "
                    f"({coarse_names[c]!r}) but elsewhere ('{p0}') coarse label {c0} ({coarse_names[c0]!r}); "
                    f"each fine class must belong to exactly one superclass")
            mapping.setdefault(f, (c, path))
    absent = [f for f in range(len(fine_names)) if f not in mapping]
    if absent:
        raise DataError(f"cifar100: fine class(es) {absent[:10]} have no samples in "
                        f"{[str(p) for p in fine_by_split]}, so their superclass is unknown")
    return [mapping[f][0] for f in range(len(fine_names))]


def _load_cifar100_dir(d: Path):
    meta = d / "meta"
    fine_names = _read_names(meta, b"fine_label_names", 100)
    coarse_names = _read_names(meta, b"coarse_label_names", 20)
    keys = {b"fine_labels": 100, b"coarse_labels": 20}
    tr_data, tr = _read_cifar_batch(d / "train", keys)
    te_data, te = _read_cifar_batch(d / "test", keys)
    coarse_map = _coarse_mapping({d / "train": (tr[b"fine_labels"], tr[b"coarse_labels"]),
                                  d / "test": (te[b"fine_labels"], te[b"coarse_labels"])},
                                 fine_names, coarse_names)
    return (fine_names, coarse_names, coarse_map, _to_images(tr_data),
            torch.from_numpy(tr[b"fine_labels"]), _to_images(te_data), torch.from_numpy(te[b"fine_labels"]))


# --------------------------------------------------------------------------- builders


def _build_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # (N,1,8,8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return (torch.from_numpy(np.ascontiguousarray(x_tr)), torch.from_numpy(y_tr),
            torch.from_numpy(np.ascontiguousarray(x_te)), torch.from_numpy(y_te))


SYNTHETIC_CLASSES = 4
SYNTHETIC_TRAIN = 256
SYNTHETIC_TEST = 128


def _build_synthetic(seed: int):
    """4 classes of 1x8x8 images: a fixed random binary prototype per class plus noise."""
    g = torch.Generator().manual_seed(_derive_seed("synthetic", seed))
    protos = (torch.rand(SYNTHETIC_CLASSES, 1, 8, 8, generator=g) < 0.5).float() * 160.0 + 48.0

    def split(n: int):
        y = torch.arange(SYNTHETIC_CLASSES).repeat_interleave(n // SYNTHETIC_CLASSES)
        y = y[torch.randperm(y.numel(), generator=g)]
        noise = torch.randn(y.numel(), 1, 8, 8, generator=g) * 40.0
        return (protos[y] + noise).round().clamp(0, 255).to(torch.uint8), y

    x_tr, y_tr = split(SYNTHETIC_TRAIN)
    x_te, y_te = split(SYNTHETIC_TEST)
    return x_tr, y_tr, x_te, y_te


def _download(name: str, data_root) -> None:
    """Fetch a dataset with torchvision into the download root (errors become DataError)."""
    import torchvision.datasets as tvd

    root = _download_root(data_root)
    cls = {"fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as e:  # network errors, checksum mismatches, permissions...
        raise DataError(f"downloading {name} into '{root}' failed ({type(e).__name__}: {e}). "
                        f"Without network access, put the files there yourself and pass "
                        f"data_root=<dir holding {_HOLDS[name]}> (CLI --data-root DIR)") from e


def _apply_limits(x_tr, y_tr, x_te, y_te, train_limit, test_limit):
    if train_limit is not None:
        keep = stratified_subset(y_tr, train_limit, "train_limit")
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if test_limit is not None:
        keep = stratified_subset(y_te, test_limit, "test_limit")
        x_te, y_te = x_te[keep], y_te[keep]
    return x_tr, y_tr, x_te, y_te


def _load_imagefolder(data_root, train_limit, test_limit, image_size, device, num_workers) -> FolderData:
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = _check_imagefolder_root(data_root)
    classes = {}
    for split in ("train", "val"):
        with os.scandir(root / split) as it:
            classes[split] = sorted(e.name for e in it if e.is_dir())
    if not classes["train"]:
        raise DataError(f"imagefolder: '{root / 'train'}' has no class folders; expected train/<class>/*.jpg")
    only_train = sorted(set(classes["train"]) - set(classes["val"]))
    only_val = sorted(set(classes["val"]) - set(classes["train"]))
    if only_train:
        raise DataError(f"imagefolder: class folder(s) {only_train} exist in '{root / 'train'}' but are "
                        f"missing in '{root / 'val'}'; both splits need the same classes")
    if only_val:
        raise DataError(f"imagefolder: class folder(s) {only_val} exist in '{root / 'val'}' but are "
                        f"missing in '{root / 'train'}'; both splits need the same classes")
    samples = {}
    for split in ("train", "val"):
        try:
            ds = ImageFolder(str(root / split), loader=_load_image_rgb, allow_empty=True)
        except TypeError:  # torchvision < 0.17 has no allow_empty
            try:
                ds = ImageFolder(str(root / split), loader=_load_image_rgb)
            except FileNotFoundError as e:
                raise DataError(f"imagefolder: {e}") from e
        counts = np.bincount(np.asarray(ds.targets, dtype=np.int64), minlength=len(ds.classes))
        empty = [ds.classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"imagefolder: class folder(s) {[str(root / split / c) for c in empty]} contain "
                            f"no image files (allowed extensions: {', '.join(IMG_EXTENSIONS)})")
        samples[split] = ds.samples
        class_names = ds.classes
    for key, limit, what in (("train", train_limit, "train_limit"), ("val", test_limit, "test_limit")):
        if limit is not None:
            keep = stratified_subset(torch.tensor([t for _, t in samples[key]]), limit, what)
            samples[key] = [samples[key][i] for i in keep.tolist()]
    info = DatasetInfo(name="imagefolder", num_classes=len(class_names), class_names=list(class_names),
                       in_channels=3, image_size=image_size, num_train=len(samples["train"]),
                       num_test=len(samples["val"]), default_padding=0, default_flip=True)
    return FolderData(info, samples["train"], samples["val"], device=device, num_workers=num_workers)


def load_dataset(name: str, data_root: str | None = None, download: bool = False, device="cpu",
                 train_limit: int | None = None, test_limit: int | None = None,
                 image_size: int | None = None, num_workers: int = 2, seed: int = 0) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`) and return an :class:`ImageData`.

    Args:
        data_root: directory holding the files (see :func:`check_dataset_args` for where each
            dataset is looked for); when None, the download cache ``~/.cache/colam/data``.
        download: fetch missing fashion_mnist / cifar data with torchvision.
        device: where batches (and, for in-memory datasets, the whole data) live.
        train_limit / test_limit: keep a deterministic class-stratified subset of that many
            samples (see :func:`stratified_subset`).
        image_size: imagefolder crop size (default 224); other datasets have a fixed size and
            only accept their native size here.
        num_workers: DataLoader workers (imagefolder only).
        seed: seed of the ``synthetic`` dataset's prototypes and noise.
    """
    check_dataset_args(name, data_root, download)
    _check_int(train_limit, "train_limit", minimum=1, allow_none=True)
    _check_int(test_limit, "test_limit", minimum=1, allow_none=True)
    _check_int(image_size, "image_size", minimum=1, allow_none=True)
    _check_int(num_workers, "num_workers", minimum=0)
    _check_int(seed, "seed")
    dev = _resolve_device(device)
    if name != "imagefolder" and image_size is not None and image_size != _NATIVE_SIZE[name]:
        raise DataError(f"image_size={image_size} is not possible for {name}, whose images are "
                        f"{_NATIVE_SIZE[name]}x{_NATIVE_SIZE[name]}; image_size applies only to imagefolder")

    if name == "imagefolder":
        return _load_imagefolder(data_root, train_limit, test_limit,
                                 image_size or DEFAULT_IMAGE_SIZE, dev, num_workers)

    coarse_labels = coarse_names = None
    if name == "digits":
        x_tr, y_tr, x_te, y_te = _build_digits()
        class_names, padding, flip = [str(i) for i in range(10)], 1, False
    elif name == "synthetic":
        x_tr, y_tr, x_te, y_te = _build_synthetic(seed)
        class_names, padding, flip = [f"pattern_{i}" for i in range(SYNTHETIC_CLASSES)], 1, False
    else:
        found, looked = _locate(name, data_root)
        if found is None and download:
            _download(name, data_root)
            found, looked = _locate(name, data_root)
        if found is None:
            raise _missing_error(name, data_root, looked)
        if name == "fashion_mnist":
            x_tr, y_tr, x_te, y_te = _load_fashion_dir(found)
            class_names, padding, flip = list(FASHION_MNIST_CLASSES), 2, True
        elif name == "cifar10":
            class_names, x_tr, y_tr, x_te, y_te = _load_cifar10_dir(found)
            padding, flip = 4, True
        else:
            class_names, coarse_names, coarse_labels, x_tr, y_tr, x_te, y_te = _load_cifar100_dir(found)
            padding, flip = 4, True

    x_tr, y_tr, x_te, y_te = _apply_limits(x_tr, y_tr, x_te, y_te, train_limit, test_limit)
    info = DatasetInfo(name=name, num_classes=len(class_names), class_names=class_names,
                       in_channels=int(x_tr.shape[1]), image_size=int(x_tr.shape[2]),
                       num_train=int(x_tr.shape[0]), num_test=int(x_te.shape[0]),
                       coarse_labels=coarse_labels, coarse_names=coarse_names,
                       default_padding=padding, default_flip=flip)
    return InMemoryData(info, x_tr, y_tr, x_te, y_te, device=dev)
