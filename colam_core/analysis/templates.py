"""Analysis of trained runs: representations, templates, distances, calibration,
soft-label structure, learning curves and results tables.

Everything here returns numpy arrays, plain dicts or pandas DataFrames; nothing
plots. Figures live in ``workbench`` and are drawn from these outputs.

Two kinds of functions:

* **pure functions on arrays** (``template_plane``, ``template_distances``,
  ``adt_adc``, ``expected_calibration_error``, ``sharpness``, ...): no run, no
  model, easy to test by hand;
* **run helpers** (``*_for_run``, ``EmbeddingCache``) that take a loaded run
  (``runs.load_run``; anything with ``.model(stage)``, ``.data(split)``,
  ``.class_names`` and ``.path`` will do), compute penultimate features in
  batches under ``torch.no_grad`` and call the pure functions.

Conventions
-----------
* A soft-label matrix is C x C with row ``c`` the soft label of class ``c``.
* A *template* is a row of the final linear layer (``model.classifier.weight``).
* Class columns hold integer class ids (``class``, ``other``, ``label``); the
  matching ``*_name`` columns hold display names (``str(id)`` when unknown).
* Stages are named like the keys of ``soft_labels.npz`` (``"stage_1"``, ...) in
  the dict-based soft-label functions; insertion order of the dict is the
  stage order.

Sweeps and the paper's comparison tables live in ``colam_core.sweeps``
(``Sweep``, ``interval_peers_grid``, ``temperature_sweep``, ``methods_seeds``,
``grid_table``, ``temperature_table``, ``methods_table``); the expected
accuracy of soft-label checkpoints (paper Fig. 1b), which trains, is
``sweeps.expected_accuracy`` (analysis never trains). ``results_table`` below is the mean ± std
table those build on.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import metrics as _metrics
from .metrics import expected_calibration_error
from .runs import stage_number


__all__ = [
    # features and sampling
    "penultimate_features",
    "logits",
    "sample_indices",
    # template plane (Mueller et al. 2019; COLAM Fig. 2)
    "template_plane",
    "template_plane_for_run",
    # embeddings
    "embed",
    "EmbeddingCache",
    # distances (COLAM Table 5, Fig. 3)
    "template_distances",
    "template_distances_for_run",
    "adt_adc",
    "adt_adc_for_run",
    # calibration
    "expected_calibration_error",
    "reliability_bins",
    "predict_probs",
    "calibration_for_run",
    # soft-label structure
    "soft_labels_by_stage",
    "top_k_soft",
    "superclass_share",
    "superclass_share_summary",
    "sharpness",
    "drift",
    "own_mass_table",
    # curves and tables
    "learning_curves",
    "results_table",
]

_EPS = 1e-12


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------

def _np(a: Any, dtype=np.float64) -> np.ndarray:
    """Array-like or torch tensor -> numpy array (on CPU, detached)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype) if dtype is not None else np.asarray(a)


def _names(class_names: Sequence[str] | None, ids: Iterable[int]) -> list[str]:
    """Display names for class ids; ``str(id)`` where no name is known."""
    out = []
    for c in ids:
        c = int(c)
        if class_names is not None and 0 <= c < len(class_names):
            out.append(str(class_names[c]))
        else:
            out.append(str(c))
    return out


def _run_class_names(run: Any) -> list[str] | None:
    names = getattr(run, "class_names", None)
    return list(names) if names is not None else None


def _stage_number(stage: int | str | None) -> int | None:
    """``3``, ``"3"`` or ``"stage_3"`` -> ``3`` (runs.stage_number); None (the latest) stays None."""
    return None if stage is None else stage_number(stage)


def _l2_normalize(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.maximum(norms, _EPS)


def _check_soft(soft: Any) -> np.ndarray:
    s = _np(soft)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"soft labels must be a square C x C matrix; got shape {s.shape}")
    return s


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy in nats (0 log 0 = 0)."""
    p = np.clip(p, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


# ---------------------------------------------------------------------------
# features and sampling
# ---------------------------------------------------------------------------

def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _batched_forward(model: torch.nn.Module, fn, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Run ``fn(batch)`` over ``x`` in eval mode without gradients; restores the model's mode."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    x = torch.as_tensor(x)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].to(device)
                outs.append(fn(xb).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("x is empty")
    return torch.cat(outs).numpy()


def penultimate_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Penultimate-layer activations ``model.features(x)`` as an (N, D) float32 array.

    Runs in eval mode under ``torch.no_grad`` in batches on the model's device;
    the model's train/eval mode is restored afterwards.
    """
    return _batched_forward(model, model.features, x, batch_size)


def logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Raw model outputs ``model(x)`` (not divided by any temperature) as an (N, C) float32 array."""
    return _batched_forward(model, model, x, batch_size)


def sample_indices(labels: Any, classes: Sequence[int] | None = None,
                   per_class: int | None = 100, seed: int = 0) -> np.ndarray:
    """Seeded random sample of up to ``per_class`` indices of each class, grouped by class.

    Classes appear in the given order (all classes present in ``labels``, in
    increasing order, when ``classes`` is None); indices inside a class are
    sorted. A class with fewer samples contributes all of them;
    ``per_class=None`` takes every sample. Each class draws from its own
    generator seeded by ``(seed, class)``, so the samples of a class do not
    depend on which other classes were chosen.
    """
    y = _np(labels, dtype=np.int64).ravel()
    if classes is None:
        classes = np.unique(y).tolist()
    out = []
    for c in classes:
        idx = np.flatnonzero(y == int(c))
        if per_class is not None and len(idx) > per_class:
            rng = np.random.default_rng([int(seed), int(c)])
            idx = np.sort(rng.choice(idx, size=int(per_class), replace=False))
        out.append(idx)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _classifier_params(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    clf = model.classifier
    w = clf.weight.detach().cpu().double().numpy()
    b = clf.bias.detach().cpu().double().numpy() if getattr(clf, "bias", None) is not None else None
    return w, b


def _run_features(run: Any, stage, split: str, classes, per_class, seed, batch_size: int = 512):
    """(model, features, labels, indices) for a seeded per-class sample of ``split``."""
    model = run.model(_stage_number(stage))
    x, y = run.data(split)
    y_np = _np(y, dtype=np.int64).ravel()
    idx = sample_indices(y_np, classes, per_class, seed)
    feats = penultimate_features(model, x[torch.as_tensor(idx, dtype=torch.long)], batch_size=batch_size)
    return model, feats, y_np[idx], idx


# ---------------------------------------------------------------------------
# template plane (Mueller, Kornblith & Hinton 2019; COLAM Fig. 2)
# ---------------------------------------------------------------------------

def template_plane(weight: Any, bias: Any | None, features: Any,
                   classes: Sequence[int] = (0, 1, 2)) -> dict[str, np.ndarray]:
    """Project penultimate activations onto the plane through three class templates.

    Following Müller et al. (2019), templates are augmented with their bias
    (``w_i' = [w_i, b_i]``; zero bias when ``bias`` is None) and activations
    with a constant 1 (``[h, 1]``), so that ``[h, 1] . w_i'`` is logit ``i``.
    The plane's orthonormal basis comes from the QR decomposition of
    ``[w_b' - w_a', w_c' - w_a']`` and its origin is the centroid of the three
    augmented templates. Signs are fixed so that template ``b`` lies along +x
    from template ``a`` and template ``c`` has a larger y than ``a`` and ``b``:
    the triangle keeps its orientation across stages and runs.

    Returns a dict with ``points`` (N, 2), ``templates`` (3, 2) in the order of
    ``classes``, ``basis`` (D+1, 2) and ``centroid`` (D+1,).
    """
    w = _np(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be (C, D); got shape {w.shape}")
    C, D = w.shape
    b = np.zeros(C) if bias is None else _np(bias).ravel()
    if b.shape != (C,):
        raise ValueError(f"bias must have shape ({C},); got {b.shape}")
    h = _np(features)
    if h.ndim != 2 or h.shape[1] != D:
        raise ValueError(f"features must be (N, {D}); got shape {h.shape}")
    classes = tuple(int(c) for c in classes)
    if len(classes) != 3 or len(set(classes)) != 3 or not all(0 <= c < C for c in classes):
        raise ValueError(f"classes must be three distinct class ids in [0, {C}); got {classes}")

    w_aug = np.concatenate([w, b[:, None]], axis=1)[list(classes)]        # (3, D+1)
    h_aug = np.concatenate([h, np.ones((h.shape[0], 1))], axis=1)          # (N, D+1)
    M = np.stack([w_aug[1] - w_aug[0], w_aug[2] - w_aug[0]], axis=1)       # (D+1, 2)
    Q, R = np.linalg.qr(M)
    scale = max(abs(R[0, 0]), 1.0)
    if abs(R[0, 0]) < 1e-10 or abs(R[1, 1]) < 1e-10 * scale:
        raise ValueError(f"templates of classes {classes} are (nearly) collinear: no unique plane")
    signs = np.sign(np.diag(R))
    Q = Q * signs[None, :]
    centroid = w_aug.mean(axis=0)
    return {
        "points": (h_aug - centroid) @ Q,
        "templates": (w_aug - centroid) @ Q,
        "basis": Q,
        "centroid": centroid,
    }


def template_plane_for_run(run: Any, stage: int | str | None = None, classes: Sequence[int] = (0, 1, 2),
                           split: str = "train", per_class: int | None = 100, seed: int = 0,
                           batch_size: int = 512) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Template plane of a run's model at the end of ``stage`` (None = latest).

    Samples ``per_class`` seeded random examples of each of the three classes
    from ``split`` (see ``sample_indices``), computes their penultimate
    features and projects them with ``template_plane``.

    Returns ``(points, templates)``: ``points`` has columns x, y, label,
    class_name, index (the dataset index in ``split``); ``templates`` has
    columns x, y, label, class_name (one row per class, in ``classes`` order).
    """
    classes = tuple(int(c) for c in classes)
    model, feats, labels, idx = _run_features(run, stage, split, classes, per_class, seed, batch_size)
    w, b = _classifier_params(model)
    plane = template_plane(w, b, feats, classes)
    names = _run_class_names(run)
    points = pd.DataFrame({
        "x": plane["points"][:, 0],
        "y": plane["points"][:, 1],
        "label": labels.astype(np.int64),
        "class_name": _names(names, labels),
        "index": idx.astype(np.int64),
    })
    templates = pd.DataFrame({
        "x": plane["templates"][:, 0],
        "y": plane["templates"][:, 1],
        "label": np.asarray(classes, dtype=np.int64),
        "class_name": _names(names, classes),
    })
    return points, templates


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


# ---------------------------------------------------------------------------
# distances between templates and representations (COLAM Table 5, Fig. 3)
# ---------------------------------------------------------------------------

def template_distances(weight: Any, classes: Sequence[int] | None = None,
                       class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Euclidean distances between L2-normalized class templates (rows of ``weight``).

    Returns a square DataFrame over ``classes`` (all classes when None),
    rows and columns labelled by class id, or by name when ``class_names``
    (names of all C classes, indexed by class id) is given.
    """
    w = _np(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be (C, D); got shape {w.shape}")
    classes = list(range(w.shape[0])) if classes is None else [int(c) for c in classes]
    t = _l2_normalize(w[classes])
    d = np.linalg.norm(t[:, None, :] - t[None, :, :], axis=-1)
    labels = _names(class_names, classes) if class_names is not None else classes
    return pd.DataFrame(d, index=labels, columns=labels)


def template_distances_for_run(run: Any, stage: int | str | None = None, classes: Sequence[int] | None = None,
                               names: bool = True) -> pd.DataFrame:
    """``template_distances`` of the run's classifier at the end of ``stage`` (None = latest)."""
    w, _ = _classifier_params(run.model(_stage_number(stage)))
    return template_distances(w, classes, _run_class_names(run) if names else None)


def adt_adc(features: Any, labels: Any, weight: Any, classes: Sequence[int] | None = None,
            normalize: bool = False, class_names: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Average distances to templates (ADT) and to class centroids (ADC), COLAM Fig. 3.

    For every ordered pair (i, j) of ``classes`` (all classes when None):

    * ``ADT[i, j]`` = mean over samples ``h`` of class i of ``||h - w_j||``,
      with ``w_j`` the template (row j of ``weight``);
    * ``ADC[i, j]`` = mean over samples ``h`` of class i of ``||h - mu_j||``,
      with ``mu_j`` the mean feature of class j.

    With ``normalize=True`` features and templates are L2-normalized first and
    centroids are the means of the normalized features. Rows are the sample
    class i, columns the template / centroid class j; labels are class ids or,
    with ``class_names``, names. Classes without samples give NaN.
    """
    h = _np(features)
    y = _np(labels, dtype=np.int64).ravel()
    w = _np(weight)
    if h.ndim != 2 or w.ndim != 2 or h.shape[1] != w.shape[1]:
        raise ValueError(f"features (N, D) and weight (C, D) must share D; got {h.shape} and {w.shape}")
    if y.shape[0] != h.shape[0]:
        raise ValueError(f"labels must have {h.shape[0]} entries; got {y.shape[0]}")
    classes = list(range(w.shape[0])) if classes is None else [int(c) for c in classes]
    if normalize:
        h, w = _l2_normalize(h), _l2_normalize(w)
    D = h.shape[1]
    centroids = np.stack([h[y == c].mean(axis=0) if np.any(y == c) else np.full(D, np.nan) for c in classes])
    templates = w[classes]
    k = len(classes)
    adt = np.full((k, k), np.nan)
    adc = np.full((k, k), np.nan)
    for a, i in enumerate(classes):
        hi = h[y == i]
        if len(hi) == 0:
            continue
        adt[a] = np.linalg.norm(hi[:, None, :] - templates[None, :, :], axis=-1).mean(axis=0)
        adc[a] = np.linalg.norm(hi[:, None, :] - centroids[None, :, :], axis=-1).mean(axis=0)
    names = _names(class_names, classes) if class_names is not None else classes
    return pd.DataFrame(adt, index=names, columns=names), pd.DataFrame(adc, index=names, columns=names)


def adt_adc_for_run(run: Any, stage: int | str | None = None, classes: Sequence[int] | None = None,
                    split: str = "train", per_class: int | None = None, seed: int = 0,
                    normalize: bool = False, names: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``adt_adc`` on the penultimate features of a run's model (all samples of ``classes`` by default)."""
    model, feats, labels, _ = _run_features(run, stage, split, classes, per_class, seed)
    w, _ = _classifier_params(model)
    if classes is None:
        classes = list(range(w.shape[0]))
    return adt_adc(feats, labels, w, classes, normalize=normalize,
                   class_names=_run_class_names(run) if names else None)


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------

def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> pd.DataFrame:
    """``metrics.reliability_bins`` as a DataFrame: one row per bin (bin_lower, bin_upper, confidence,
    accuracy, count)."""
    return pd.DataFrame(_metrics.reliability_bins(probs, labels, n_bins))


def predict_probs(run: Any, stage: int | str | None = None, split: str = "test",
                  temperature: float | None = None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, C), labels (N,)) of a run's model on ``split``.

    ``probs = softmax(logits / temperature)``; ``temperature`` defaults to
    ``run.output_temperature`` (the T of the training loss; 1 when absent).
    """
    if temperature is None:
        temperature = float(getattr(run, "output_temperature", 1.0) or 1.0)
    model = run.model(_stage_number(stage))
    x, y = run.data(split)
    z = torch.from_numpy(logits(model, x, batch_size=batch_size)).double() / float(temperature)
    return torch.softmax(z, dim=1).numpy(), _np(y, dtype=np.int64).ravel()


def calibration_for_run(run: Any, stage: int | str | None = None, split: str = "test", n_bins: int = 15,
                        temperature: float | None = None) -> dict[str, Any]:
    """Accuracy, ECE, NLL and reliability bins of a run's model (see ``predict_probs``)."""
    p, y = predict_probs(run, stage, split, temperature)
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
    return {
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
        "ece": expected_calibration_error(p, y, n_bins),
        "nll": nll,
        "bins": reliability_bins(p, y, n_bins),
    }


# ---------------------------------------------------------------------------
# soft-label structure
# ---------------------------------------------------------------------------

def soft_labels_by_stage(run: Any) -> dict[str, np.ndarray]:
    """All soft-label matrices of a run, ``{"stage_1": C x C, ...}`` in stage order."""
    return {k: np.asarray(run.soft_labels(k), dtype=np.float64) for k in run.soft_label_keys()}


def top_k_soft(soft: Any, k: int = 5, class_names: Sequence[str] | None = None,
               include_self: bool = False) -> pd.DataFrame:
    """The ``k`` largest entries of each class's soft label.

    Returns columns class, class_name, rank (1 = largest), other, other_name,
    mass. The class itself is skipped unless ``include_self``. Ties keep the
    lower class id first.
    """
    s = _check_soft(soft)
    C = s.shape[0]
    names = _names(class_names, range(C))
    rows = []
    for c in range(C):
        order = np.argsort(-s[c], kind="stable")
        if not include_self:
            order = order[order != c]
        for r, o in enumerate(order[:k], start=1):
            rows.append((c, names[c], r, int(o), names[o], float(s[c, o])))
    return pd.DataFrame(rows, columns=["class", "class_name", "rank", "other", "other_name", "mass"])


def superclass_share(soft: Any, coarse_labels: Sequence[int], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """How much of each class's off-diagonal soft-label mass stays inside its superclass.

    ``coarse_labels[c]`` is the superclass of class ``c`` (CIFAR-100: 20
    superclasses of 5). Per class: ``share`` = off-diagonal mass on classes of
    the same superclass / total off-diagonal mass (NaN when the latter is 0);
    ``chance_share`` = (size of own superclass - 1) / (C - 1), the share of a
    soft label spreading its off-diagonal mass uniformly; ``lift`` = share /
    chance_share. Columns: class, class_name, superclass, off_diagonal_mass,
    in_superclass_mass, share, chance_share, lift.
    """
    s = _check_soft(soft)
    C = s.shape[0]
    coarse = np.asarray(coarse_labels, dtype=np.int64).ravel()
    if coarse.shape != (C,):
        raise ValueError(f"coarse_labels must have {C} entries; got {coarse.shape[0]}")
    if C < 2:
        raise ValueError("superclass share needs at least two classes")
    off = s.copy()
    np.fill_diagonal(off, 0.0)
    same = coarse[:, None] == coarse[None, :]
    off_mass = off.sum(axis=1)
    in_mass = (off * same).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(off_mass > 0, in_mass / np.where(off_mass > 0, off_mass, 1.0), np.nan)
        chance = (same.sum(axis=1) - 1) / (C - 1)
        lift = np.where(chance > 0, share / np.where(chance > 0, chance, 1.0), np.nan)
    return pd.DataFrame({
        "class": np.arange(C), "class_name": _names(class_names, range(C)), "superclass": coarse,
        "off_diagonal_mass": off_mass, "in_superclass_mass": in_mass,
        "share": share, "chance_share": chance, "lift": lift,
    })


def superclass_share_summary(table: pd.DataFrame) -> dict[str, float]:
    """Means over classes of a ``superclass_share`` table: share, chance_share and their ratio."""
    mean_share = float(table["share"].mean())
    mean_chance = float(table["chance_share"].mean())
    return {
        "mean_share": mean_share,
        "mean_chance_share": mean_chance,
        "ratio": mean_share / mean_chance if mean_chance > 0 else float("nan"),
    }


def sharpness(soft_by_stage: Mapping[str, Any], threshold: float = 0.5,
              class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-stage, per-class sharpness of soft labels: the softening-ratchet diagnostic.

    Columns: stage, class, class_name, own_mass (diagonal), entropy (nats),
    max_other_mass, max_other_class, max_other_name, flag, flag_reason. A class
    is flagged when its own mass is below ``threshold`` or below the mass of
    another class; ``flag_reason`` says which ("" when not flagged).
    """
    rows = []
    for stage, soft in soft_by_stage.items():
        s = _check_soft(soft)
        C = s.shape[0]
        names = _names(class_names, range(C))
        ent = _entropy(s)
        for c in range(C):
            own = float(s[c, c])
            others = s[c].copy()
            others[c] = -np.inf
            o = int(np.argmax(others)) if C > 1 else -1
            max_other = float(s[c, o]) if C > 1 else float("nan")
            reasons = []
            if own < threshold:
                reasons.append(f"own mass {own:.2f} < {threshold:.2f}")
            if C > 1 and own < max_other:
                reasons.append(f"own mass {own:.2f} below {names[o]} ({max_other:.2f})")
            rows.append((str(stage), c, names[c], own, float(ent[c]), max_other, o,
                         names[o] if o >= 0 else "", bool(reasons), "; ".join(reasons)))
    return pd.DataFrame(rows, columns=["stage", "class", "class_name", "own_mass", "entropy", "max_other_mass",
                                       "max_other_class", "max_other_name", "flag", "flag_reason"])


def drift(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None,
          include_hard: bool = False) -> pd.DataFrame:
    """Total-variation distance ``0.5 * sum |p - q|`` of each class's soft label between consecutive stages.

    Columns: from_stage, to_stage, class, class_name, tv. With
    ``include_hard=True`` the hard labels (identity, named "hard") come first,
    so the first row block measures how far stage 1 moved from one-hot.
    """
    items = [(str(k), _check_soft(v)) for k, v in soft_by_stage.items()]
    if include_hard and items:
        items.insert(0, ("hard", np.eye(items[0][1].shape[0])))
    rows = []
    for (a, p), (b, q) in zip(items[:-1], items[1:]):
        if p.shape != q.shape:
            raise ValueError(f"stages {a} and {b} have different shapes {p.shape} and {q.shape}")
        tv = 0.5 * np.abs(p - q).sum(axis=1)
        names = _names(class_names, range(p.shape[0]))
        rows.extend((a, b, c, names[c], float(tv[c])) for c in range(p.shape[0]))
    return pd.DataFrame(rows, columns=["from_stage", "to_stage", "class", "class_name", "tv"])


def own_mass_table(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Own-class mass (diagonal) per class and stage: rows classes (names when given), columns stages."""
    cols = {str(k): np.diag(_check_soft(v)) for k, v in soft_by_stage.items()}
    if not cols:
        return pd.DataFrame()
    C = len(next(iter(cols.values())))
    index = _names(class_names, range(C)) if class_names is not None else list(range(C))
    df = pd.DataFrame(cols, index=index)
    df.index.name = "class"
    df.columns.name = "stage"
    return df


# ---------------------------------------------------------------------------
# learning curves and results tables
# ---------------------------------------------------------------------------

_HISTORY_METRICS = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_s")


def learning_curves(history: pd.DataFrame, metrics: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Long-format learning curves and stage boundaries from a run's ``history.csv``.

    Returns ``(curves, boundaries)``. ``curves`` has columns epoch, stage,
    metric, value (one row per epoch and metric present in ``history``; NaN
    values dropped). ``metrics`` defaults to every numeric column other than
    epoch and stage, standard columns first. ``boundaries`` lists the epochs
    at whose end the stage changed, i.e. the last epoch of every stage but the
    last (where the soft labels were updated); draw a line at ``e`` (or
    ``e + 0.5`` to sit between points).
    """
    if "epoch" not in history.columns or "stage" not in history.columns:
        raise ValueError("history needs 'epoch' and 'stage' columns")
    h = history.sort_values("epoch", kind="stable").reset_index(drop=True)
    if metrics is None:
        numeric = [c for c in h.columns if c not in ("epoch", "stage") and pd.api.types.is_numeric_dtype(h[c])]
        metrics = [m for m in _HISTORY_METRICS if m in numeric] + [m for m in numeric if m not in _HISTORY_METRICS]
    else:
        missing = [m for m in metrics if m not in h.columns]
        if missing:
            raise KeyError(f"history has no column(s) {missing}")
    curves = h.melt(id_vars=["epoch", "stage"], value_vars=list(metrics), var_name="metric", value_name="value")
    curves = curves.dropna(subset=["value"]).reset_index(drop=True)
    stage = h["stage"].to_numpy()
    changed = np.flatnonzero(stage[1:] != stage[:-1])
    boundaries = [int(h["epoch"].iloc[i]) for i in changed]
    return curves, boundaries


def results_table(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, metric: str = "test_acc",
                  by: str | Sequence[str] = "method", scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds per method, like the paper's Tables 1-4.

    ``rows``: one dict per finished run, e.g. ``dict(method="colam",
    seed=0, dataset="cifar100", test_acc=0.77)``. Groups by ``by`` (a column
    or list of columns; e.g. ``["dataset", "method"]``), in order of first
    appearance. Values are multiplied by ``scale`` (``scale=100, decimals=2``
    gives paper-style percentages). Returns the group columns plus mean, std
    (sample std, ddof=1; NaN for one run), n, and ``mean ± std`` (formatted;
    just the mean when n == 1). Missing metric values are ignored. For a
    method x dataset grid: ``table.pivot(index="method", columns="dataset",
    values="mean ± std")``.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [metric] if c not in df.columns]
    if missing:
        raise KeyError(f"results rows have no column(s) {missing}")
    df["_v"] = pd.to_numeric(df[metric], errors="coerce") * float(scale)
    g = df.groupby(keys, sort=False, dropna=False)["_v"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count().astype(np.int64)}).reset_index()

    def fmt(m: float, s: float, n: int) -> str:
        if n == 0 or math.isnan(m):
            return "-"
        if n == 1 or math.isnan(s):
            return f"{m:.{decimals}f}"
        return f"{m:.{decimals}f} ± {s:.{decimals}f}"

    out["mean ± std"] = [fmt(m, s, n) for m, s, n in zip(out["mean"], out["std"], out["n"])]
    return out
