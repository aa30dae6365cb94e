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
