"""2-D embeddings (UMAP / PCA) of penultimate features and their cache."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ._common import _names, _np, _run_class_names, _stage_number
from .features import _run_features


# ---------------------------------------------------------------------------
# 2-D embeddings (UMAP / PCA) and their cache
# ---------------------------------------------------------------------------

def embed(features: Any, method: str = "umap", seed: int = 0,
          n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """2-D embedding of (N, D) features with ``"umap"`` or ``"pca"``; returns (N, 2) float64.

    PCA (scikit-learn, full SVD) is deterministic. UMAP uses ``random_state=seed``
    (deterministic, single-threaded); ``umap`` is imported only when used, and
    its first call in a process compiles with numba (tens of seconds).
    ``n_neighbors`` is capped at N - 1 for small inputs.
    """
    X = _np(features)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D); got shape {X.shape}")
    n = X.shape[0]
    method = method.lower()
    if method == "pca":
        from sklearn.decomposition import PCA

        if n < 2:
            return np.zeros((n, 2))
        k = min(2, n, X.shape[1])
        Z = PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(X)
        if k < 2:
            Z = np.concatenate([Z, np.zeros((n, 2 - k))], axis=1)
        return np.asarray(Z, dtype=np.float64)
    if method == "umap":
        if n < 3:
            raise ValueError(f"UMAP needs at least 3 points; got {n}")
        with warnings.catch_warnings():  # umap warns that TensorFlow (ParametricUMAP) is absent
            warnings.simplefilter("ignore", ImportWarning)
            import umap  # lazy: heavy import + numba compilation

        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(int(n_neighbors), n - 1)),
                            min_dist=float(min_dist), random_state=int(seed), n_jobs=1)
        return np.asarray(reducer.fit_transform(X), dtype=np.float64)
    raise ValueError(f"method must be 'umap' or 'pca'; got {method!r}")


class EmbeddingCache:
    """Cache of 2-D embeddings of a run's penultimate features.

    Keyed by (run path, stage, split, classes, method, per_class, seed,
    n_neighbors, min_dist) plus a stamp (mtime, size) of the checkpoint the
    stage loads, so an embedding of the latest model is recomputed when
    training writes a new ``last.pt``. Results are kept in memory and, when
    ``disk=True`` and the run has a path, in ``<run>/cache/emb_<hash>.npz``
    (written atomically; unreadable or mismatching files are recomputed).

    ``get`` returns a DataFrame with columns x, y, label, class_name, index.
    """

    def __init__(self, disk: bool = True):
        self.disk = disk
        self._memory: dict[tuple, pd.DataFrame] = {}

    def __len__(self) -> int:
        return len(self._memory)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()

    @staticmethod
    def _checkpoint_stamp(run: Any, stage: int | None):
        path = getattr(run, "path", None)
        if path is None:
            return None
        name = "last.pt" if stage is None else f"stage_{stage}.pt"
        ckpt = Path(path) / "checkpoints" / name
        try:
            st = ckpt.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def key(self, run: Any, stage, split: str, classes, method: str, per_class, seed: int,
            n_neighbors: int = 15, min_dist: float = 0.1) -> tuple:
        """The cache key of one embedding (see the class docstring)."""
        path = getattr(run, "path", None)
        stage = _stage_number(stage)
        classes = None if classes is None else tuple(int(c) for c in classes)
        return (None if path is None else str(Path(path).resolve()), stage, str(split), classes,
                method.lower(), None if per_class is None else int(per_class), int(seed),
                int(n_neighbors), float(min_dist), self._checkpoint_stamp(run, stage))

    @staticmethod
    def _file(run: Any, key: tuple) -> Path | None:
        path = getattr(run, "path", None)
        if path is None:
            return None
        digest = hashlib.sha1(repr(key[1:]).encode()).hexdigest()[:16]
        return Path(path) / "cache" / f"emb_{digest}.npz"

    def get(self, run: Any, stage: int | str | None, split: str, classes: Sequence[int] | None,
            method: str, per_class: int | None = 100, seed: int = 0,
            n_neighbors: int = 15, min_dist: float = 0.1) -> pd.DataFrame:
        """Embedding of a seeded per-class sample of ``split`` (``classes=None``: all classes)."""
        key = self.key(run, stage, split, classes, method, per_class, seed, n_neighbors, min_dist)
        if key in self._memory:
            return self._memory[key].copy()
        names = _run_class_names(run)
        file = self._file(run, key) if self.disk else None
        arrays = self._load(file, key) if file is not None else None
        if arrays is None:
            _, feats, labels, idx = _run_features(run, key[1], split, key[3], per_class, seed)
            xy = embed(feats, method=method, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist)
            arrays = {"x": xy[:, 0], "y": xy[:, 1], "label": labels.astype(np.int64), "index": idx.astype(np.int64)}
            if file is not None:
                self._save(file, key, arrays)
        df = pd.DataFrame({
            "x": arrays["x"], "y": arrays["y"], "label": arrays["label"],
            "class_name": _names(names, arrays["label"]), "index": arrays["index"],
        })
        self._memory[key] = df
        return df.copy()

    @staticmethod
    def _load(file: Path, key: tuple) -> dict[str, np.ndarray] | None:
        try:
            with np.load(file, allow_pickle=False) as z:
                if str(z["key"]) != repr(key[1:]):
                    return None
                return {k: z[k] for k in ("x", "y", "label", "index")}
        except (OSError, KeyError, ValueError):
            return None

    @staticmethod
    def _save(file: Path, key: tuple, arrays: dict[str, np.ndarray]) -> None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=file.stem, suffix=".tmp.npz")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, key=np.array(repr(key[1:])), **arrays)
                os.replace(tmp, file)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError:
            pass  # a read-only run directory just means no disk cache
