"""The built-in datasets: each one's builder, registered with its spec (:func:`register_dataset`,
in the order :data:`DATASETS` lists them), and :func:`load_dataset`, which validates the arguments
and calls the spec's loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .checks import _check_int, _resolve_device
from .containers import DatasetInfo, ImageData, InMemoryData
from .discovery import (
    CIFAR10_LAYOUT,
    CIFAR100_LAYOUT,
    FASHION_MNIST_LAYOUT,
    _check_imagefolder_root,
    _download,
    _locate,
    _missing_error,
)
from .folders import FolderData, scan_split
from .formats import _load_cifar10_dir, _load_cifar100_dir, _load_fashion_dir
from .registry import DATASETS, DatasetSpec, LoadRequest, check_dataset_args, register_dataset
from .seeding import _derive_seed

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

DEFAULT_IMAGE_SIZE = 224  # imagefolder crop size when image_size is None

SYNTHETIC_CLASSES = 4
SYNTHETIC_TRAIN = 256
SYNTHETIC_TEST = 128


# --------------------------------------------------------------------------- subsets


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


def _apply_limits(x_tr, y_tr, x_te, y_te, train_limit, test_limit):
    if train_limit is not None:
        keep = stratified_subset(y_tr, train_limit, "train_limit")
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if test_limit is not None:
        keep = stratified_subset(y_te, test_limit, "test_limit")
        x_te, y_te = x_te[keep], y_te[keep]
    return x_tr, y_tr, x_te, y_te


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


def _in_memory(spec: DatasetSpec, req: LoadRequest, x_tr, y_tr, x_te, y_te, class_names=None,
               coarse_labels=None, coarse_names=None) -> InMemoryData:
    """Apply the limits and hold the uint8 splits as :class:`InMemoryData` with the spec's defaults."""
    for split, x in (("training", x_tr), ("test", x_te)):
        if len(x) == 0:
            raise DataError(f"{spec.name}: the {split} split holds 0 images (data root {req.data_root or 'default'});"
                            " each split needs at least one: check that the data files are complete")
    x_tr, y_tr, x_te, y_te = _apply_limits(x_tr, y_tr, x_te, y_te, req.train_limit, req.test_limit)
    if class_names is None:
        class_names = list(spec.class_names)
    info = DatasetInfo(name=spec.name, num_classes=len(class_names), class_names=class_names,
                       in_channels=int(x_tr.shape[1]), image_size=int(x_tr.shape[2]),
                       num_train=int(x_tr.shape[0]), num_test=int(x_te.shape[0]),
                       coarse_labels=coarse_labels, coarse_names=coarse_names,
                       default_padding=spec.padding, default_flip=spec.flip)
    return InMemoryData(info, x_tr, y_tr, x_te, y_te, device=req.device)


def _find_files(spec: DatasetSpec, req: LoadRequest) -> Path:
    """The directory holding the spec's files, downloaded first when asked and not found."""
    found, looked = _locate(spec.files, req.data_root)
    if found is None and req.download:
        _download(spec.name, spec.files, req.data_root)
        found, looked = _locate(spec.files, req.data_root)
    if found is None:
        raise _missing_error(spec.name, spec.files, req.data_root, looked)
    return found


# --------------------------------------------------------------------------- the registered datasets


@register_dataset("digits", native_size=8, padding=1, flip=False, class_names=[str(i) for i in range(10)])
def _load_digits(spec: DatasetSpec, req: LoadRequest) -> InMemoryData:
    return _in_memory(spec, req, *_build_digits())


@register_dataset("fashion_mnist", native_size=28, padding=2, flip=True, class_names=FASHION_MNIST_CLASSES,
                  files=FASHION_MNIST_LAYOUT)
def _load_fashion_mnist(spec: DatasetSpec, req: LoadRequest) -> InMemoryData:
    return _in_memory(spec, req, *_load_fashion_dir(_find_files(spec, req)))


