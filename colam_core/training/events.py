"""The events a Trainer emits; every listener (progress bars, the CLI log, widgets, tests) reads these."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class BatchEvent:
    stage: int
    epoch: int
    batch: int
    num_batches: int
    _loss: torch.Tensor = field(repr=False, default=None)
    kind: str = "batch"

    @property
    def loss(self) -> float:  # read lazily: a float() of a CUDA tensor syncs the stream
        return float(self._loss)


@dataclass
class EpochEvent:
    stage: int
    epoch: int
    row: dict
    kind: str = "epoch"


@dataclass
class StageEvent:
    stage: int
    soft_labels: np.ndarray | None
    metrics: dict
    kind: str = "stage"


@dataclass
class DoneEvent:
    summary: dict
    kind: str = "done"


@dataclass
class StoppedEvent:
    stage: int
    epoch: int
    batch: int
    kind: str = "stopped"


__all__ = ["BatchEvent", "EpochEvent", "StageEvent", "DoneEvent", "StoppedEvent"]
