"""Private helpers shared by the analysis modules: array conversion, class names, stages, soft-label checks."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..runs import stage_number


_EPS = 1e-12


def _np(a: Any, dtype=np.float64) -> np.ndarray:
    """Array-like or torch tensor -> numpy array (on CPU, detached)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype) if dtype is not None else np.asarray(a)


def _names(class_names: Sequence[str] | None, ids: Iterable[int]) -> list[str]:
    """Display names for class ids; ``str(id)`` where no name is known."""
    out = []
    for c in ids:
        c = int(c)
        if class_names is not None and 0 <= c < len(class_names):
            out.append(str(class_names[c]))
        else:
            out.append(str(c))
    return out


def _run_class_names(run: Any) -> list[str] | None:
    names = getattr(run, "class_names", None)
    return list(names) if names is not None else None


def _stage_number(stage: int | str | None) -> int | None:
    """``3``, ``"3"`` or ``"stage_3"`` -> ``3`` (runs.stage_number); None (the latest) stays None."""
    return None if stage is None else stage_number(stage)


def _l2_normalize(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.maximum(norms, _EPS)


def _check_soft(soft: Any) -> np.ndarray:
    s = _np(soft)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"soft labels must be a square C x C matrix; got shape {s.shape}")
    return s


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy in nats (0 log 0 = 0)."""
    p = np.clip(p, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)
