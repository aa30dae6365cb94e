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
are read through a restricted unpickler (``formats._RestrictedUnpickler``) that
only resolves the handful of globals the genuine files reference.

Which module owns what:

* :mod:`.registry`: :class:`DatasetSpec` per dataset, :data:`DATASETS`, :func:`register_dataset`,
  :func:`native_size`, :func:`check_dataset_args`;
* :mod:`.loaders`: the built-in datasets' builders and specs, :func:`stratified_subset`,
  :func:`load_dataset`;
* :mod:`.containers`: :class:`DatasetInfo`, :class:`ImageData` (batching, ``eval_batches``),
  :class:`InMemoryData`; :mod:`.folders`: :class:`FolderData`;
* :mod:`.augment`: :data:`AUGMENTS` and the batched crop / flip; :mod:`.samplers`: the CS-KD
  pair batch sampler; :mod:`.seeding`: the ``(seed, epoch, batch)`` generators;
* :mod:`.formats`: IDX and CIFAR readers, the restricted unpickler; :mod:`.discovery`: where
  files are looked for (patch ``DEFAULT_DATA_ROOT`` / ``FASHION_MNIST_SYSTEM_DIR`` there) and
  downloading; :mod:`.checks`: argument checks.
"""

from ..errors import DataError
from .augment import AUGMENTS, crop_flip_uint8
from .containers import DatasetInfo, ImageData, InMemoryData
from .folders import IMAGENET_MEAN, IMAGENET_STD, FolderData
from .formats import read_idx
from .loaders import FASHION_MNIST_CLASSES, load_dataset, stratified_subset
from .registry import DATASETS, DatasetSpec, check_dataset_args, native_size, register_dataset
from .samplers import PairBatchSampler, make_pair_batch_sampler
from .seeding import batch_generator, epoch_generator

# also importable from here, as from the single module before (not in __all__)
from .augment import crop_flip_params  # noqa: F401
from .containers import SPLITS  # noqa: F401
from .discovery import CIFAR10_DIR, CIFAR10_FILES, CIFAR10_TRAIN_FILES, CIFAR100_DIR, CIFAR100_FILES  # noqa: F401
from .discovery import FASHION_MNIST_FILES  # noqa: F401
from .loaders import DEFAULT_IMAGE_SIZE, SYNTHETIC_CLASSES, SYNTHETIC_TEST, SYNTHETIC_TRAIN  # noqa: F401

__all__ = [
    "DATASETS",
    "AUGMENTS",
    "DataError",
    "DatasetInfo",
    "DatasetSpec",
    "ImageData",
    "InMemoryData",
    "FolderData",
    "PairBatchSampler",
    "check_dataset_args",
    "load_dataset",
    "make_pair_batch_sampler",
    "native_size",
    "register_dataset",
    "crop_flip_uint8",
    "epoch_generator",
    "batch_generator",
    "stratified_subset",
    "read_idx",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

