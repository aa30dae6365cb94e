"""Estimate how long a run will take before starting the long part.

`estimate_duration(trainer)` times a few training steps, with the trainer's own `TrainStep` (the same optimiser,
GradScaler, compile and layout), on copies of its model, optimiser and method: the run itself is not touched, so
its result stays bitwise reproducible. The time is extrapolated to the rest of the run.
"""
from __future__ import annotations

import copy
import time

import torch

from ..methods import StepContext
from .step import TrainStep, make_optimizer


def estimate_duration(trainer, batches: int = 6, warmup: int = 2) -> dict:
    """Seconds per batch, per epoch and for the remaining run, measured on `batches` steps after `warmup`."""
    cfg = trainer.cfg
    model = copy.deepcopy(trainer.model).train()
    method = copy.deepcopy(trainer.method)
    forward = torch.compile(model) if trainer.compile else model
    step = TrainStep(cfg, forward, make_optimizer(cfg, model), method, trainer.strategy, amp=trainer.amp,
                     channels_last=trainer.channels_last, num_train=trainer.info.num_train)
    sampler = method.batch_sampler()
    nb = trainer.data.num_batches(cfg.batch_size, sampler)
    times = []
    it = trainer.data.train_batches(cfg.batch_size, 1, cfg.seed, augment=cfg.augment, batch_sampler=sampler,
                                    **trainer.strategy.shard_kw())
    for b, (x, y, idx) in enumerate(it):
        if b >= warmup + batches:
            break
        t0 = time.perf_counter()
        ctx = StepContext(stage=1, epoch=1, batch=b, seed=cfg.seed, num_stages=trainer.num_stages,
                          last_epoch_of_stage=False)
        step.set_lr(1, b, nb)
        step(x, y, idx, ctx)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    measured = times[warmup:] or times
    per_batch = sum(measured) / max(len(measured), 1)
    epoch_s = per_batch * nb
    remaining_epochs = trainer.total_epochs - trainer.epoch
    return {"device": str(trainer.device), "seconds_per_batch": per_batch, "batches_per_epoch": nb,
            "epoch_seconds": epoch_s, "remaining_epochs": remaining_epochs,
            "remaining_seconds": epoch_s * remaining_epochs, "measured_batches": len(measured)}


def describe_estimate(est: dict, quick_hint: str = "-p quick True") -> str:
    """One paragraph a person can act on."""
    total = est["remaining_seconds"]
    h, rem = divmod(int(total), 3600)
    m = rem // 60
    text = (f"Measured {est['measured_batches']} batches on {est['device']}: {est['seconds_per_batch'] * 1000:.0f} ms "
            f"per batch, about {est['epoch_seconds'] / 60:.1f} min per epoch; the remaining "
            f"{est['remaining_epochs']} epochs should take about {h} h {m} min.")
    if est["device"] == "cpu" and total > 1800:
        text += (f" This is a CPU: the paper setting is meant for a GPU. For a smoke run use {quick_hint}.")
    return text


__all__ = ["estimate_duration", "describe_estimate"]
