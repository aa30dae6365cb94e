"""Result tables: pure functions of ``Sweep.results()`` (a pivot, and mean ± std over seeds like the paper's)."""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import pandas as pd

from ..analysis import results_table


def _order(values: Iterable) -> list:
    """Distinct values: numbers ascending first, then the others in order of first appearance."""
    seen = []
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            continue
        if not any(v == s and type(v) is type(s) for s in seen):
            seen.append(v)
    nums = sorted(v for v in seen if isinstance(v, numbers.Real) and not isinstance(v, bool))
    return nums + [v for v in seen if not (isinstance(v, numbers.Real) and not isinstance(v, bool))]


def grid_table(results: pd.DataFrame, index: str = "interval", columns: str = "peer_samples",
               value: str = "test_acc", agg: str = "mean", scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Pivot of sweep results: rows ``index``, columns ``columns``, cells ``value`` (paper Fig. 4a as a table).

    Rows and columns are ordered numbers ascending, then other values
    (``"all"``) in order of appearance. Several runs in one cell (seeds) are
    aggregated with ``agg`` (any pandas aggregation, e.g. ``"mean"``, ``"std"``,
    ``"count"``), or ``agg="mean ± std"`` for formatted strings like the
    paper's tables (``analysis.results_table``; ``scale=100, decimals=2`` for
    percentages). Unfinished runs have NaN values: a cell with none finished is
    NaN (``"-"`` when formatted).
    """
    df = pd.DataFrame(results)
    missing = [c for c in (index, columns, value) if c not in df.columns]
    if missing:
        raise KeyError(f"results have no column(s) {missing}")
    rows, cols = _order(df[index]), _order(df[columns])
    if agg == "mean ± std":
        t = results_table(df, metric=value, by=[index, columns], scale=scale, decimals=decimals)
        cells = {(r, c): v for r, c, v in zip(t[index], t[columns], t["mean ± std"])}
        fill: Any = "-"
    else:
        d = df[[index, columns]].copy()
        d["_v"] = pd.to_numeric(df[value], errors="coerce") * float(scale)
        g = d.groupby([index, columns], sort=False, dropna=False)["_v"].agg(agg)
        cells = dict(g.items())
        fill = float("nan")
    out = pd.DataFrame([[cells.get((r, c), fill) for c in cols] for r in rows], index=pd.Index(rows, name=index),
                       columns=pd.Index(cols, name=columns))
    if agg != "mean ± std":
        out = out.astype(float)
    return out


def temperature_table(results: pd.DataFrame, metrics: Sequence[str] = ("test_acc", "test_ece"), by: str = "T",
                      scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds of ``metrics`` per temperature, sorted by T.

    Columns: ``T``, ``n`` (finished runs), and per metric ``{m}_mean``,
    ``{m}_std`` (sample std, ddof=1; NaN for one run) and ``{m}`` (formatted
    ``"mean ± std"``, see ``analysis.results_table``).
    """
    df = pd.DataFrame(results)
    if isinstance(metrics, str):
        metrics = [metrics]
    out = None
    for m in metrics:
        t = results_table(df, metric=m, by=by, scale=scale, decimals=decimals)
        t = t.rename(columns={"mean": f"{m}_mean", "std": f"{m}_std", "mean ± std": m})
        if out is None:
            out = t
        else:
            out = out.merge(t.drop(columns="n"), on=by, how="outer")
    cols = [by, "n"] + [c for m in metrics for c in (f"{m}_mean", f"{m}_std", m)]
    return out[cols].sort_values(by, kind="stable").reset_index(drop=True)


def methods_table(results: pd.DataFrame, metric: str = "test_acc", by: str | Sequence[str] | None = None,
                  scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds per method, like the paper's Tables 1-4 (``analysis.results_table``).

    ``by`` defaults to ``label`` (the method, or the variant label of
    ``methods_seeds``), with ``dataset`` first when the results hold several
    data sets. Unfinished runs do not count (``n`` is the number of finished
    runs; a method with none shows ``"-"``). ``scale=100, decimals=2`` gives
    paper-style percentages. For a method x dataset grid:
    ``table.pivot(index="label", columns="dataset", values="mean ± std")``.
    """
    df = pd.DataFrame(results)
    if by is None:
        key = "label" if "label" in df.columns else "method"
        by = ["dataset", key] if "dataset" in df.columns and df["dataset"].nunique() > 1 else key
    return results_table(df, metric=metric, by=by, scale=scale, decimals=decimals)
