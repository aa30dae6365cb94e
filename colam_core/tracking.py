"""Experiment tracking as trainer listeners: TensorBoard event files and MLflow runs (optional extras).

    colam train --log tensorboard ...           # events in RUN_DIR/tensorboard/: tensorboard --logdir runs
    colam train --log mlflow ...                # a run in the local store runs/mlflow.db (or --tracking-uri URI)
    Config(log="tensorboard,mlflow")            # the same from Python, a notebook or a sweep's base config

What is logged, with the same names in both: every history column per epoch (step = epoch: `train_loss`,
`test_acc`, `lr`, ...), the soft-label health per update (`soft_labels/own_mass_mean`, `.../own_mass_min`,
`.../erased_classes`, `.../update_seconds`, at the epoch the stage ended) and the matrix as an image, the
hyperparameters (the configuration's fingerprint), and the final metrics (`final/test_acc`; calibration both
ways: `final/test_ece`, the ECE of softmax(z / T), and `final/test_ece_T1`, of softmax(z); ...).

The run directory stays the source of truth: a tracker mirrors it. A tracker that cannot be opened stops the
run before training (a ConfigError naming --log / --tracking-uri); one that fails while training warns once and is
off for the rest of the run, which goes on. A resumed run continues its tracking run: TensorBoard drops the
events after the resumed epoch (`purge_step`), MLflow reopens the run tagged with the run directory. Each entry of a
sweep is its own run directory, hence its own tracking run: `tensorboard --logdir ROOT` shows the whole sweep, and
its MLflow runs share one experiment named after ROOT.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import ConfigError
from .metrics import soft_label_health
from .runs import MLFLOW_ARTIFACTS, MLFLOW_DB, RUN_FORMAT, TENSORBOARD_DIR

#: summary.json entries logged as `final/<name>` when a run finishes
FINAL_METRICS = ("test_acc", "test_ece", "test_ece_T1", "test_loss", "train_acc", "best_test_acc", "train_seconds",
                 "update_seconds_total", "mean_images_per_s")
#: the anchors of matplotlib's viridis colour map (0, 0.25, 0.5, 0.75, 1), for the soft-label image
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


# ----------------------------------------------------------------------------- what is logged
def epoch_metrics(row: Mapping) -> dict[str, float]:
    """The history row of an epoch as metrics (every column but `epoch`, the step), finite values only."""
    return _finite({k: v for k, v in row.items() if k != "epoch"})


def stage_metrics(soft: np.ndarray, update_seconds: float | None) -> dict[str, float]:
    """The health of a soft-label update: own-class mass (mean, min), erased classes, the pass's seconds."""
    h = soft_label_health({"s": soft})["s"]
    return _finite({"soft_labels/own_mass_mean": h["own_mass_mean"], "soft_labels/own_mass_min": h["own_mass_min"],
                    "soft_labels/erased_classes": len(h["erased_classes"]),
                    "soft_labels/update_seconds": update_seconds})


def final_metrics(summary: Mapping) -> dict[str, float]:
    return _finite({f"final/{k}": summary.get(k) for k in FINAL_METRICS})


def hyperparameters(resolved: Mapping) -> dict[str, int | float | str | bool]:
    """The options that define the run (its fingerprint) plus the resolved stage layout, as scalars."""
    values = dict(resolved.get("fingerprint", {}))
    values.update({k: resolved[k] for k in ("num_stages", "stage_epochs", "total_epochs") if k in resolved})
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in sorted(values.items())}


