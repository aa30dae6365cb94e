"""The trainer: `m` stages of `t` epochs, events, clean stops, checkpoints, resume.

    trainer = Trainer(Config(method="colam", epochs=12, stages=4), out="runs/demo")
    trainer.subscribe(print)          # every event
    trainer.run_stage()               # one stage
    trainer.run()                     # the rest

Determinism: the model is initialised from `seed`; the batch order of epoch e
and the augmentation of batch b are drawn from generators seeded by
(seed, e) and (seed, e, b); methods draw from generators seeded the same way.
So a run stopped anywhere (between batches, or killed) and resumed from
`last.pt` reaches the same weights as an uninterrupted run (bitwise on CPU).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config, ConfigError
from .data import load_dataset
from .methods import StepContext, build_method
from .models import build_model
from .runs import RunDir, RunError, versions

CHECK_FINITE_EVERY = 50


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- events
@dataclass
class BatchEvent:
    stage: int
    epoch: int
    batch: int
    num_batches: int
    _loss: torch.Tensor = field(repr=False, default=None)
    kind: str = "batch"

    @property
    def loss(self) -> float:
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


# ----------------------------------------------------------------------------- helpers
def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device):
    """The autocast dtype for `mode` on `device`, or None for float32."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def lr_factor(cfg: Config, t: float) -> float:
    """Learning-rate multiplier at fractional epoch t in [0, cfg.epochs) of one training."""
    E, w = cfg.epochs, cfg.warmup_epochs
    if t < w:
        return (t + 1e-8) / w
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (t - w) / max(E - w, 1e-8)))
    if cfg.schedule == "multistep":
        e = int(t)
        return cfg.gamma ** sum(e >= round(m * E) for m in cfg.milestones)
    return 1.0


