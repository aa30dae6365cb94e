"""ImageNet-style folder trees (``root/train/<class>/*``, ``root/val/<class>/*``) streamed from
disk through :class:`~torch.utils.data.DataLoader` workers with torchvision transforms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..distributed import shard_positions
from ..errors import DataError
from .checks import _as_index_tensor, _check_int, _resolve_device
from .containers import DatasetInfo, ImageData, _check_split
from .seeding import batch_generator

IMAGENET_MEAN = (0.485, 0.456, 0.406)

IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_image_rgb(path: str):
    """PIL loader for ImageFolder that turns undecodable files (and decompression bombs: more pixels than PIL's
    limit, Image.MAX_IMAGE_PIXELS) into a DataError naming them."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image file '{path}': {type(e).__name__}: {e}") from e


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def scan_split(split_dir: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes (sorted sub-folders) and the (path, class index) samples of ``split_dir``, in the order of
    torchvision's ImageFolder. Links are followed inside ``split_dir`` only: one that leads outside it, loops
    back to a folder above itself, or reaches an image a second time (it would count twice, or under another
    class) is a DataError naming it."""
    top = os.path.realpath(split_dir)
    with os.scandir(split_dir) as it:
        classes = sorted(e.name for e in it if e.is_dir())
    samples, seen = [], {}
    for ci, c in enumerate(classes):
        found = []
        start = os.path.join(split_dir, c)
        stack = [(start, _resolved(start, top, split_dir))]
        while stack:
            d, real_d = stack.pop()
            with os.scandir(d) as it:
                for e in it:
                    link = e.is_symlink()
                    real = _resolved(e.path, top, split_dir) if link else os.path.join(real_d, e.name)
                    if e.is_dir():
                        if link and _inside(real_d, real):
                            raise DataError(f"imagefolder: '{e.path}' is a symbolic link to '{real}', a folder "
                                            "above it (a loop: its images would be counted again and again); "
                                            "remove the link")
                        stack.append((e.path, real))
                    elif e.is_file() and e.name.lower().endswith(extensions):
                        if real in seen:
                            raise DataError(f"imagefolder: '{e.path}' and '{seen[real]}' are the same image file "
                                            f"('{real}', reached through a symbolic link); each image must appear "
                                            "once, under its own class")
                        seen[real] = e.path
                        found.append((d, e.name))
        samples += [(os.path.join(d, name), ci) for d, name in sorted(found)]
    return classes, samples


def _resolved(path: str, top: str, split_dir) -> str:
    """Where a link leads; outside the split folder is a DataError (a tree of links into another split, or
    elsewhere on disk, would mix in images that are not this split's)."""
    real = os.path.realpath(path)
    if not _inside(real, top):
        raise DataError(f"imagefolder: '{path}' is a symbolic link to '{real}', outside '{split_dir}'; every image "
                        "of a split must lie inside its folder (copy the files in instead of linking them)")
    return real


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
        batches = self._checked_epoch(batch_size, epoch, seed, augment, batch_sampler, drop_last, start_batch)
        keyed = []
        for b in range(start_batch, len(batches)):
            idx = batches[b]
            seeds = torch.randint(0, 2 ** 62, (idx.numel(),), generator=batch_generator(seed, epoch, b))
            if shard is not None:  # the rank's share, each sample keeping its own seed
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

