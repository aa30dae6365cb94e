"""The events a Trainer emits; every listener (progress bars, the CLI log, widgets, tests) reads these."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..metrics import erasures, own_mass_floor


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
class WarningEvent:
    """Something the user must see now, about a soft-label update: it erased classes (their label's largest entry is
    another class: `erased`, dicts of class / taken_by / own_mass / taken_mass), its labels are soft overall (the
    mean own-class mass `own_mass_mean` fell below the run's `warn_own_mass`: `low_own_mass`), or classes kept
    their previous label for want of a peer (`no_peers`)."""
    stage: int
    message: str
    erased: list = field(default_factory=list)
    no_peers: list = field(default_factory=list)
    own_mass_mean: float | None = None
    low_own_mass: bool = False
    kind: str = "warning"


@dataclass
class PhaseEvent:
    """Work between batches that takes a while (seconds on a large data set), so a front end can say what it is:
    `phase` is "test" (the epoch's test pass), "soft_labels" (the stage-end pass that learns the labels),
    "checkpoint" (writing the run directory) or "final" (the final test pass for calibration)."""
    stage: int
    epoch: int
    phase: str
    message: str
    kind: str = "phase"


@dataclass
class StoppedEvent:
    stage: int
    epoch: int
    batch: int
    kind: str = "stopped"


class EventSource:
    """subscribe / unsubscribe listeners (any callable taking one event) and emit events to them in order."""

    def __init__(self, listeners=()):
        self._listeners = list(listeners)

    def subscribe(self, listener):
        self._listeners.append(listener)
        return listener

    def unsubscribe(self, listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(self, event) -> None:
        for listener in list(self._listeners):
            listener(event)


def update_warning(stage: int, soft: np.ndarray, no_peers: list, class_names,
                   warn_own_mass: float) -> WarningEvent | None:
    """The WarningEvent for the C x C soft labels learned at the end of `stage` (see `erasure_warning`), or None."""
    own = float(np.mean(np.diag(soft)))
    return erasure_warning(stage, erasures(soft), no_peers, class_names, own, own_mass_floor(len(soft), warn_own_mass))


def erasure_warning(stage: int, erased: list, no_peers: list, class_names, own_mass_mean: float | None = None,
                    min_own_mass: float = 0.0) -> WarningEvent | None:
    """The WarningEvent for a soft-label update, naming every erased class and the class that took its label, and
    saying when the mean own-class mass `own_mass_mean` is below `min_own_mass` (the softening ratchet: each
    update softer than the last, toward uniform labels that teach nothing); None when all is well."""
    low = own_mass_mean is not None and own_mass_mean < min_own_mass
    if not erased and not no_peers and not low:
        return None
    name = (lambda c: f"{c} ({class_names[c]})") if class_names else str
    parts = []
    if low:
        parts.append(f"the soft labels learned at the end of stage {stage} are close to uniform: mean own-class mass "
                     f"{own_mass_mean:.3f} is below {min_own_mass:.3f} (warn_own_mass of the way from uniform to "
                     "one-hot): training on them teaches little about each class (a model that has not yet fitted its "
                     "training set gives soft outputs, and with COLAM each update then softens the next; use fewer, "
                     "longer stages or a lower T)")
    if erased:
        parts.append("the soft labels learned at the end of stage {} erase {}: ".format(stage, len(erased)) + "; ".join(
            f"class {name(e['class'])} now puts {e['taken_mass']:.2f} on {name(e['taken_by'])} and "
            f"{e['own_mass']:.2f} on itself" for e in erased)
            + " (training pulls these classes toward the others; try --peer-filter correct, longer stages or "
              "fewer stages: docs/RESULTS.md)")
    if no_peers:
        parts.append(f"no correctly classified peer for class(es) {', '.join(name(c) for c in no_peers)} at the end "
                     f"of stage {stage}: they keep their previous label")
    return WarningEvent(stage, "; ".join(parts), list(erased), list(no_peers), own_mass_mean, low)


__all__ = ["BatchEvent", "EpochEvent", "StageEvent", "DoneEvent", "PhaseEvent", "StoppedEvent", "WarningEvent",
           "EventSource", "erasure_warning", "update_warning"]