@register_dataset("cifar10", native_size=32, padding=4, flip=True, files=CIFAR10_LAYOUT)
def _load_cifar10(spec: DatasetSpec, req: LoadRequest) -> InMemoryData:
    class_names, x_tr, y_tr, x_te, y_te = _load_cifar10_dir(_find_files(spec, req))
    return _in_memory(spec, req, x_tr, y_tr, x_te, y_te, class_names=class_names)


@register_dataset("cifar100", native_size=32, padding=4, flip=True, files=CIFAR100_LAYOUT)
def _load_cifar100(spec: DatasetSpec, req: LoadRequest) -> InMemoryData:
    fine_names, coarse_names, coarse_labels, x_tr, y_tr, x_te, y_te = _load_cifar100_dir(_find_files(spec, req))
    return _in_memory(spec, req, x_tr, y_tr, x_te, y_te, class_names=fine_names,
                      coarse_labels=coarse_labels, coarse_names=coarse_names)


@register_dataset("imagefolder", native_size=None, padding=0, flip=True, check_root=_check_imagefolder_root)
def _load_imagefolder(spec: DatasetSpec, req: LoadRequest) -> FolderData:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = _check_imagefolder_root(req.data_root)
    classes, samples = {}, {}
    for split in ("train", "val"):
        classes[split], samples[split] = scan_split(root / split, IMG_EXTENSIONS)
    if len(classes["train"]) < 2:
        raise DataError(f"imagefolder: '{root / 'train'}' has {len(classes['train'])} class folder(s) "
                        f"{classes['train']}; classification needs at least 2 (train/<class>/*.jpg)")
    only_train = sorted(set(classes["train"]) - set(classes["val"]))
    only_val = sorted(set(classes["val"]) - set(classes["train"]))
    if only_train:
        raise DataError(f"imagefolder: class folder(s) {only_train} exist in '{root / 'train'}' but are "
                        f"missing in '{root / 'val'}'; both splits need the same classes")
    if only_val:
        raise DataError(f"imagefolder: class folder(s) {only_val} exist in '{root / 'val'}' but are "
                        f"missing in '{root / 'train'}'; both splits need the same classes")
    class_names = classes["train"]
    for split in ("train", "val"):
        counts = np.bincount(np.asarray([t for _, t in samples[split]], dtype=np.int64), minlength=len(class_names))
        empty = [class_names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(f"imagefolder: class folder(s) {[str(root / split / c) for c in empty]} contain "
                            f"no image files (allowed extensions: {', '.join(IMG_EXTENSIONS)})")
    for key, limit, what in (("train", req.train_limit, "train_limit"), ("val", req.test_limit, "test_limit")):
        if limit is not None:
            keep = stratified_subset(torch.tensor([t for _, t in samples[key]]), limit, what)
            samples[key] = [samples[key][i] for i in keep.tolist()]
    info = DatasetInfo(name=spec.name, num_classes=len(class_names), class_names=list(class_names),
                       in_channels=3, image_size=req.image_size or DEFAULT_IMAGE_SIZE,
                       num_train=len(samples["train"]), num_test=len(samples["val"]),
                       default_padding=spec.padding, default_flip=spec.flip)
    return FolderData(info, samples["train"], samples["val"], device=req.device, num_workers=req.num_workers)


@register_dataset("synthetic", native_size=8, padding=1, flip=False,
                  class_names=[f"pattern_{i}" for i in range(SYNTHETIC_CLASSES)])
def _load_synthetic(spec: DatasetSpec, req: LoadRequest) -> InMemoryData:
    return _in_memory(spec, req, *_build_synthetic(req.seed))


# --------------------------------------------------------------------------- entry point


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
    spec = DATASETS[name]
    native = spec.native_size
    if native is not None and image_size is not None and image_size != native:
        raise DataError(f"image_size={image_size} is not possible for {name}, whose images are "
                        f"{native}x{native}; image_size applies only to imagefolder")
    request = LoadRequest(data_root=data_root, download=download, device=dev, train_limit=train_limit,
                          test_limit=test_limit, image_size=image_size, num_workers=num_workers, seed=seed)
    return spec.loader(spec, request)
