"""The dataset registry: one :class:`DatasetSpec` per dataset, the single source of the names
(:data:`DATASETS`), native image sizes, augmentation defaults, class names and file layouts.

Datasets are added with :func:`register_dataset` (the built-in ones in :mod:`.loaders`);
:func:`load_dataset`, :func:`check_dataset_args` and ``Config.validate`` read the specs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from ..errors import DataError
from .checks import _fmt_allowed
from .discovery import FileLayout, _locate, _missing_error

if TYPE_CHECKING:
    from .containers import ImageData


@dataclass(frozen=True)
class LoadRequest:
    """The validated arguments of one :func:`load_dataset` call, as a spec's loader receives them."""

    data_root: str | os.PathLike | None
    download: bool
    device: torch.device
    train_limit: int | None
    test_limit: int | None
    image_size: int | None
    num_workers: int
    seed: int


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the package knows about one dataset.

    ``loader(spec, request)`` builds the :class:`ImageData`. How the data is found: nothing
    on disk (``files`` and ``check_root`` None: built in memory), searched for and
    downloadable (``files``, see :mod:`.discovery`), or a tree the user names
    (``check_root(data_root)``, stat calls only).
    """

    name: str
    loader: Callable[[DatasetSpec, LoadRequest], ImageData]
    native_size: int | None  # H == W of every image; None: any size (``image_size`` chooses)
    padding: int  # crop padding of augment="auto"
    flip: bool  # whether augment="auto" flips (False where mirroring changes meaning, e.g. digits)
    class_names: tuple[str, ...] | None = None  # None: read from the files
    files: FileLayout | None = None
    check_root: Callable[[object], object] | None = None


DATASETS: dict[str, DatasetSpec] = {}
"""Name -> spec, in registration order: the names accepted by :func:`load_dataset` / :func:`check_dataset_args`."""


def register_dataset(name: str, *, native_size: int | None, padding: int, flip: bool,
                     class_names: Sequence[str] | None = None, files: FileLayout | None = None,
                     check_root: Callable[[object], object] | None = None):
    """Decorator registering ``loader(spec, request) -> ImageData`` as dataset ``name`` in :data:`DATASETS`."""
    def add(loader):
        if name in DATASETS:
            raise DataError(f"dataset {name!r} is already registered")
        DATASETS[name] = DatasetSpec(name=name, loader=loader, native_size=native_size, padding=padding,
                                     flip=flip, class_names=None if class_names is None else tuple(class_names),
                                     files=files, check_root=check_root)
        return loader
    return add


def native_size(name: str) -> int | None:
    """Fixed image size (H == W) of dataset ``name``; None when any size works or the name is unknown."""
    spec = DATASETS.get(name)
    return None if spec is None else spec.native_size


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
    spec = DATASETS[name]
    if spec.check_root is not None:
        spec.check_root(data_root)
    elif spec.files is not None and not download:
        found, looked = _locate(spec.files, data_root)
        if found is None:
            raise _missing_error(name, spec.files, data_root, looked)
