"""Template plane (Mueller et al. 2019; COLAM Fig. 2) and distances between templates and representations
(COLAM Table 5, Fig. 3)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ._common import _l2_normalize, _names, _np, _run_class_names, _stage_number
from .features import _classifier_params, _run_features


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
            normalize: bool = True, class_names: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Average distances to templates (ADT) and to class centroids (ADC), COLAM Fig. 3.

    For every ordered pair (i, j) of ``classes`` (all classes when None):

    * ``ADT[i, j]`` = mean over samples ``h`` of class i of ``||h - w_j||``,
      with ``w_j`` the template (row j of ``weight``);
    * ``ADC[i, j]`` = mean over samples ``h`` of class i of ``||h - mu_j||``,
      with ``mu_j`` the mean feature of class j.

    With ``normalize=True`` (the default: the paper normalizes all vectors) features and templates are
    L2-normalized first and centroids are the means of the normalized features; ``normalize=False`` measures
    the raw vectors. Rows are the sample
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
                    normalize: bool = True, names: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``adt_adc`` on the penultimate features of a run's model (all samples of ``classes`` by default)."""
    model, feats, labels, _ = _run_features(run, stage, split, classes, per_class, seed)
    w, _ = _classifier_params(model)
    if classes is None:
        classes = list(range(w.shape[0]))
    return adt_adc(feats, labels, w, classes, normalize=normalize,
                   class_names=_run_class_names(run) if names else None)
