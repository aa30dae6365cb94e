"""Readers of the on-disk formats: IDX (Fashion-MNIST, plain or gzipped) and the CIFAR python
pickles, read through a restricted unpickler.

CIFAR files are Python pickles, and unpickling can execute arbitrary code; they are read
through :class:`_RestrictedUnpickler`, which only resolves the handful of globals the genuine
files reference.  Every malformed file raises :class:`DataError` naming it.
"""

from __future__ import annotations

import gzip
import importlib
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .discovery import CIFAR10_TRAIN_FILES, _fashion_files_in


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

