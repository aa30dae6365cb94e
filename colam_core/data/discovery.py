"""Finding a dataset's files on disk, and fetching them with torchvision when asked.

A :class:`FileLayout` says which directories may hold a dataset (``data_root`` or the
download cache, a few conventional sub-folders, Debian's ``/usr/share/datasets``) and how
to tell that one holds every file; :func:`_locate` searches them with stat calls only.
When nothing is found, :func:`_missing_error` lists every place looked and both fixes.
The layouts are attached to their datasets in :mod:`.loaders` (see :mod:`.registry`).

The directory constants are read when a search runs, so a test that wants empty default
places patches them here (``colam_core.data.discovery.DEFAULT_DATA_ROOT``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DataError

#: Where ``download=True`` stores data when no ``data_root`` is given (also searched then).
DEFAULT_DATA_ROOT = "~/.cache/colam/data"
#: Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files here.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

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


@dataclass(frozen=True)
class FileLayout:
    """Where a dataset's files may lie and how to tell that a directory holds them all."""

    holds: str  # what data_root must hold, for error messages
    candidates: Callable[[object], list[Path]]  # data_root -> directories searched, in order
    missing: Callable[[Path], list[str]]  # existing directory -> the files it lacks
    files: tuple[str, ...]  # what a directory that does not exist lacks
    torchvision_class: str  # the torchvision.datasets class that download=True uses
    by_hand: str = ""  # how to fetch and unpack the files yourself (no torchvision downloader)


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


def _cifar_candidates(sub: str, data_root) -> list[Path]:
    cands = []
    for r in _root_dirs(data_root):
        cands += [r / sub, r]
    return cands


def _files_missing(files: tuple[str, ...], d: Path) -> list[str]:
    return [f for f in files if not (d / f).is_file()]


FASHION_MNIST_LAYOUT = FileLayout(
    holds="the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)",
    candidates=_fashion_candidates,
    missing=lambda d: _fashion_files_in(d)[1],
    files=tuple(FASHION_MNIST_FILES.values()),
    torchvision_class="FashionMNIST",
)
CIFAR10_LAYOUT = FileLayout(
    holds=f"{CIFAR10_DIR}/ (data_batch_1..5, test_batch, batches.meta)",
    candidates=lambda data_root: _cifar_candidates(CIFAR10_DIR, data_root),
    missing=lambda d: _files_missing(CIFAR10_FILES, d),
    files=CIFAR10_FILES,
    torchvision_class="CIFAR10",
    by_hand="curl -LO https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz && "
            "tar xzf cifar-10-python.tar.gz -C DIR (makes DIR/cifar-10-batches-py/; then data_root=DIR)",
)
CIFAR100_LAYOUT = FileLayout(
    holds=f"{CIFAR100_DIR}/ (train, test, meta)",
    candidates=lambda data_root: _cifar_candidates(CIFAR100_DIR, data_root),
    missing=lambda d: _files_missing(CIFAR100_FILES, d),
    files=CIFAR100_FILES,
    torchvision_class="CIFAR100",
    by_hand="curl -LO https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz && "
            "tar xzf cifar-100-python.tar.gz -C DIR (makes DIR/cifar-100-python/; then data_root=DIR)",
)


def _describe(d: Path, missing: list[str]) -> str:
    if not d.is_dir():
        return f"  {d} (no such directory)"
    return f"  {d} (missing: {', '.join(missing)})"


def _locate(layout: FileLayout, data_root):
    """Return (directory, None) where the dataset's files are, or (None, list of descriptions)."""
    looked = []
    for d in layout.candidates(data_root):
        missing = layout.missing(d) if d.is_dir() else list(layout.files)
        if not missing:
            return d, None
        looked.append(_describe(d, missing))
    return None, looked


def _missing_error(name: str, layout: FileLayout, data_root, looked: list[str]) -> DataError:
    where = "\n".join(looked)
    target = _download_root(data_root)
    return DataError(
        f"{name} data not found (quick runs read the same files). Looked in:\n{where}\n"
        f"Fix: pass data_root=<dir holding {layout.holds}> (CLI --data-root DIR, papermill -p data_root DIR), "
        f"or download=True (CLI --download, papermill -p download True) to fetch it into {target}."
        + (f"\nBy hand: {layout.by_hand}." if layout.by_hand else ""))


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


# --------------------------------------------------------------------------- downloading


def _download(name: str, layout: FileLayout, data_root) -> None:
    """Fetch a dataset with torchvision into the download root (errors become DataError)."""
    import torchvision.datasets as tvd

    root = _download_root(data_root)
    cls = getattr(tvd, layout.torchvision_class)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as e:  # network errors, checksum mismatches, permissions...
        raise DataError(f"downloading {name} into '{root}' failed ({type(e).__name__}: {e}). "
                        f"Without network access, put the files there yourself and pass "
                        f"data_root=<dir holding {layout.holds}> (CLI --data-root DIR)") from e