def _default_out(cfg: Config) -> Path:
    name = cfg.name or f"{cfg.dataset}_{cfg.model}_{cfg.method}_s{cfg.seed}"
    return Path("runs") / name


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train one run; see the module docstring and docs/ARCHITECTURE.md."""

    def __init__(self, cfg: Config | dict, out: str | Path | None = None, progress: bool = False,
                 listeners: tuple[Callable, ...] = ()):
        if isinstance(cfg, dict):
            cfg = Config.from_dict(cfg)
        self.cfg = cfg.validate()
        self.out = Path(out) if out is not None else _default_out(cfg)
        self._listeners: list[Callable] = list(listeners)
        self._stop = threading.Event()

        # the run directory: refuse another configuration before loading anything
        self.run_dir = RunDir(self.out, write=False)
        existing = self.run_dir.read_config() if (self.out / "config.json").exists() else None
        if existing is not None:
            theirs = existing.get("fingerprint", {})
            ours = cfg.fingerprint()
            diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            if diff:
                k = diff[0]
                raise RunError(f"run directory {self.out} already holds a different run ({k}: "
                               f"{theirs.get(k)!r} there, {ours.get(k)!r} here); nothing was changed. Resume it "
                               f"with `--resume {self.out}`, or choose another --out")
        self.run_dir = RunDir(self.out, write=True)
        self.run_dir.lock()
        try:
            self._setup(existing)
        except BaseException:
            self.run_dir.unlock()
            raise
        if progress:
            from .progress import TqdmListener
            self.subscribe(TqdmListener())

    # ---------------------------------------------------------------- setup
    def _setup(self, existing):
        cfg = self.cfg
        self.device = pick_device(cfg.device)
        self.data = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download, device=self.device,
                                 train_limit=cfg.train_limit, test_limit=cfg.test_limit, image_size=cfg.image_size,
                                 num_workers=cfg.num_workers, seed=cfg.seed)
        self.info = self.data.info
        self.method = build_method(cfg, self.info.num_classes, self.data.train_labels, self.device)
        self.num_stages = cfg.num_stages
        self.stage_epochs = cfg.stage_epochs
        self.total_epochs = cfg.total_epochs
        self._amp = amp_dtype(cfg.amp, self.device)
        self._channels_last = (cfg.channels_last if cfg.channels_last is not None else self.device.type == "cuda")
        self._sampler = self.method.batch_sampler()
        self._build_model(generation=1)

        # progress state
        self.epoch = 0            # completed epochs
        self._batch = 0           # completed batches of the current epoch
        self._running = self._zero_running()
        self.history: list[dict] = []
        self.soft_label_history: dict[str, np.ndarray] = {}
        self.update_seconds: list[float] = []
        self._train_seconds = 0.0
        self._epoch_seconds = 0.0
        self.summary: dict | None = None

        state = self.run_dir.load_last() if existing is not None else None
        if state is not None:
            self._load_state(state)
        self.resolved = {
            "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "versions": versions(),
            "device": str(self.device), "amp": str(self._amp).replace("torch.", "") if self._amp else "off",
            "channels_last": self._channels_last, "dataset": self.info.__dict__.copy(),
            "output_temperature": self.method.output_temperature, "num_stages": self.num_stages,
            "stage_epochs": self.stage_epochs, "total_epochs": self.total_epochs,
            "trainings": cfg.generations,
        }
        self.run_dir.write_config(self.resolved)
        if state is not None:  # files may be one epoch ahead of last.pt after a kill: make them agree
            self.run_dir.write_history(self.history)
            if self.soft_label_history:
                self.run_dir.write_soft_labels(self.soft_label_history)

    def _build_model(self, generation: int):
        cfg = self.cfg
        torch.manual_seed(cfg.seed + 100_003 * (generation - 1))
        model = build_model(cfg.model, self.info.num_classes, self.info.in_channels, self.info.image_size)
        model = model.to(self.device)
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._forward = torch.compile(model) if cfg.compile else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self._amp == torch.float16 else None

    def _zero_running(self):
        return {"loss": torch.zeros((), dtype=torch.float64, device=self.device),
                "correct": torch.zeros((), dtype=torch.float64, device=self.device),
                "n": 0, "bad_batch": -1}

    # ---------------------------------------------------------------- state
    def _state(self) -> dict:
        return {
            "format": 1, "epoch": self.epoch, "batch": self._batch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "method": self.method.state_dict(),
            "running": {"loss": self._running["loss"].cpu(), "correct": self._running["correct"].cpu(),
                        "n": self._running["n"]},
            "history": self.history, "soft_labels": {k: torch.from_numpy(v) for k, v in
                                                     self.soft_label_history.items()},
            "update_seconds": self.update_seconds, "train_seconds": self._train_seconds,
            "epoch_seconds": self._epoch_seconds, "fingerprint": self.cfg.fingerprint(),
        }

    def _load_state(self, st: dict):
        if st.get("fingerprint") != self.cfg.fingerprint():
            raise RunError(f"{self.run_dir.ckpt_dir / 'last.pt'} belongs to another configuration; "
                           "start a new run with another --out")
        self.epoch, self._batch = st["epoch"], st["batch"]
        gen = self._stage_of(self.epoch + 1) if self.method.restart_after_stage else 1
        if gen != 1:
            self._build_model(generation=gen)
        try:
            self.model.load_state_dict(st["model"])
        except RuntimeError as e:
            raise RunError(f"checkpoint {self.run_dir.ckpt_dir / 'last.pt'} does not fit model "
                           f"{self.cfg.model!r}: {str(e).splitlines()[0]}") from None
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scaler and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.method.load_state_dict(st["method"])
        r = st["running"]
        self._running = {"loss": r["loss"].to(self.device), "correct": r["correct"].to(self.device),
                         "n": r["n"], "bad_batch": -1}
        self.history = list(st["history"])
        self.soft_label_history = {k: v.numpy() for k, v in st["soft_labels"].items()}
        self.update_seconds = list(st["update_seconds"])
        self._train_seconds = st["train_seconds"]
        self._epoch_seconds = st.get("epoch_seconds", 0.0)

    # ---------------------------------------------------------------- public
    def subscribe(self, listener: Callable) -> Callable:
        self._listeners.append(listener)
        return listener

    def unsubscribe(self, listener: Callable) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def request_stop(self) -> None:
        """Ask training to stop at the next batch boundary (thread-safe)."""
        self._stop.set()

    @property
    def done(self) -> bool:
        return self.epoch >= self.total_epochs

    @property
    def current_stage(self) -> int:
        """The stage that runs next (or the last one when done)."""
        return self._stage_of(min(self.epoch + 1, self.total_epochs))

    @property
    def soft_labels(self) -> np.ndarray | None:
        return self.method.soft_labels

    def close(self) -> None:
        self.run_dir.unlock()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run_stage(self) -> StageEvent | None:
        """Run the epochs of the next stage. Returns its StageEvent, or None if stopped early / already done."""
        if self.done:
            self._finish()
            return None
        stage = self.current_stage
        with _SigintToStop(self):
            self._stop.clear()
            event = None
            while not self.done and self._stage_of(self.epoch + 1) == stage:
                event = self._run_epoch()
                if event is False:
                    return None
        if self.done:
            self._finish()
        return event if isinstance(event, StageEvent) else None

    def run(self) -> dict | None:
        """Run all remaining stages. Returns the summary, or None if stopped early."""
        while not self.done:
            if self.run_stage() is None and not self.done:
                return None
        return self._finish()

    # ---------------------------------------------------------------- internals
    def _emit(self, event):
        for listener in list(self._listeners):
            listener(event)

    def _stage_of(self, epoch: int) -> int:
        return (epoch - 1) // self.stage_epochs + 1

    def _infer(self, x):
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None):
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self._forward(x).float()

    def _set_lr(self, epoch: int, batch: int, num_batches: int):
        e_in_training = (epoch - 1) % self.cfg.epochs
        lr = self.cfg.lr * lr_factor(self.cfg, e_in_training + batch / num_batches)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _check_finite(self, epoch, stage):
        bad = int(self._running["bad_batch"]) if torch.is_tensor(self._running["bad_batch"]) else -1
        if bad >= 0:
            raise TrainingError(f"non-finite loss at stage {stage}, epoch {epoch}, batch {bad + 1}; training "
                                f"stopped and the last good checkpoint {self.run_dir.ckpt_dir / 'last.pt'} is "
                                "kept (lower --lr, or check the data)")

    def _run_epoch(self):
        cfg = self.cfg
        epoch = self.epoch + 1
        stage = self._stage_of(epoch)
        last_of_stage = epoch % self.stage_epochs == 0
        nb = self.data.num_batches(cfg.batch_size, self._sampler)
        ctx = StepContext(stage=stage, epoch=epoch, batch=self._batch, seed=cfg.seed, num_stages=self.num_stages,
                          last_epoch_of_stage=last_of_stage)
        self.method.on_epoch_start(ctx)
        self.model.train()
        t0 = time.perf_counter()
        batches = self.data.train_batches(cfg.batch_size, epoch, cfg.seed, augment=cfg.augment,
                                          batch_sampler=self._sampler, start_batch=self._batch)
        for b, (x, y, idx) in enumerate(batches, start=self._batch):
            ctx.batch = b
            self._set_lr(epoch, b, nb)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None):
                logits = self._forward(x)
            loss, z, yy = self.method.loss(logits, y, idx, ctx)
            finite = torch.isfinite(loss.detach())
            if not torch.is_tensor(self._running["bad_batch"]):
                self._running["bad_batch"] = torch.tensor(-1, device=self.device)
            self._running["bad_batch"] = torch.where(~finite & (self._running["bad_batch"] < 0),
                                                     torch.tensor(b, device=self.device), self._running["bad_batch"])
            if (b + 1) % CHECK_FINITE_EVERY == 0 or b + 1 == nb:
                self._check_finite(epoch, stage)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            with torch.no_grad():
                self._running["loss"] += loss.detach().double() * len(yy)
                self._running["correct"] += (z.detach().argmax(1) == yy).sum().double()
                self._running["n"] += len(yy)
            self._batch = b + 1
            if self._listeners:
                self._emit(BatchEvent(stage, epoch, b + 1, nb, loss.detach()))
            if self._stop.is_set() and self._batch < nb:
                self._epoch_seconds += time.perf_counter() - t0
                self._save_last()
                self._emit(StoppedEvent(stage, epoch, self._batch))
                return False
        lr = self.cfg.lr * lr_factor(self.cfg, (epoch - 1) % self.cfg.epochs)  # the epoch's first learning rate
        self._check_finite(epoch, stage)
        self.method.on_epoch_end(ctx)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_s = self._epoch_seconds + time.perf_counter() - t0
        n = self._running["n"]
        train_loss = float(self._running["loss"]) / max(n, 1)
        train_acc = float(self._running["correct"]) / max(n, 1)
        test_loss, test_acc = self.evaluate("test")
        imgs = n * (2 if self._sampler is not None else 1)  # CS-KD forwards each sample and its partner

        event = None
        upd_s = 0.0
        if last_of_stage:
            t1 = time.perf_counter()
            self.model.eval()  # "the current checkpoint": eval mode, un-augmented training images
            soft = self.method.stage_end(self._infer, self.data, ctx)
            self.model.train()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            upd_s = time.perf_counter() - t1
            if soft is not None:
                self.soft_label_history[f"stage_{stage}"] = soft
                self.update_seconds.append(upd_s)
        self._train_seconds += train_s
        row = {"epoch": epoch, "stage": stage, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": train_s + upd_s,
               "images_per_s": imgs / train_s if train_s > 0 else float("nan")}
        self.history.append(row)
        self.epoch, self._batch, self._epoch_seconds = epoch, 0, 0.0
        self._running = self._zero_running()
        self.run_dir.write_history(self.history)
        if last_of_stage:
            self.run_dir.save_stage(stage, {"model": self.model.state_dict(), "stage": stage, "epoch": epoch})
            if stage in {int(k.split("_")[1]) for k in self.soft_label_history}:
                self.run_dir.write_soft_labels(self.soft_label_history)
            if self.method.restart_after_stage and stage < self.num_stages:
                self._build_model(generation=stage + 1)
        self._save_last()
        self._emit(EpochEvent(stage, epoch, row))
        if last_of_stage:
            metrics = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc,
                       "update_seconds": upd_s if self.soft_label_history.get(f"stage_{stage}") is not None else None}
            event = StageEvent(stage, self.soft_label_history.get(f"stage_{stage}"), metrics)
            self._emit(event)
        return event

    def _save_last(self):
        if self.cfg.checkpoint_every_epoch or self.done or self._batch:
            try:
                self.run_dir.save_last(self._state())
            except OSError as e:
                raise TrainingError(f"could not write checkpoint {self.run_dir.ckpt_dir / 'last.pt'}: {e}; the "
                                    "previous checkpoint is intact (free disk space, then resume)") from None

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float]:
        """(loss, accuracy) on a split, without augmentation; the loss uses the method's output temperature."""
        self.model.eval()
        T = self.method.output_temperature
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        n = 0
        for x, y, _ in self.data.eval_batches(split, self.cfg.eval_batch_size):
            z = self._infer(x)
            loss += F.cross_entropy(z / T, y, reduction="sum").double()
            correct += (z.argmax(1) == y).sum()
            n += len(y)
        self.model.train()
        return float(loss) / max(n, 1), float(correct) / max(n, 1)

    def _finish(self) -> dict:
        if self.summary is not None:
            return self.summary
        hist = self.history
        last = hist[-1] if hist else {}
        ips = [r["images_per_s"] for r in hist if np.isfinite(r["images_per_s"])]
        soft = self.soft_label_history
        self.summary = {
            "method": self.cfg.method, "dataset": self.cfg.dataset, "model": self.cfg.model,
            "epochs": self.total_epochs, "stages": self.num_stages, "trainings": self.cfg.generations,
            "test_acc": last.get("test_acc"), "test_loss": last.get("test_loss"),
            "train_acc": last.get("train_acc"), "best_test_acc": max((r["test_acc"] for r in hist), default=None),
            "train_seconds": self._train_seconds, "update_seconds": self.update_seconds,
            "update_seconds_total": float(sum(self.update_seconds)),
            "mean_images_per_s": float(np.mean(ips)) if ips else None,
            "soft_label_own_mass": {k: float(np.mean(np.diag(v))) for k, v in soft.items()},
            "device": str(self.device),
        }
        self.summary.update(self._calibration())
        self.run_dir.write_summary(self.summary)
        self._emit(DoneEvent(self.summary))
        return self.summary

    @torch.no_grad()
    def _calibration(self) -> dict:
        from .analysis import expected_calibration_error
        T = self.method.output_temperature
        probs, labels = [], []
        self.model.eval()
        for x, y, _ in self.data.eval_batches("test", self.cfg.eval_batch_size):
            probs.append(F.softmax(self._infer(x) / T, 1).cpu())
            labels.append(y.cpu())
        p, y = torch.cat(probs).numpy(), torch.cat(labels).numpy()
        return {"test_ece": float(expected_calibration_error(p, y))}


class _SigintToStop:
    """While training in the main thread, the first Ctrl-C asks for a clean stop; a second one interrupts."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.prev = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.trainer._stop.is_set():
                    signal.signal(signal.SIGINT, self.prev or signal.default_int_handler)
                    raise KeyboardInterrupt
                self.trainer.request_stop()

            try:
                signal.signal(signal.SIGINT, handler)
            except ValueError:
                self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)


def train(cfg: Config | dict | None = None, out=None, progress: bool = True, **kw) -> dict:
    """Train a run to the end and return its summary (`train(method="ls", epochs=6)`)."""
    if cfg is None:
        cfg = Config(**kw)
    elif kw:
        cfg = (Config.from_dict(cfg) if isinstance(cfg, dict) else cfg).replace(**kw)
    with Trainer(cfg, out=out, progress=progress) as t:
        return t.run()


__all__ = ["Trainer", "train", "pick_device", "TrainingError", "BatchEvent", "EpochEvent", "StageEvent", "DoneEvent",
           "StoppedEvent", "ConfigError"]
