"""Structure of soft-label matrices: top-k entries, superclass share, sharpness, drift and own mass per stage."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics import erasures
from ._common import _check_soft, _entropy, _names


# ---------------------------------------------------------------------------
# soft-label structure
# ---------------------------------------------------------------------------

def soft_labels_by_stage(run: Any) -> dict[str, np.ndarray]:
    """All soft-label matrices of a run, ``{"stage_1": C x C, ...}`` in stage order."""
    return {k: np.asarray(run.soft_labels(k), dtype=np.float64) for k in run.soft_label_keys()}


def top_k_soft(soft: Any, k: int = 5, class_names: Sequence[str] | None = None,
               include_self: bool = False) -> pd.DataFrame:
    """The ``k`` largest entries of each class's soft label.

    Returns columns class, class_name, rank (1 = largest), other, other_name,
    mass. The class itself is skipped unless ``include_self``. Ties keep the
    lower class id first.
    """
    s = _check_soft(soft)
    C = s.shape[0]
    names = _names(class_names, range(C))
    rows = []
    for c in range(C):
        order = np.argsort(-s[c], kind="stable")
        if not include_self:
            order = order[order != c]
        for r, o in enumerate(order[:k], start=1):
            rows.append((c, names[c], r, int(o), names[o], float(s[c, o])))
    return pd.DataFrame(rows, columns=["class", "class_name", "rank", "other", "other_name", "mass"])


def superclass_share(soft: Any, coarse_labels: Sequence[int], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """How much of each class's off-diagonal soft-label mass stays inside its superclass.

    ``coarse_labels[c]`` is the superclass of class ``c`` (CIFAR-100: 20
    superclasses of 5). Per class: ``share`` = off-diagonal mass on classes of
    the same superclass / total off-diagonal mass (NaN when the latter is 0);
    ``chance_share`` = (size of own superclass - 1) / (C - 1), the share of a
    soft label spreading its off-diagonal mass uniformly; ``lift`` = share /
    chance_share. Columns: class, class_name, superclass, off_diagonal_mass,
    in_superclass_mass, share, chance_share, lift.
    """
    s = _check_soft(soft)
    C = s.shape[0]
    coarse = np.asarray(coarse_labels, dtype=np.int64).ravel()
    if coarse.shape != (C,):
        raise ValueError(f"coarse_labels must have {C} entries; got {coarse.shape[0]}")
    if C < 2:
        raise ValueError("superclass share needs at least two classes")
    off = s.copy()
    np.fill_diagonal(off, 0.0)
    same = coarse[:, None] == coarse[None, :]
    off_mass = off.sum(axis=1)
    in_mass = (off * same).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(off_mass > 0, in_mass / np.where(off_mass > 0, off_mass, 1.0), np.nan)
        chance = (same.sum(axis=1) - 1) / (C - 1)
        lift = np.where(chance > 0, share / np.where(chance > 0, chance, 1.0), np.nan)
    return pd.DataFrame({
        "class": np.arange(C), "class_name": _names(class_names, range(C)), "superclass": coarse,
        "off_diagonal_mass": off_mass, "in_superclass_mass": in_mass,
        "share": share, "chance_share": chance, "lift": lift,
    })


def superclass_share_summary(table: pd.DataFrame) -> dict[str, float]:
    """Means over classes of a ``superclass_share`` table: share, chance_share and their ratio."""
    mean_share = float(table["share"].mean())
    mean_chance = float(table["chance_share"].mean())
    return {
        "mean_share": mean_share,
        "mean_chance_share": mean_chance,
        "ratio": mean_share / mean_chance if mean_chance > 0 else float("nan"),
    }


def sharpness(soft_by_stage: Mapping[str, Any], threshold: float = 0.5,
              class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-stage, per-class sharpness of soft labels: the softening-ratchet diagnostic.

    Columns: stage, class, class_name, own_mass (diagonal), entropy (nats),
    max_other_mass, max_other_class, max_other_name, flag, flag_reason. A class
    is flagged when its own mass is below ``threshold`` or below the mass of
    another class; ``flag_reason`` says which ("" when not flagged).
    """
    rows = []
    for stage, soft in soft_by_stage.items():
        s = _check_soft(soft)
        C = s.shape[0]
        names = _names(class_names, range(C))
        ent = _entropy(s)
        for c in range(C):
            own = float(s[c, c])
            others = s[c].copy()
            others[c] = -np.inf
            o = int(np.argmax(others)) if C > 1 else -1
            max_other = float(s[c, o]) if C > 1 else float("nan")
            reasons = []
            if own < threshold:
                reasons.append(f"own mass {own:.2f} < {threshold:.2f}")
            if C > 1 and own < max_other:
                reasons.append(f"own mass {own:.2f} below {names[o]} ({max_other:.2f})")
            rows.append((str(stage), c, names[c], own, float(ent[c]), max_other, o,
                         names[o] if o >= 0 else "", bool(reasons), "; ".join(reasons)))
    return pd.DataFrame(rows, columns=["stage", "class", "class_name", "own_mass", "entropy", "max_other_mass",
                                       "max_other_class", "max_other_name", "flag", "flag_reason"])


