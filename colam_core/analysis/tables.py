"""Learning curves from a run's history and mean ± std results tables."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


# ---------------------------------------------------------------------------
# learning curves and results tables
# ---------------------------------------------------------------------------

_HISTORY_METRICS = ("lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_s")


def learning_curves(history: pd.DataFrame, metrics: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Long-format learning curves and stage boundaries from a run's ``history.csv``.

    Returns ``(curves, boundaries)``. ``curves`` has columns epoch, stage,
    metric, value (one row per epoch and metric present in ``history``; NaN
    values dropped). ``metrics`` defaults to every numeric column other than
    epoch and stage, standard columns first. ``boundaries`` lists the epochs
    at whose end the stage changed, i.e. the last epoch of every stage but the
    last (where the soft labels were updated); draw a line at ``e`` (or
    ``e + 0.5`` to sit between points).
    """
    if "epoch" not in history.columns or "stage" not in history.columns:
        raise ValueError("history needs 'epoch' and 'stage' columns")
    h = history.sort_values("epoch", kind="stable").reset_index(drop=True)
    if metrics is None:
        numeric = [c for c in h.columns if c not in ("epoch", "stage") and pd.api.types.is_numeric_dtype(h[c])]
        metrics = [m for m in _HISTORY_METRICS if m in numeric] + [m for m in numeric if m not in _HISTORY_METRICS]
    else:
        missing = [m for m in metrics if m not in h.columns]
        if missing:
            raise KeyError(f"history has no column(s) {missing}")
    curves = h.melt(id_vars=["epoch", "stage"], value_vars=list(metrics), var_name="metric", value_name="value")
    curves = curves.dropna(subset=["value"]).reset_index(drop=True)
    stage = h["stage"].to_numpy()
    changed = np.flatnonzero(stage[1:] != stage[:-1])
    boundaries = [int(h["epoch"].iloc[i]) for i in changed]
    return curves, boundaries


def results_table(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, metric: str = "test_acc",
                  by: str | Sequence[str] = "method", scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds per method, like the paper's Tables 1-4.

    ``rows``: one dict per finished run, e.g. ``dict(method="colam",
    seed=0, dataset="cifar100", test_acc=0.77)``. Groups by ``by`` (a column
    or list of columns; e.g. ``["dataset", "method"]``), in order of first
    appearance. Values are multiplied by ``scale`` (``scale=100, decimals=2``
    gives paper-style percentages). Returns the group columns plus mean, std
    (sample std, ddof=1; NaN for one run), n, and ``mean ± std`` (formatted;
    just the mean when n == 1). Missing metric values are ignored. For a
    method x dataset grid: ``table.pivot(index="method", columns="dataset",
    values="mean ± std")``.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in keys + [metric] if c not in df.columns]
    if missing:
        raise KeyError(f"results rows have no column(s) {missing}")
    df["_v"] = pd.to_numeric(df[metric], errors="coerce") * float(scale)
    g = df.groupby(keys, sort=False, dropna=False)["_v"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count().astype(np.int64)}).reset_index()

    def fmt(m: float, s: float, n: int) -> str:
        if n == 0 or math.isnan(m):
            return "-"
        if n == 1 or math.isnan(s):
            return f"{m:.{decimals}f}"
        return f"{m:.{decimals}f} ± {s:.{decimals}f}"

    out["mean ± std"] = [fmt(m, s, n) for m, s, n in zip(out["mean"], out["std"], out["n"])]
    return out
