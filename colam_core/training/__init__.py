"""Training: `train(...)` in one call, or the Trainer (stages, epochs, stop, events) and its parts, one idea per
file.

| file | what it owns |
|---|---|
| `trainer.py` | `Trainer`: Algorithm 1 (stages of epochs, the stage-end label update), events, stop, resume |
| `step.py` | `TrainStep` (lr, forward, loss, backward, non-finite guard), `train_one_epoch`, the lr schedule |
| `evaluation.py` | `evaluate`: one pass returning loss, accuracy and the probabilities ECE needs |
| `state.py` | `TrainState`: progress, history, soft labels, timings, the checkpoint form, the summary |
| `recorder.py` | `Recorder`: the run directory while training (lock, fingerprint check, repair, ordered writes) |
| `strategy.py` | `SingleDevice` / `DataParallel`: every difference of DDP training; `pick_device` |
| `events.py` | the events listeners receive |
| `stop.py` | Ctrl-C / SIGTERM as a clean stop |
| `estimate.py` | a run's duration, timed with the trainer's own step on copies |
"""
from ..errors import ConfigError, TrainingError
from .estimate import describe_estimate, estimate_duration
from .events import BatchEvent, DoneEvent, EpochEvent, PhaseEvent, StageEvent, StoppedEvent, WarningEvent
from .step import amp_dtype, lr_factor
from .strategy import pick_device
from ..config import Config
from .trainer import Trainer

def train(cfg: Config | dict | None = None, out=None, progress: bool = True, **kw) -> dict:
    """Train a run to the end and return its summary (`train(method="ls", epochs=6)`)."""
    if cfg is None:
        cfg = Config(**kw)
    elif kw:
        cfg = (Config.from_dict(cfg) if isinstance(cfg, dict) else cfg).replace(**kw)
    with Trainer(cfg, out=out, progress=progress) as t:
        return t.run()


__all__ = ["Trainer", "train", "pick_device", "amp_dtype", "lr_factor", "estimate_duration", "describe_estimate",
           "TrainingError", "ConfigError", "BatchEvent", "EpochEvent", "StageEvent", "DoneEvent", "StoppedEvent",
           "PhaseEvent", "WarningEvent"]
