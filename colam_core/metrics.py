"""Numpy-only metrics: calibration (ECE, reliability bins) and soft-label health. No torch, no pandas: any layer
may use them."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def _conf_correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, C) with N = len(labels); got {p.shape} and {y.shape}")
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability diagram data: equal-width confidence bins ``(lower, upper]`` on [0, 1].

    Confidence is the top predicted probability, accuracy whether the top class is the label. One entry per bin
    (empty bins included, with NaN confidence / accuracy and count 0): bin_lower, bin_upper, confidence (mean),
    accuracy (mean), count.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    conf, correct = _conf_correct(probs, labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin k holds edges[k] < conf <= edges[k+1] (confidence 0 goes to the first bin)
    which = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return {"bin_lower": edges[:-1], "bin_upper": edges[1:],
            "confidence": np.where(count > 0, mean_conf, np.nan), "accuracy": np.where(count > 0, mean_acc, np.nan),
            "count": count.astype(np.int64)}


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): sum over bins of (n_bin / N) |acc - conf|."""
    bins = reliability_bins(probs, labels, n_bins)
    count = bins["count"]
    n = count.sum()
    if n == 0:
        return float("nan")
    used = count > 0
    return float(np.sum(count[used] / n * np.abs(bins["accuracy"][used] - bins["confidence"][used])))


#: How every table, figure and printed line labels a run's two calibration numbers (the keys of summary.json):
#: ``test_ece`` is the ECE of softmax(z / T) at the method's output temperature (COLAM and fixed: the run's T;
#: every other method: 1), ``test_ece_T1`` the ECE of softmax(z), the same for every method.
ECE_LABELS = {"test_ece": "ECE softmax(z/T)", "test_ece_T1": "ECE softmax(z)"}


def metric_label(key: str) -> str:
    """The label a table or figure shows for a metric: ``ECE_LABELS`` for the two ECEs, else the key itself."""
    return ECE_LABELS.get(key, key)


def ece_text(summary: Mapping[str, Any] | None, digits: int = 4) -> str:
    """Both ECEs of a run summary, labelled: ``ECE softmax(z/T) 0.0512, ECE softmax(z) 0.0401``; ``n/a`` where
    a value is missing or not a number (runs written before ``test_ece_T1`` existed have only ``test_ece``)."""
    def fmt(v: Any) -> str:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return "n/a"
        return "n/a" if f != f else f"{f:.{digits}f}"
    s = summary or {}
    return ", ".join(f"{label} {fmt(s.get(key))}" for key, label in ECE_LABELS.items())


# ----------------------------------------------------------------------------- soft-label health
def class_health(soft: Any) -> dict[str, np.ndarray]:
    """Per class c of a C x C soft-label matrix (row c = the label of class c):

    own_mass (q_cc), own_rank (1 = the largest entry of its row; ties count in the class's favour),
    top_class (the argmax of the row, c itself on a tie), top_mass, and erased: the row's largest entry belongs
    to another class, so training on it pulls the whole class toward that one (the class is *erased*)."""
    q = np.asarray(soft, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"soft labels must be a C x C matrix; got shape {q.shape}")
    C = q.shape[0]
    own = np.diag(q).copy()
    others = q.copy()
    others[np.arange(C), np.arange(C)] = -np.inf
    best_other = others.argmax(axis=1) if C > 1 else np.zeros(C, dtype=np.int64)
    best_other_mass = others[np.arange(C), best_other] if C > 1 else np.full(C, -np.inf)
    erased = best_other_mass > own
    return {"own_mass": own, "own_rank": 1 + (q > own[:, None]).sum(axis=1),
            "top_class": np.where(erased, best_other, np.arange(C)),
            "top_mass": np.maximum(own, best_other_mass), "erased": erased}


def soft_label_health(mats: Mapping[str, Any]) -> dict[str, dict]:
    """``{"stage_K": {"own_mass_mean", "own_mass_min", "erased_classes"}}`` for every update, in order.

    ``erased_classes`` lists the classes whose label's largest entry is another class (see `class_health`)."""
    out = {}
    for key, soft in mats.items():
        h = class_health(soft)
        out[key] = {"own_mass_mean": float(h["own_mass"].mean()), "own_mass_min": float(h["own_mass"].min()),
                    "erased_classes": [int(c) for c in np.flatnonzero(h["erased"])]}
    return out


def own_mass_floor(num_classes: int, fraction: float) -> float:
    """The mean own-class mass `fraction` of the way from the uniform label (1/C) to one-hot (1): below it a
    set of soft labels is called close to uniform (the run's `warn_own_mass` is the fraction)."""
    return 1.0 / num_classes + fraction * (1.0 - 1.0 / num_classes)


def erasures(soft: Any) -> list[dict]:
    """One dict per erased class: class, taken_by (the class holding its label's largest entry), own_mass and
    taken_mass."""
    h = class_health(soft)
    return [{"class": int(c), "taken_by": int(h["top_class"][c]), "own_mass": float(h["own_mass"][c]),
             "taken_mass": float(h["top_mass"][c])} for c in np.flatnonzero(h["erased"])]


__all__ = ["reliability_bins", "expected_calibration_error", "class_health", "soft_label_health", "erasures",
           "own_mass_floor", "ECE_LABELS", "metric_label", "ece_text"]
