"""One optimisation step and one training epoch (torchvision's `train_one_epoch`, with a method's loss).

The step owns the learning rate of each batch, the forward pass under autocast, the method's loss, the backward
pass (with a GradScaler for fp16) and the non-finite guard; the duration estimate reuses it on copies.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from ..config import Config
from ..errors import TrainingError
from ..methods import StepContext
from ..runs import FAULT, fault_point
from .auto import resolve_amp
from .events import BatchEvent

#: the first non-finite loss is looked for every this many batches (each look syncs a CUDA stream)
CHECK_FINITE_EVERY = 50


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


def amp_dtype(mode: str, device: torch.device):
    """The autocast dtype for `mode` on `device`, or None for float32 (the reasons: `auto.resolve_amp`)."""
    return resolve_amp(mode, device)[0]


def make_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    # foreach: the per-parameter loop's arithmetic (bitwise the same) in a few multi-tensor kernels
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, foreach=True)


class TrainStep:
    """lr, forward, loss, backward, optimiser step and the non-finite guard for one batch."""

    def __init__(self, cfg: Config, forward: Callable, optimizer, method, strategy, *, amp, channels_last: bool,
                 num_train: int):
        self.cfg, self.forward, self.optimizer, self.method, self.strategy = cfg, forward, optimizer, method, strategy
        self.amp, self.channels_last, self.num_train = amp, channels_last, num_train
        self.device = strategy.device
        self.scaler = torch.amp.GradScaler(self.device.type) if amp == torch.float16 else None
        self.reset_guard()

    def reset_guard(self) -> None:
        self._bad = torch.full((), -1, dtype=torch.long, device=self.device)

    def set_lr(self, epoch: int, batch: int, num_batches: int) -> float:
        lr = self.cfg.lr * lr_factor(self.cfg, (epoch - 1) % self.cfg.epochs + batch / num_batches)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def __call__(self, x, y, idx, ctx: StepContext):
        """Train on one batch; returns (loss, logits used for accuracy, their labels), all still on the device."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx.x = x  # the method's forward and loss see the batch (Label Refinery: its teacher's input)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.method.forward(self.forward, x, ctx)
        loss, z, yy = self.method.loss(logits, y, idx, ctx)
        ctx.x = None
        # the first non-finite batch, kept on the device: no host sync (on CUDA each one stalls the stream)
        self._bad = torch.where(torch.isfinite(loss.detach()) | (self._bad >= 0), self._bad, ctx.batch)
        self.optimizer.zero_grad(set_to_none=True)
        bw = self.strategy.scale_loss(loss, ctx.batch, len(yy), self.num_train, self.cfg.batch_size)
        if self.scaler is not None:
            self.scaler.scale(bw).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            bw.backward()
            self.optimizer.step()
        return loss, z, yy

    def check_finite(self, stage: int, epoch: int, kept) -> None:
        """Raise TrainingError (on every rank) if a loss of this epoch was not finite; `kept()` says what a
        resume starts from."""
        bad = self.strategy.first_bad(int(self._bad))
        if bad >= 0:
            raise TrainingError(f"non-finite loss at stage {stage}, epoch {epoch}, batch {bad + 1}; training "
                                f"stopped and {kept()} (lower --lr, or check the data)")


def train_one_epoch(step: TrainStep, data, state, ctx: StepContext, *, sampler, emit, stop_flag, kept) -> bool:
    """Train the rest of epoch `ctx.epoch` from batch `state.batch`; False if asked to stop before its end."""
    cfg = step.cfg
    nb = data.num_batches(cfg.batch_size, sampler)
    step.reset_guard()
    t0 = time.perf_counter()
    batches = data.train_batches(cfg.batch_size, ctx.epoch, cfg.seed, augment=cfg.augment, batch_sampler=sampler,
                                 start_batch=state.batch, **step.strategy.shard_kw())
    for b, (x, y, idx) in enumerate(batches, start=state.batch):
        ctx.batch = b
        step.set_lr(ctx.epoch, b, nb)
        loss, z, yy = step(x, y, idx, ctx)
        if (b + 1) % CHECK_FINITE_EVERY == 0 or b + 1 == nb:
            step.check_finite(ctx.stage, ctx.epoch, kept)
        if FAULT is not None:
            fault_point("batch")
        state.running.add(loss, z, yy)
        state.batch = b + 1
        if emit is not None:
            emit(BatchEvent(ctx.stage, ctx.epoch, b + 1, nb, loss.detach()))
        if state.batch < nb and step.strategy.stop_requested(stop_flag.is_set(), b):
            state.epoch_seconds += time.perf_counter() - t0
            step.check_finite(ctx.stage, ctx.epoch, kept)  # never checkpoint a diverged model
            return False
    step.check_finite(ctx.stage, ctx.epoch, kept)
    step.method.on_epoch_end(ctx)
    if step.device.type == "cuda":
        torch.cuda.synchronize()
    state.epoch_seconds += time.perf_counter() - t0
    return True


__all__ = ["TrainStep", "train_one_epoch", "lr_factor", "amp_dtype", "make_optimizer", "CHECK_FINITE_EVERY"]
