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

Data-parallel (torchrun, see colam_core.distributed and docs/RELIABILITY.md):
`batch_size` stays the global batch, each rank trains on its share of every
batch, eval passes are sharded and reduced, and only rank 0 writes the run
directory. Without a process group nothing of this runs.
"""
from __future__ import annotations

import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import TrainingError

from . import distributed as _dist
from .config import Config, ConfigError
from .data import load_dataset
from .methods import StepContext, build_method
from .models import build_model
from .runs import FAULT, RunDir, RunError, fault_point, versions

CHECK_FINITE_EVERY = 50


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


def _fingerprint_diff(theirs: dict, ours: dict) -> list[str]:
    """Options that differ, the ones that say most about a run first (dataset, model, method), then by name."""
    first = ("dataset", "model", "method")
    diff = [k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k)]
    return sorted(diff, key=lambda k: (first.index(k) if k in first else len(first), k))


def _default_out(cfg: Config) -> Path:
    name = cfg.name or f"{cfg.dataset}_{cfg.model}_{cfg.method}_s{cfg.seed}"
    return Path("runs") / name


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train one run; see the module docstring and docs/ARCHITECTURE.md."""

    def __init__(self, cfg: Config | dict, out: str | Path | None = None, progress: bool = False,
                 listeners: tuple[Callable, ...] = (), from_stage: int | None = None):
        if isinstance(cfg, dict):
            cfg = Config.from_dict(cfg)
        self.cfg = cfg.validate()
        self.out = Path(out) if out is not None else _default_out(cfg)
        self._listeners: list[Callable] = list(listeners)
        self._stop = threading.Event()
        self._from_stage = from_stage
        # data-parallel training when launched by torchrun (or inside a process group); else one process
        self.dist, self.device = _dist.setup(pick_device(cfg.device))
        self._ddp = self.dist.enabled
        self._shard_kw = {"shard": (self.dist.rank, self.dist.world_size)} if self._ddp else {}

        # the run directory: rank 0 refuses another configuration before loading anything, then locks it
        self.run_dir = RunDir(self.out, write=False)
        created = []

        def open_run_dir():
            existing = self.run_dir.read_config() if (self.out / "config.json").exists() else None
            if existing is not None:
                theirs = existing.get("fingerprint", {})
                ours = cfg.fingerprint()
                diff = _fingerprint_diff(theirs, ours)
                if diff:
                    k = diff[0]
                    raise RunError(f"run directory {self.out} already holds a different run ({k}: "
                                   f"{theirs.get(k)!r} there, {ours.get(k)!r} here); nothing was changed. Resume it "
                                   f"with `--resume {self.out}`, or choose another --out")
            elif from_stage is not None:
                raise RunError(f"--from-stage {from_stage}: {self.out} is not a run directory (no config.json)")
            new = not self.out.exists()
            run_dir = RunDir(self.out, write=True)
            run_dir.lock()
            self.run_dir = run_dir
            if new:
                created.append(self.out)
            resume = ("stage" if from_stage is not None else
                      "last" if existing is not None and (run_dir.ckpt_dir / "last.pt").exists() else None)
            return existing, resume

        try:
            existing, resume = self.dist.run(open_run_dir, main_only=True)
            self.dist.run(lambda: self._setup(existing, resume))
        except BaseException:
            self.run_dir.unlock()
            for d in created:  # made by this call and still locked by it: leave nothing behind
                shutil.rmtree(d, ignore_errors=True)
            self.dist.close()
            raise
        if progress and self.dist.is_main:
            from .progress import TqdmListener
            self.subscribe(TqdmListener())

    # ---------------------------------------------------------------- setup
    def _setup(self, existing, resume=None):
        cfg = self.cfg
        self.data = load_dataset(cfg.dataset, data_root=cfg.data_root, download=cfg.download, device=self.device,
                                 train_limit=cfg.train_limit, test_limit=cfg.test_limit, image_size=cfg.image_size,
                                 num_workers=cfg.num_workers, seed=cfg.seed)
        self.info = self.data.info
        # eval passes (test metrics, the stage-end soft-label pass) cover each rank's share of the samples
        self._eval_data = _dist.ShardedData(self.data, self.dist) if self._ddp else self.data
        if self._ddp:
            self._check_shards()
        self.method = build_method(cfg, self.info.num_classes, self.data.train_labels, self.device)
        self.num_stages = cfg.num_stages
        self.stage_epochs = cfg.stage_epochs
        self.total_epochs = cfg.total_epochs
        self._amp = amp_dtype(cfg.amp, self.device)
        # auto: channels_last on CUDA and on CPU (oneDNN trains conv nets 1.1-1.6x faster in it, docs/BENCHMARKS.md);
        # a resumed run keeps the layout it started with, so its float rounding does not change midway
        started = existing.get("channels_last") if isinstance(existing, dict) else None
        if cfg.channels_last is not None:
            self._channels_last = cfg.channels_last
        elif isinstance(started, bool):
            self._channels_last = started
        else:
            self._channels_last = self.device.type in ("cuda", "cpu")
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

        state = self._resume_state(resume)
        if state is not None:
            self._load_state(state)
        self.resolved = {
            "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "versions": versions(),
            "device": str(self.device), "amp": str(self._amp).replace("torch.", "") if self._amp else "off",
            "channels_last": self._channels_last, "dataset": self.info.__dict__.copy(),
            "output_temperature": self.method.output_temperature, "num_stages": self.num_stages,
            "stage_epochs": self.stage_epochs, "total_epochs": self.total_epochs,
            "trainings": cfg.generations, "distributed": self.dist.describe(),
        }
        if not self.dist.is_main:
            return
        try:
            self.run_dir.write_config(self.resolved)
            if existing is not None:  # files may be ahead of the checkpoint after a kill: make them agree with it
                self.run_dir.write_history(self.history)
                if self.soft_label_history:
                    self.run_dir.write_soft_labels(self.soft_label_history)
                else:
                    self.run_dir.remove("soft_labels.npz")
                if not self.done:
                    self.run_dir.remove("summary.json")
                if resume == "stage":  # last.pt (damaged, or later) now restarts from the stage end too
                    self.run_dir.save_last(state)
        except OSError as e:
            raise TrainingError(f"could not write {e.filename or self.out}: {e.strerror or e}; nothing was trained "
                                "(free disk space or fix permissions, or choose another --out)") from None

    def _resume_state(self, resume):
        """The state to resume: None (fresh), "last" (checkpoints/last.pt) or "stage" (stage_K.pt, --from-stage)."""
        if resume is None:
            return None
        path = self.run_dir.ckpt_dir / ("last.pt" if resume == "last" else f"stage_{self._from_stage}.pt")
        if self._ddp and not path.exists():
            raise RunError(f"rank {self.dist.rank} cannot see {path}, which rank 0 resumes from; under data-parallel "
                           "training the run directory must be on a filesystem every node shares")
        return self.run_dir.load_last() if resume == "last" else self.run_dir.load_stage_resume(self._from_stage)

    def _check_shards(self):
        """Every global batch must give each rank at least one sample (an empty shard has no loss to average)."""
        W, N, bs = self.dist.world_size, self.info.num_train, self.cfg.batch_size
        smallest = _dist.min_global_batch(N, bs)
        if smallest < W:
            ok = next((b for b in range(max(bs, W), N + 1) if _dist.min_global_batch(N, b) >= W), N)
            raise ConfigError("batch_size", bs, f"a global batch size whose every batch has at least one sample per "
                              f"process: with {N} training samples it leaves a batch of {smallest} for {W} processes "
                              f"(e.g. --batch-size {ok})")

    def _build_model(self, generation: int):
        cfg = self.cfg
        torch.manual_seed(cfg.seed + 100_003 * (generation - 1))
        model = build_model(cfg.model, self.info.num_classes, self.info.in_channels, self.info.image_size)
        model = model.to(self.device)
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._eval_forward = torch.compile(model) if cfg.compile else model  # eval passes: never the DDP wrapper
        if self._ddp:
            from torch.nn.parallel import DistributedDataParallel
            ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._forward = torch.compile(ddp) if cfg.compile else ddp
        else:
            self._forward = self._eval_forward
        # foreach: the per-parameter loop's arithmetic (bitwise the same) in a few multi-tensor kernels
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, foreach=True)
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

    def _state_for_save(self) -> dict:
        """_state(); under DDP with the per-rank accumulators (running loss / accuracy, a method's partial sums)
        summed over ranks, so rank 0's checkpoint holds the whole picture (collective: every rank calls it)."""
        st = self._state()
        if not self._ddp:
            return st
        r = st["running"]
        t = torch.stack([r["loss"].double(), r["correct"].double(), torch.tensor(float(r["n"]), dtype=torch.float64)])
        t = t.to(self.device)
        self.dist.all_reduce(t)
        t = t.cpu()
        st["running"] = {"loss": t[0].clone(), "correct": t[1].clone(), "n": int(t[2])}
        method = dict(st["method"])
        for k in _dist.ADDITIVE_STATE_KEYS:
            if torch.is_tensor(method.get(k)):
                v = method[k].detach().clone().to(self.device)
                self.dist.all_reduce(v)
                method[k] = v.cpu()
        st["method"] = method
        return st

    def _load_state(self, st: dict):
        if st.get("fingerprint") != self.cfg.fingerprint():
            theirs, ours = st.get("fingerprint") or {}, self.cfg.fingerprint()
            diff = _fingerprint_diff(theirs, ours)
            what = (f" ({diff[0]}: {theirs.get(diff[0])!r} in the checkpoint, {ours.get(diff[0])!r} in this run)"
                    if diff and theirs else "")
            raise RunError(f"{self.run_dir.ckpt_dir / 'last.pt'} belongs to another configuration{what}; "
                           "nothing was changed: start a new run with another --out")
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
        if self._ddp and not self.dist.is_main:  # the checkpoint holds sums over ranks: rank 0 carries them on
            self._running["loss"].zero_()
            self._running["correct"].zero_()
            self._running["n"] = 0
            mst = self.method.state_dict()
            if any(torch.is_tensor(mst.get(k)) for k in _dist.ADDITIVE_STATE_KEYS):
                self.method.load_state_dict({k: (torch.zeros_like(v) if k in _dist.ADDITIVE_STATE_KEYS and
                                                 torch.is_tensor(v) else v) for k, v in mst.items()})

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

    def close(self, clean: bool = True) -> None:
        """Release the run directory's lock (and, under DDP, the process group this trainer created)."""
        self.run_dir.unlock()
        if self._ddp:
            # the DDP wrapper holds the process group: free it now, while the interpreter is fully alive (a gloo
            # group destroyed during interpreter shutdown can abort the process), then tear down together
            self._forward = self._eval_forward
            import gc
            gc.collect()
            if clean and self.dist.owned:
                self.dist.barrier()
        self.dist.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(clean=exc_type is None)

    def run_stage(self) -> StageEvent | None:
        """Run the epochs of the next stage. Returns its StageEvent, or None if stopped early / already done."""
        if self.done:
            self._finish()
            return None
        with _SigintToStop(self):
            self._stop.clear()
            return self._run_stage()

    def run(self) -> dict | None:
        """Run all remaining stages. Returns the summary, or None if stopped early."""
        with _SigintToStop(self):
            self._stop.clear()
            while not self.done:
                if self._run_stage() is None and not self.done:
                    return None
            return self._finish()

    def _run_stage(self) -> StageEvent | None:
        stage = self.current_stage
        event = None
        while not self.done and self._stage_of(self.epoch + 1) == stage:
            if self._stop_at_boundary():  # asked to stop between epochs (e.g. during a stage-end pass)
                if not self.cfg.checkpoint_every_epoch:
                    self._save_last(force=True)
                self._emit(StoppedEvent(stage, self.epoch + 1, 0))
                return None
            event = self._run_epoch()
            if event is False:
                return None
        if self.done:
            self._finish()
        return event if isinstance(event, StageEvent) else None

    def _stop_at_boundary(self) -> bool:
        if not self._ddp:
            return self._stop.is_set()
        return self.dist.sync_flags(self._stop.is_set(), -1, self.device)[0]

    def _stop_in_epoch(self, b: int) -> bool:
        """Under DDP: has any rank been asked to stop? Agreed every STOP_SYNC_EVERY batches (a collective)."""
        if (b + 1) % _dist.STOP_SYNC_EVERY:
            return False
        return self.dist.sync_flags(self._stop.is_set(), -1, self.device)[0]

    def _ddp_loss(self, loss, b: int, n_local: int):
        """Scale a rank's mean loss so DDP's gradient average equals the gradient of the global batch mean."""
        n_global = _dist.global_batch_size(self.info.num_train, self.cfg.batch_size, b)
        return loss * (n_local * self.dist.world_size / n_global)

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
            return self._eval_forward(x).float()

    def _set_lr(self, epoch: int, batch: int, num_batches: int):
        e_in_training = (epoch - 1) % self.cfg.epochs
        lr = self.cfg.lr * lr_factor(self.cfg, e_in_training + batch / num_batches)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _check_finite(self, epoch, stage):
        bad = int(self._running["bad_batch"]) if torch.is_tensor(self._running["bad_batch"]) else -1
        if self._ddp:  # agree, so every rank stops at the same place
            bad = self.dist.sync_flags(False, bad, self.device)[1]
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
                                          batch_sampler=self._sampler, start_batch=self._batch, **self._shard_kw)
        for b, (x, y, idx) in enumerate(batches, start=self._batch):
            ctx.batch = b
            self._set_lr(epoch, b, nb)
            if self._channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self._amp, enabled=self._amp is not None):
                logits = self._forward(x)
            loss, z, yy = self.method.loss(logits, y, idx, ctx)
            # first non-finite batch, kept on the device: no host-to-device copy (on CUDA each one syncs the stream)
            bad = self._running["bad_batch"]
            if not torch.is_tensor(bad):
                bad = torch.full((), -1, dtype=torch.long, device=self.device)
            self._running["bad_batch"] = torch.where(torch.isfinite(loss.detach()) | (bad >= 0), bad, b)
            if (b + 1) % CHECK_FINITE_EVERY == 0 or b + 1 == nb:
                self._check_finite(epoch, stage)
            self.optimizer.zero_grad(set_to_none=True)
            bw = self._ddp_loss(loss, b, len(yy)) if self._ddp else loss
            if self.scaler is not None:
                self.scaler.scale(bw).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                bw.backward()
                self.optimizer.step()
            if FAULT is not None:
                fault_point("batch")
            with torch.no_grad():
                self._running["loss"] += loss.detach().double() * len(yy)
                self._running["correct"] += (z.detach().argmax(1) == yy).sum().double()
                self._running["n"] += len(yy)
            self._batch = b + 1
            if self._listeners:
                self._emit(BatchEvent(stage, epoch, b + 1, nb, loss.detach()))
            if self._batch < nb and (self._stop_in_epoch(b) if self._ddp else self._stop.is_set()):
                self._epoch_seconds += time.perf_counter() - t0
                self._check_finite(epoch, stage)  # never checkpoint a diverged model
                self._save_last()
                self._emit(StoppedEvent(stage, epoch, self._batch))
                return False
        lr = self.cfg.lr * lr_factor(self.cfg, (epoch - 1) % self.cfg.epochs)  # the epoch's first learning rate
        self._check_finite(epoch, stage)
        self.method.on_epoch_end(ctx)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        train_s = self._epoch_seconds + time.perf_counter() - t0
        if self._ddp:  # the epoch's loss / accuracy over every rank's samples
            self._reduce_running()
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
            soft = self.method.stage_end(self._pass_infer(), self._eval_data, ctx)
            self.model.train()
            if soft is not None and not np.all(np.isfinite(soft)):
                raise TrainingError(f"the soft labels learned at the end of stage {stage} are not finite (the model's "
                                    f"outputs overflowed); training stopped and the last good checkpoint "
                                    f"{self.run_dir.ckpt_dir / 'last.pt'} is kept (lower --lr or --T)")
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
        stage_model = None
        if last_of_stage:
            stage_model = self.model.state_dict()
            if self.method.restart_after_stage and stage < self.num_stages:
                self._build_model(generation=stage + 1)
        save_last = self.cfg.checkpoint_every_epoch or self.done
        state = self._state_for_save() if save_last or last_of_stage else None
        new_soft = last_of_stage and f"stage_{stage}" in self.soft_label_history

        def write():  # history, soft labels, stage checkpoint, then last.pt: a kill between leaves files ahead
            self.run_dir.write_history(self.history)  # of last.pt, which the next resume rewrites to agree
            if last_of_stage:
                if new_soft:
                    self.run_dir.write_soft_labels(self.soft_label_history)
                # the stage's weights, plus the full state to restart from this stage end (--from-stage)
                self.run_dir.save_stage(stage, {"model": stage_model, "stage": stage, "epoch": epoch,
                                                "resume": state})
                fault_point("stage_files")
            if save_last:
                self.run_dir.save_last(state)

        self._write(write)
        self._emit(EpochEvent(stage, epoch, row))
        if last_of_stage:
            metrics = {"test_acc": test_acc, "test_loss": test_loss, "train_acc": train_acc,
                       "update_seconds": upd_s if self.soft_label_history.get(f"stage_{stage}") is not None else None}
            event = StageEvent(stage, self.soft_label_history.get(f"stage_{stage}"), metrics)
            self._emit(event)
        return event

    def _save_last(self, force: bool = False):
        if force or self.cfg.checkpoint_every_epoch or self.done or self._batch:
            state = self._state_for_save()
            self._write(lambda: self.run_dir.save_last(state))

    def _write(self, fn):
        """Rank 0 writes the run directory; a failed write (disk full, permissions) stops training on every rank
        with a TrainingError, and the previous checkpoint stays intact (every file is replaced atomically)."""
        def guarded():
            try:
                fn()
            except OSError as e:
                last = self.run_dir.ckpt_dir / "last.pt"
                kept = (f"the previous checkpoint {last} is intact" if last.exists() else
                        "no checkpoint had been written yet")
                raise TrainingError(
                    f"could not write {e.filename or self.out}: {e.strerror or e}; training stopped and {kept}: "
                    f"free disk space (or fix permissions), then resume with "
                    f"`python -m colam_core train --resume {self.out}`") from None
        if self._ddp:
            self.dist.run(guarded, main_only=True)
        elif self.dist.is_main:
            guarded()

    def _sync_buffers(self):
        """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them at the start of each
        training forward, so after a stage's last step every rank holds the statistics of its own shard; an eval
        pass must run the one model rank 0 checkpoints."""
        self.dist.broadcast_(*self.model.buffers())

    def _reduce_running(self):
        r = self._running
        t = torch.stack([r["loss"], r["correct"], torch.tensor(float(r["n"]), dtype=torch.float64,
                                                              device=self.device)])
        self.dist.all_reduce(t)
        r["loss"], r["correct"], r["n"] = t[0], t[1], int(t[2])

    def _pass_infer(self):
        """The inference function handed to a stage-end pass (with the test-only eval_pass fault point)."""
        if FAULT is None:
            return self._infer

        def infer(x):
            out = self._infer(x)
            fault_point("eval_pass")
            return out
        return infer

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float]:
        """(loss, accuracy) on a split, without augmentation; the loss uses the method's output temperature."""
        if self._ddp:
            self._sync_buffers()
        self.model.eval()
        T = self.method.output_temperature
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        n = 0
        for x, y, _ in self._eval_data.eval_batches(split, self.cfg.eval_batch_size):  # this rank's share
            z = self._infer(x)
            loss += F.cross_entropy(z / T, y, reduction="sum").double()
            correct += (z.argmax(1) == y).sum()
            n += len(y)
        self.model.train()
        if self._ddp:
            t = torch.stack([loss, correct, torch.tensor(float(n), dtype=torch.float64, device=self.device)])
            self.dist.all_reduce(t)
            loss, correct, n = t[0], t[1], int(t[2])
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
        summary = self.summary
        self._write(lambda: self.run_dir.write_summary(summary))
        self._emit(DoneEvent(self.summary))
        return self.summary

    @torch.no_grad()
    def _calibration(self) -> dict:
        from .analysis import expected_calibration_error
        T = self.method.output_temperature
        probs, labels = [], []
        if self._ddp:
            self._sync_buffers()
        self.model.eval()
        for x, y, _ in self._eval_data.eval_batches("test", self.cfg.eval_batch_size):
            probs.append(F.softmax(self._infer(x) / T, 1))
            labels.append(y)
        if self._ddp:  # shards are contiguous and in rank order: gathering restores the test set's order
            C = self.info.num_classes
            p = torch.cat(probs) if probs else torch.zeros(0, C, device=self.device)
            yy = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=self.device)
            probs, labels = [self.dist.gather_cat(p.float())], [self.dist.gather_cat(yy.long())]
        p, y = torch.cat(probs).cpu().numpy(), torch.cat(labels).cpu().numpy()
        return {"test_ece": float(expected_calibration_error(p, y))}


class _SigintToStop:
    """While training in the main thread, the first Ctrl-C asks for a clean stop; a second one interrupts.

    Under data-parallel training SIGTERM asks for a clean stop too (torchrun forwards signals to every worker;
    schedulers send SIGTERM before killing), and a second Ctrl-C interrupts only after a one-second grace,
    because torchrun forwards the terminal's Ctrl-C a second time right away.
    """

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.prev = {}
        self.first = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            ddp = self.trainer._ddp
            signals = (signal.SIGINT, signal.SIGTERM) if ddp else (signal.SIGINT,)

            def handler(signum, frame):
                now = time.monotonic()
                if (signum == signal.SIGINT and self.trainer._stop.is_set()
                        and (not ddp or (self.first is not None and now - self.first > 1.0))):
                    signal.signal(signal.SIGINT, self.prev.get(signal.SIGINT) or signal.default_int_handler)
                    raise KeyboardInterrupt
                if self.first is None:
                    self.first = now
                self.trainer.request_stop()

            for sig in signals:
                try:
                    self.prev[sig] = signal.getsignal(sig)
                    signal.signal(sig, handler)
                except ValueError:
                    self.prev.pop(sig, None)
        return self

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            if prev is not None:
                signal.signal(sig, prev)


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
