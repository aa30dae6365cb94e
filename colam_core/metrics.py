"""Numpy-only metrics: calibration (ECE, reliability bins). No torch, no pandas: any layer may use them."""
from __future__ import annotations

from typing import Any

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


__all__ = ["reliability_bins", "expected_calibration_error"]
