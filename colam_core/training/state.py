"""The training state: where a run is, what it has measured, and its checkpoint form (`last.pt`, format 1).

Determinism: the model is initialised from `seed`; the batch order of epoch e and the augmentation of batch b
are drawn from generators seeded by (seed, e) and (seed, e, b); methods draw from generators seeded the same way.
So a run stopped anywhere (between batches, or killed) and resumed from its checkpoint reaches the same weights
as an uninterrupted run (bitwise on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import RunError, TrainingError
from ..metrics import erasures, soft_label_health
from ..runs import RUN_FORMAT, stage_key, stage_number
from .events import update_warning

CHECKPOINT_FORMAT = 1


class Running:
    """The epoch's running loss / accuracy sums, kept on the device (no host sync per batch)."""

    def __init__(self, device):
        self.device = device
        self.zero_()

    def zero_(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.float64, device=self.device)
        self.n = 0

    def add(self, loss, z, y) -> None:
        with torch.no_grad():
            self.loss += loss.detach().double() * len(y)
            self.correct += (z.detach().argmax(1) == y).sum().double()
            self.n += len(y)

    def means(self) -> tuple[float, float]:
        return float(self.loss) / max(self.n, 1), float(self.correct) / max(self.n, 1)

    def to_dict(self) -> dict:
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "n": self.n}

    def load(self, d: dict) -> None:
        self.loss, self.correct, self.n = d["loss"].to(self.device), d["correct"].to(self.device), d["n"]


@dataclass
class TrainState:
    """Completed epochs and batches, the history rows, the soft labels learned so far and the timings."""

    device: torch.device
    epoch: int = 0            # completed epochs
    batch: int = 0            # completed batches of the current epoch
    history: list = field(default_factory=list)
    soft_labels: dict = field(default_factory=dict)   # {"stage_K": C x C numpy}
    update_seconds: list = field(default_factory=list)
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0
    extra_forward_images: int = 0   # images forwarded without gradients to make targets (CS-KD, Label Refinery)
    running: Running = None

    def __post_init__(self):
        self.running = Running(self.device)

    def end_epoch(self, stage: int, lr: float, test_loss: float, test_acc: float, update_seconds: float,
                  forwards_per_sample: int = 1) -> dict:
        """Append the epoch's history row (its first learning rate, the running means, the test metrics and the
        timings), move on to the next epoch, and return the row."""
        train_s = self.epoch_seconds
        train_loss, train_acc = self.running.means()
        imgs = self.running.n * forwards_per_sample
        self.extra_forward_images += self.running.n * (forwards_per_sample - 1)
        row = {"epoch": self.epoch + 1, "stage": stage, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": train_s + update_seconds,
               "images_per_s": imgs / train_s if train_s > 0 else float("nan")}
        self.history.append(row)
        self.train_seconds += train_s
        self.epoch, self.batch, self.epoch_seconds = row["epoch"], 0, 0.0
        self.running.zero_()
        return row

    def add_soft_labels(self, stage: int, soft: np.ndarray, seconds: float, kept) -> None:
        """Keep the labels learned at the end of `stage` (refused when not finite: the outputs overflowed)."""
        if not np.all(np.isfinite(soft)):
            raise TrainingError(f"the soft labels learned at the end of stage {stage} are not finite (the model's "
                                f"outputs overflowed); training stopped and {kept()} (lower --lr or --T)")
        self.soft_labels[stage_key(stage)] = soft
        self.update_seconds.append(seconds)

    def checkpoint(self, model, optimizer, scaler, method, fingerprint: dict) -> dict:
        """The dict `last.pt` holds: tensors and plain containers only (loads with weights_only=True)."""
        return {
            "format": CHECKPOINT_FORMAT, "epoch": self.epoch, "batch": self.batch,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler else None, "method": method.state_dict(),
            "running": self.running.to_dict(), "history": self.history,
            "soft_labels": {k: torch.from_numpy(v) for k, v in self.soft_labels.items()},
            "update_seconds": self.update_seconds, "train_seconds": self.train_seconds,
            "epoch_seconds": self.epoch_seconds, "extra_forward_images": self.extra_forward_images,
            "fingerprint": fingerprint,
        }

    def restore(self, st: dict, model, optimizer, scaler, method, where: str, model_name: str) -> None:
        """Everything a checkpoint holds: the model, optimiser, scaler and method, then this state."""
        try:
            model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise RunError(f"{where} does not fit model {model_name!r}: {str(e).splitlines()[0]}") from None
        optimizer.load_state_dict(st["optimizer"])
        if scaler and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        method.load_state_dict(st["method"])
        self.load(st)

    def load(self, st: dict) -> None:
        """Progress, history and timings from a checkpoint."""
        self.epoch, self.batch = st["epoch"], st["batch"]
        self.running.load(st["running"])
        self.history = list(st["history"])
        self.soft_labels = {k: v.numpy() for k, v in st["soft_labels"].items()}
        self.update_seconds = list(st["update_seconds"])
        self.train_seconds = st["train_seconds"]
        self.epoch_seconds = st.get("epoch_seconds", 0.0)
        self.extra_forward_images = st.get("extra_forward_images", 0)


    def summary(self, cfg, num_stages: int, total_epochs: int, device, test_ece: float, test_ece_T1: float,
                class_names=None) -> dict:
        """summary.json: the final metrics and timings. Calibration both ways: `test_ece` of softmax(z / T) at the
        method's output temperature (COLAM's T, 1 for the others), `test_ece_T1` of softmax(z)."""
        hist, last = self.history, (self.history[-1] if self.history else {})
        warnings = (update_warning(stage_number(k), v, [], class_names, cfg.warn_own_mass)
                    for k, v in self.soft_labels.items())
        ips = [r["images_per_s"] for r in hist if np.isfinite(r["images_per_s"])]
        return {
            "format": RUN_FORMAT, "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model,
            "epochs": total_epochs, "stages": num_stages, "trainings": cfg.generations,
            "test_acc": last.get("test_acc"), "test_loss": last.get("test_loss"),
            "train_acc": last.get("train_acc"), "best_test_acc": max((r["test_acc"] for r in hist), default=None),
            "train_seconds": self.train_seconds, "update_seconds": self.update_seconds,
            "update_seconds_total": float(sum(self.update_seconds)),
            "mean_images_per_s": float(np.mean(ips)) if ips else None,
            "soft_label_own_mass": {k: float(np.mean(np.diag(v))) for k, v in self.soft_labels.items()},
            "soft_label_health": soft_label_health(self.soft_labels),
            "soft_label_erasures": {k: erasures(v) for k, v in self.soft_labels.items()},
            "soft_label_warnings": [w.message for w in warnings if w is not None],
            "device": str(device), "test_ece": float(test_ece), "test_ece_T1": float(test_ece_T1),
            "extra_forward_images": self.extra_forward_images,
        }


__all__ = ["TrainState", "Running", "CHECKPOINT_FORMAT"]
