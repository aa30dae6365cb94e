"""Penultimate features, logits and seeded per-class samples of a run's data."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ._common import _np, _stage_number


# ---------------------------------------------------------------------------
# features and sampling
# ---------------------------------------------------------------------------

def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _batched_forward(model: torch.nn.Module, fn, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Run ``fn(batch)`` over ``x`` in eval mode without gradients; restores the model's mode."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    x = torch.as_tensor(x)
    device = _model_device(model)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                xb = x[start:start + batch_size].to(device)
                outs.append(fn(xb).float().cpu())
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("x is empty")
    return torch.cat(outs).numpy()


def penultimate_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Penultimate-layer activations ``model.features(x)`` as an (N, D) float32 array.

    Runs in eval mode under ``torch.no_grad`` in batches on the model's device;
    the model's train/eval mode is restored afterwards.
    """
    return _batched_forward(model, model.features, x, batch_size)


def logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Raw model outputs ``model(x)`` (not divided by any temperature) as an (N, C) float32 array."""
    return _batched_forward(model, model, x, batch_size)


def sample_indices(labels: Any, classes: Sequence[int] | None = None,
                   per_class: int | None = 100, seed: int = 0) -> np.ndarray:
    """Seeded random sample of up to ``per_class`` indices of each class, grouped by class.

    Classes appear in the given order (all classes present in ``labels``, in
    increasing order, when ``classes`` is None); indices inside a class are
    sorted. A class with fewer samples contributes all of them;
    ``per_class=None`` takes every sample. Each class draws from its own
    generator seeded by ``(seed, class)``, so the samples of a class do not
    depend on which other classes were chosen.
    """
    y = _np(labels, dtype=np.int64).ravel()
    if classes is None:
        classes = np.unique(y).tolist()
    out = []
    for c in classes:
        idx = np.flatnonzero(y == int(c))
        if per_class is not None and len(idx) > per_class:
            rng = np.random.default_rng([int(seed), int(c)])
            idx = np.sort(rng.choice(idx, size=int(per_class), replace=False))
        out.append(idx)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _classifier_params(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray | None]:
    clf = model.classifier
    w = clf.weight.detach().cpu().double().numpy()
    b = clf.bias.detach().cpu().double().numpy() if getattr(clf, "bias", None) is not None else None
    return w, b


def _run_features(run: Any, stage, split: str, classes, per_class, seed, batch_size: int = 512):
    """(model, features, labels, indices) for a seeded per-class sample of ``split``."""
    model = run.model(_stage_number(stage))
    x, y = run.data(split)
    y_np = _np(y, dtype=np.int64).ravel()
    idx = sample_indices(y_np, classes, per_class, seed)
    feats = penultimate_features(model, x[torch.as_tensor(idx, dtype=torch.long)], batch_size=batch_size)
    return model, feats, y_np[idx], idx