def drift(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None,
          include_hard: bool = False) -> pd.DataFrame:
    """Total-variation distance ``0.5 * sum |p - q|`` of each class's soft label between consecutive stages.

    Columns: from_stage, to_stage, class, class_name, tv. With
    ``include_hard=True`` the hard labels (identity, named "hard") come first,
    so the first row block measures how far stage 1 moved from one-hot.
    """
    items = [(str(k), _check_soft(v)) for k, v in soft_by_stage.items()]
    if include_hard and items:
        items.insert(0, ("hard", np.eye(items[0][1].shape[0])))
    rows = []
    for (a, p), (b, q) in zip(items[:-1], items[1:]):
        if p.shape != q.shape:
            raise ValueError(f"stages {a} and {b} have different shapes {p.shape} and {q.shape}")
        tv = 0.5 * np.abs(p - q).sum(axis=1)
        names = _names(class_names, range(p.shape[0]))
        rows.extend((a, b, c, names[c], float(tv[c])) for c in range(p.shape[0]))
    return pd.DataFrame(rows, columns=["from_stage", "to_stage", "class", "class_name", "tv"])


def own_mass_table(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Own-class mass (diagonal) per class and stage: rows classes (names when given), columns stages."""
    cols = {str(k): np.diag(_check_soft(v)) for k, v in soft_by_stage.items()}
    if not cols:
        return pd.DataFrame()
    C = len(next(iter(cols.values())))
    index = _names(class_names, range(C)) if class_names is not None else list(range(C))
    df = pd.DataFrame(cols, index=index)
    df.index.name = "class"
    df.columns.name = "stage"
    return df


def target_entropy(soft: Any, class_counts: Sequence[float] | None = None) -> float:
    """Mean entropy (nats) of the targets the samples train on, ``sum_c w_c H(q_c)`` with ``w`` the class
    frequencies (uniform when ``class_counts`` is None): the lowest cross-entropy a model can reach against
    these soft labels, so the floor of the training loss in the stage that trains on them."""
    h = _entropy(_check_soft(soft))
    w = np.ones(len(h)) if class_counts is None else np.asarray(class_counts, dtype=np.float64)
    return float((w * h).sum() / w.sum())


def erasures_by_stage(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Every erased class of every update (``metrics.erasures``: the label's largest entry is another class).

    Columns stage, class, class_name, taken_by, taken_by_name, own_mass, taken_mass; no rows when none."""
    rows = []
    for key, soft in soft_by_stage.items():
        s = _check_soft(soft)
        names = _names(class_names, range(s.shape[0]))
        rows.extend((str(key), e["class"], names[e["class"]], e["taken_by"], names[e["taken_by"]], e["own_mass"],
                     e["taken_mass"]) for e in erasures(s))
    return pd.DataFrame(rows, columns=["stage", "class", "class_name", "taken_by", "taken_by_name", "own_mass",
                                       "taken_mass"])
