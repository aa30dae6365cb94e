"""Calibration of a run's model: predicted probabilities, ECE, NLL and reliability bins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import metrics as _metrics
from ..metrics import expected_calibration_error
from ._common import _np, _stage_number
from .features import logits


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------

def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> pd.DataFrame:
    """``metrics.reliability_bins`` as a DataFrame: one row per bin (bin_lower, bin_upper, confidence,
    accuracy, count)."""
    return pd.DataFrame(_metrics.reliability_bins(probs, labels, n_bins))


def _logits_labels(run: Any, stage: int | str | None, split: str, batch_size: int) -> tuple[torch.Tensor, np.ndarray]:
    model = run.model(_stage_number(stage))
    x, y = run.data(split)
    return torch.from_numpy(logits(model, x, batch_size=batch_size)).double(), _np(y, dtype=np.int64).ravel()


def _temperature(run: Any, temperature: float | None) -> float:
    return float(getattr(run, "output_temperature", 1.0) or 1.0) if temperature is None else float(temperature)


def predict_probs(run: Any, stage: int | str | None = None, split: str = "test",
                  temperature: float | None = None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, C), labels (N,)) of a run's model on ``split``.

    ``probs = softmax(logits / temperature)``; ``temperature`` defaults to
    ``run.output_temperature`` (the T of the training loss; 1 when absent).
    """
    z, y = _logits_labels(run, stage, split, batch_size)
    return torch.softmax(z / _temperature(run, temperature), dim=1).numpy(), y


def calibration_for_run(run: Any, stage: int | str | None = None, split: str = "test", n_bins: int = 15,
                        temperature: float | None = None) -> dict[str, Any]:
    """Accuracy, ECE, NLL and reliability bins of a run's model, calibration both ways.

    ``accuracy``, ``ece``, ``nll`` and ``bins`` are of softmax(z / T) (``T``: ``temperature``, by default
    ``run.output_temperature``, as ``predict_probs``; returned as ``temperature``), ``ece_T1`` is the ECE of
    softmax(z). For T = 1 the two ECEs are the same number.
    """
    T = _temperature(run, temperature)
    z, y = _logits_labels(run, stage, split, 512)
    p = torch.softmax(z / T, dim=1).numpy()
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
    return {
        "accuracy": float(np.mean(p.argmax(axis=1) == y)),
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_T1": expected_calibration_error(torch.softmax(z, dim=1).numpy(), y, n_bins),
        "temperature": T,
        "nll": nll,
        "bins": reliability_bins(p, y, n_bins),
    }
