"""Result tables: pure functions of ``Sweep.results()`` (a pivot, and mean ± std over seeds like the paper's).

Calibration is reported both ways next to accuracy (``ECE_METRICS``): ``test_ece`` of softmax(z / T) and
``test_ece_T1`` of softmax(z); ``labelled`` names their columns as a reader sees them (``metrics.ECE_LABELS``).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import pandas as pd

from ..analysis import results_table
from ..metrics import ECE_LABELS

#: The calibration metrics every results table shows, both ways: ECE of softmax(z / T), ECE of softmax(z).
ECE_METRICS = tuple(ECE_LABELS)


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


def _with_ece_columns(df: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``df`` with a NaN column for each ECE metric it lacks (results of runs written before ``test_ece_T1``
    existed): the table then shows ``"-"`` there instead of failing."""
    lacking = [m for m in metrics if m in ECE_LABELS and m not in df.columns]
    return df.assign(**{m: float("nan") for m in lacking}) if lacking else df


def with_metrics(table: pd.DataFrame, results: pd.DataFrame, metrics: Sequence[str], by: str | Sequence[str],
                 scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """``table`` (one row per group of ``by``, as ``analysis.results_table(results, by=by)`` orders them) with
    ``{m}_mean``, ``{m}_std`` and ``{m}`` (formatted ``"mean ± std"``) appended for each metric ``m``.

    A missing ECE column (``ECE_METRICS``) counts as all NaN (``"-"``); any other missing column is a KeyError.
    """
    df = _with_ece_columns(pd.DataFrame(results), metrics)
    keys = [by] if isinstance(by, str) else list(by)
    out = table.copy()
    for m in metrics:
        t = results_table(df, metric=m, by=keys, scale=scale, decimals=decimals)
        if len(t) != len(out) or any(not t[k].reset_index(drop=True).equals(out[k].reset_index(drop=True))
                                     for k in keys):  # another grouping than the table's: match on the keys
            t = out[keys].merge(t, on=keys, how="left")
        out[f"{m}_mean"], out[f"{m}_std"] = t["mean"].to_numpy(), t["std"].to_numpy()
        out[m] = t["mean ± std"].fillna("-").to_numpy()
    return out


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its calibration columns named as a reader sees them (``metrics.ECE_LABELS``):
    ``test_ece`` -> ``ECE softmax(z/T)``, ``test_ece_mean`` -> ``ECE softmax(z/T) mean``, ``test_ece_T1_std``
    -> ``ECE softmax(z) std``, ...; every other column keeps its name."""
    names = {}
    for key, label in ECE_LABELS.items():
        names.update({key: label, f"{key}_mean": f"{label} mean", f"{key}_std": f"{label} std"})
    return table.rename(columns=names)


def temperature_table(results: pd.DataFrame, metrics: Sequence[str] = ("test_acc", *ECE_METRICS), by: str = "T",
                      scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds of ``metrics`` per temperature, sorted by T.

    Columns: ``T``, ``n`` (finished runs), and per metric ``{m}_mean``,
    ``{m}_std`` (sample std, ddof=1; NaN for one run) and ``{m}`` (formatted
    ``"mean ± std"``, see ``analysis.results_table``). The default metrics are
    accuracy and calibration both ways: ``test_ece`` (softmax(z / T)) and
    ``test_ece_T1`` (softmax(z); ``"-"`` for runs written before it existed).
    ``labelled(table)`` names the ECE columns for a reader.
    """
    df = pd.DataFrame(results)
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    df = _with_ece_columns(df, metrics)
    first = results_table(df, metric=metrics[0], by=by, scale=scale, decimals=decimals)
    out = with_metrics(first[[by, "n"]], df, metrics, by, scale=scale, decimals=decimals)
    cols = [by, "n"] + [c for m in metrics for c in (f"{m}_mean", f"{m}_std", m)]
    return out[cols].sort_values(by, kind="stable").reset_index(drop=True)


def methods_table(results: pd.DataFrame, metric: str = "test_acc", by: str | Sequence[str] | None = None,
                  scale: float = 1.0, decimals: int = 4, also: Sequence[str] = ECE_METRICS) -> pd.DataFrame:
    """Mean ± std over seeds per method, like the paper's Tables 1-4 (``analysis.results_table``).

    ``by`` defaults to ``label`` (the method, or the variant label of
    ``methods_seeds``), with ``dataset`` first when the results hold several
    data sets. Unfinished runs do not count (``n`` is the number of finished
    runs; a method with none shows ``"-"``). ``scale=100, decimals=2`` gives
    paper-style percentages. For a method x dataset grid:
    ``table.pivot(index="label", columns="dataset", values="mean ± std")``.

    Columns: the ``by`` columns, ``mean``, ``std``, ``n`` and ``mean ± std`` of
    ``metric``, then ``{m}_mean``, ``{m}_std`` and ``{m}`` (formatted) of each
    metric in ``also``: by default calibration both ways, ``test_ece``
    (softmax(z / T)) and ``test_ece_T1`` (softmax(z); ``"-"`` for runs written
    before it existed). ``labelled(table)`` names those columns for a reader.
    """
    df = pd.DataFrame(results)
    if by is None:
        key = "label" if "label" in df.columns else "method"
        by = ["dataset", key] if "dataset" in df.columns and df["dataset"].nunique() > 1 else key
    table = results_table(df, metric=metric, by=by, scale=scale, decimals=decimals)
    also = [m for m in ([also] if isinstance(also, str) else also) if m != metric]
    return with_metrics(table, df, also, by, scale=scale, decimals=decimals) if also else table