def soft_label_image(soft: np.ndarray, size: int = 256) -> np.ndarray:
    """A C x C soft-label matrix as an RGB uint8 heatmap (rows: the class, columns: the mass it puts on each class;
    viridis from 0 to 1, the same scale for every update so softening shows), each cell about size / C pixels."""
    m = np.asarray(soft, dtype=np.float64)
    t = np.clip(m, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    grid = np.linspace(0, len(_VIRIDIS) - 1, len(_VIRIDIS))
    rgb = np.stack([np.interp(t, grid, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    cell = max(1, size // max(m.shape[0], 1))
    return np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1).round().astype(np.uint8)


def _finite(d: Mapping) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


# ----------------------------------------------------------------------------- the listeners
class Tracker:
    """A trainer listener that mirrors a run into a tracking tool. Subclasses write; this class turns events into
    metrics, keeps the step (the epoch) and makes a failure while training a warning, not a stopped run."""

    name = "tracker"

    def __init__(self, run_dir: Path, start_epoch: int):
        self.run_dir = Path(run_dir)
        self.step = int(start_epoch)
        self.closed = False
        self.failed: str | None = None

    def __call__(self, ev) -> None:
        if self.closed or self.failed:
            return
        try:
            if ev.kind == "epoch":
                self.step = ev.epoch
                self.log_metrics(epoch_metrics(ev.row), ev.epoch)
            elif ev.kind == "stage" and ev.soft_labels is not None:
                self.log_metrics(stage_metrics(ev.soft_labels, ev.metrics.get("update_seconds")), self.step)
                self.log_soft_labels(ev.stage, soft_label_image(ev.soft_labels), self.step)
            elif ev.kind == "done":
                self.log_metrics(final_metrics(ev.summary), self.step)
                self.finish(ev.summary)
                self.close("FINISHED")
            elif ev.kind == "stopped":
                self.flush()
        except Exception as e:  # noqa: BLE001 - a tracking tool's failure must never stop training
            self.failed = f"{type(e).__name__}: {e}"
            warnings.warn(f"--log {self.name}: logging failed and is off for the rest of this run ({self.failed}); "
                          f"the run directory {self.run_dir} is complete", RuntimeWarning, stacklevel=2)

    def close(self, status: str = "KILLED") -> None:
        """End the tracking run: FINISHED (all stages ran), KILLED (stopped, resumable) or FAILED (an error)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.end(status)
        except Exception as e:  # noqa: BLE001 - closing a tracker never hides the trainer's own outcome
            warnings.warn(f"--log {self.name}: closing the tracking run failed ({type(e).__name__}: {e})",
                          RuntimeWarning, stacklevel=2)

    # what a subclass writes
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_soft_labels(self, stage: int, image: np.ndarray, step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: Mapping) -> None:
        """The run finished (its summary); called before close("FINISHED")."""

    def flush(self) -> None:
        """Make what was logged visible now (a stop)."""

    def end(self, status: str) -> None:
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Event files in RUN_DIR/tensorboard/ (torch.utils.tensorboard): scalars, the soft-label image per update,
    the hyperparameters (HParams tab, against `final/test_acc`, `final/test_ece` and `final/test_ece_T1`) and
    config.json as text."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resolved: Mapping, start_epoch: int):
        super().__init__(run_dir, start_epoch)
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # a resumed run drops what a killed process logged after the epoch it resumes from
        self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=start_epoch + 1 if start_epoch
                                    else None)
        if start_epoch == 0:
            finals = {"final/test_acc": 0.0, "final/test_ece": 0.0, "final/test_ece_T1": 0.0}
            for s in hparams(hyperparameters(resolved), finals):
                self.writer.file_writer.add_summary(s)
            self.writer.add_text("config", "```\n" + json.dumps(resolved.get("config", {}), indent=2) + "\n```")

    def log_metrics(self, metrics, step):
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)

    def log_soft_labels(self, stage, image, step):
        self.writer.add_image("soft_labels", image, step, dataformats="HWC")

    def flush(self):
        self.writer.flush()

    def end(self, status):
        self.writer.close()


class MlflowTracker(Tracker):
    """One MLflow run per run directory, in the experiment named after the folder that holds it (MLFLOW_EXPERIMENT_NAME
    overrides). The store: `tracking_uri`, else MLFLOW_TRACKING_URI, else the local SQLite file mlflow.db beside the
    run directory (`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows it); a SQLite store keeps the
    artifacts (soft-label images, summary.json) in mlartifacts/ beside its file. Tags: colam.run_dir, colam.format,
    colam.version and mlflow.source.git.commit when known."""

    name = "mlflow"

    def __init__(self, run_dir: Path, resolved: Mapping, start_epoch: int, tracking_uri: str | None = None):
        super().__init__(run_dir, start_epoch)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        root = self.run_dir.resolve().parent
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / MLFLOW_DB}"
        try:
            self.client = MlflowClient(tracking_uri=uri)
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or root.name
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
                name, artifact_location=_artifact_location(uri))
            self.run_id = self._existing_run(exp_id)
            if self.run_id is None:
                self.run_id = self.client.create_run(exp_id, run_name=self.run_dir.name,
                                                     tags=self._tags(resolved)).info.run_id
                params = [Param(k, str(v)[:6000]) for k, v in hyperparameters(resolved).items()]
                for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
                    self.client.log_batch(self.run_id, params=params[i:i + 100])
            else:
                self.client.update_run(self.run_id, status="RUNNING")
        except Exception as e:  # noqa: BLE001 - an unreachable server, a bad URI, a locked store ...
            raise ConfigError("tracking_uri", uri, f"an MLflow tracking store that can be opened ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None

    def _existing_run(self, exp_id: str) -> str | None:
        """The run this run directory logged to before (a resume), found by its colam.run_dir tag."""
        path = str(self.run_dir.resolve())
        if "'" in path:
            return None
        found = self.client.search_runs([exp_id], filter_string=f"tags.`colam.run_dir` = '{path}'", max_results=1)
        return found[0].info.run_id if found else None

    def _tags(self, resolved: Mapping) -> dict[str, str]:
        tags = {"colam.run_dir": str(self.run_dir.resolve()), "colam.format": str(resolved.get("format", RUN_FORMAT)),
                "colam.version": str(resolved.get("versions", {}).get("colam_workbench", ""))}
        git = resolved.get("git")
        if isinstance(git, dict) and git.get("commit"):
            tags["mlflow.source.git.commit"] = git["commit"]
        return tags

    def log_metrics(self, metrics, step):
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_soft_labels(self, stage, image, step):
        self.client.log_image(self.run_id, image, f"soft_labels/stage_{stage}.png")

    def finish(self, summary):
        self.client.log_dict(self.run_id, dict(summary), "summary.json")

    def end(self, status):
        self.client.set_terminated(self.run_id, status)


def _artifact_location(uri: str) -> str | None:
    """A SQLite store keeps its artifacts in mlartifacts/ beside the database file (MLflow itself would use ./mlruns
    in whatever folder the process runs in); any other store decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / MLFLOW_ARTIFACTS).as_uri()
    return None


def make_trackers(cfg, run_dir: Path, resolved: Mapping, start_epoch: int) -> list[Tracker]:
    """The trackers `cfg.log` names, opened for the run in `run_dir` (resolved: its config.json), which resumes after
    `start_epoch` completed epochs. A tracker that cannot be opened closes the ones opened before it and raises."""
    trackers: list[Tracker] = []
    try:
        for name in cfg.trackers:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(run_dir, resolved, start_epoch))
            elif name == "mlflow":
                trackers.append(MlflowTracker(run_dir, resolved, start_epoch, cfg.tracking_uri))
    except BaseException:
        for t in trackers:
            t.close("FAILED")
        raise
    return trackers


__all__ = ["Tracker", "TensorBoardTracker", "MlflowTracker", "make_trackers", "soft_label_image", "epoch_metrics",
           "stage_metrics", "final_metrics", "hyperparameters", "FINAL_METRICS"]
