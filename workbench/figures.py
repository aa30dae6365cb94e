"""Plotly figures of COLAM runs: pure functions from analysis outputs to ``go.Figure``.

Every function takes arrays or DataFrames (a history, a soft-label matrix, the
output of a ``colam_core.analysis`` helper) and returns a new
``plotly.graph_objects.Figure``. Numbers come from ``colam_core.analysis``;
nothing here runs a model. The widgets (``workbench.widgets``) compose these
figures and keep them up to date; notebooks can call them directly::

    from colam_core import load_run, analysis
    from workbench import figures
    run = load_run("runs/demo")
    figures.learning_curves(run.history)
    figures.soft_label_heatmap(run.soft_labels(1), run.class_names)
    points, templates = analysis.template_plane_for_run(run, classes=(3, 5, 8))
    figures.template_plane(points, templates)

Conventions: class names label the axes (``str(id)`` when none are given);
soft-label matrices are C x C with row ``c`` the soft label of class ``c``;
a figure's trace structure depends only on its arguments' shapes (not on their
values), so a widget can update a live figure trace by trace.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from colam_core import analysis
from colam_core.metrics import ECE_LABELS, erasures, metric_label

__all__ = [
    "learning_curves",
    "soft_label_heatmap",
    "top_k_bars",
    "own_mass_lines",
    "drift_bars",
    "template_plane",
    "template_planes",
    "plane_range",
    "embedding_scatter",
    "template_distance_table",
    "adt_adc_heatmaps",
    "reliability_diagram",
    "sweep_heatmap",
    "temperature_curve",
    "results_table",
    "message",
]

PALETTE = pcolors.qualitative.Plotly
_GRID = "#EBF0F8"
_AXIS = dict(gridcolor=_GRID, linecolor=_GRID, zerolinecolor=_GRID, zerolinewidth=2, ticks="", automargin=True)
#: a compact white template (plotly_white's look); plotly's own templates weigh ~6 kB per figure and take
#: ~20 ms to apply, which would dominate a widget update
TEMPLATE = go.layout.Template(layout=dict(
    colorway=PALETTE, font=dict(color="#2a3f5f"), paper_bgcolor="white", plot_bgcolor="white",
    hovermode="closest", hoverlabel=dict(align="left"), title=dict(x=0.05), xaxis=_AXIS, yaxis=_AXIS,
))
HIGHLIGHT = "#1f4e9c"      # the picked class
FLAGGED = "#d62728"        # classes the sharpness diagnostic flags
MUTED = "rgba(120, 120, 120, 0.45)"
CURVE_METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")
_PANEL_TITLES = {"loss": "loss", "acc": "accuracy", "lr": "learning rate", "seconds": "seconds",
                 "images_per_s": "images / s"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(n)]
    if len(class_names) != n:
        raise ValueError(f"class_names has {len(class_names)} entries for {n} classes")
    return [str(c) for c in class_names]


def _square(soft: Any) -> np.ndarray:
    s = np.asarray(soft, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"soft labels must be a square C x C matrix; got shape {s.shape}")
    return s


def _emphasize_small(scale: Sequence[str], gamma: float = 2.0) -> list[list]:
    """A colorscale whose colors change fastest near 0: color k of n sits at ``(k / (n-1)) ** gamma``.

    Soft labels put most mass on the diagonal; with a linear scale the
    off-diagonal structure (masses of 0.01 to 0.1) would all look alike.
    The data stay untouched (``z`` is the true mass); only the colors bend.
    """
    n = len(scale)
    return [[(k / (n - 1)) ** gamma, c] for k, c in enumerate(scale)]


SOFT_SCALE = _emphasize_small(pcolors.sequential.Viridis)


def _new(*traces) -> go.Figure:
    """A figure on ``TEMPLATE`` (given at construction, so plotly's default template is never applied)."""
    return go.Figure(list(traces), layout=dict(template=TEMPLATE))


def _base_layout(fig: go.Figure, title: str | None, height: int, **kw) -> go.Figure:
    top = 30 if not title else 80 if "<br>" in title else 60
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=top, b=50), **kw)
    return fig


def message(text: str, height: int = 200) -> go.Figure:
    """An empty figure that says ``text`` (e.g. "no soft labels yet"), used where data are missing."""
    fig = _new()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=14, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base_layout(fig, None, height)


def _histories(history: Any) -> dict[str, pd.DataFrame]:
    """label -> history DataFrame from a DataFrame, a run, or a mapping / sequence of either."""
    if isinstance(history, pd.DataFrame):
        return {"": history}
    if hasattr(history, "history") and not isinstance(history, (Mapping, list, tuple)):
        return {"": history.history}
    if isinstance(history, Mapping):
        items = list(history.items())
    else:
        items = [(getattr(h, "name", str(i)), h) for i, h in enumerate(history)]
    return {str(k): (v if isinstance(v, pd.DataFrame) else v.history) for k, v in items}


# ---------------------------------------------------------------------------
# learning curves
# ---------------------------------------------------------------------------

def learning_curves(history: Any, metrics: Sequence[str] = CURVE_METRICS, title: str | None = None,
                    height: int = 360, epochs: int | None = None, colors: Mapping[str, str] | None = None,
                    loss_floors: Mapping[int, float] | None = None) -> go.Figure:
    """Loss and accuracy per epoch with dotted lines at the stage boundaries (the soft-label updates).

    ``history``: a history DataFrame (``run.history``), a run, or several runs
    to overlay as a mapping ``{label: DataFrame or run}`` or a sequence of runs
    (labelled by ``run.name``). Metrics are grouped into side-by-side panels
    by their suffix (``*_loss``, ``*_acc``, ...). One run: one color per
    split; several (or any, when ``colors={label: color}`` is given: a run
    then keeps its color whatever else is shown): one color per run, train
    dotted, test solid. There is one trace per run and metric present in its history, even
    while the history is empty, so a live figure keeps its traces as epochs
    arrive. Data and boundaries come from ``analysis.learning_curves``.

    ``epochs`` fixes the x axis to the whole run (a live figure then never
    rescales); accuracy panels always span 0 to 1. ``loss_floors`` (``{stage:
    value}``, e.g. ``analysis.target_entropy`` of the labels a stage trains
    on) draws each stage's lowest reachable training loss: after a soft-label
    update the training loss is a cross-entropy against soft targets, whose
    minimum is their entropy, not 0, which is why it jumps at the update.
    """
    runs = _histories(history)
    if not runs:
        return message("no runs")
    wanted = [m for m in metrics if any(m in h.columns for h in runs.values())]
    if not wanted:
        raise ValueError(f"no history has any of the metrics {list(metrics)}")
    panels: dict[str, list[str]] = {}
    for m in wanted:
        panels.setdefault(m.split("_", 1)[-1] if m.startswith(("train_", "test_")) else m, []).append(m)
    keys = list(panels)
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=[_PANEL_TITLES.get(k, k) for k in keys],
                        horizontal_spacing=0.09, figure=_new())
    overlay = len(runs) > 1 or colors is not None  # run colours, also when one run of a comparison is shown
    last_epoch = max((int(h["epoch"].max()) for h in runs.values() if len(h)), default=0)
    span = max(int(epochs or 0), last_epoch)
    panel_of = {m: keys.index(k) + 1 for k, ms in panels.items() for m in ms}
    boundaries: set[int] = set()
    for r, (label, h) in enumerate(runs.items()):
        present = [m for m in wanted if m in h.columns]
        if len(h):
            curves, b = analysis.learning_curves(h, present)
            boundaries.update(b)
        else:
            curves = pd.DataFrame(columns=["epoch", "stage", "metric", "value"])
        run_color = (colors or {}).get(label, PALETTE[r % len(PALETTE)])
        for m in present:
            c = curves[curves["metric"] == m]
            split = m.split("_", 1)[0]
            if overlay:
                color, dash, name = run_color, ("dot" if split == "train" else "solid"), f"{label} {m}"
            else:
                color, dash, name = PALETTE[0 if split == "train" else 1], "solid", m
            fig.add_trace(go.Scatter(
                x=c["epoch"].to_numpy(dtype=float), y=c["value"].to_numpy(dtype=float), mode="lines+markers",
                name=name, legendgroup=label if overlay else split, line=dict(color=color, dash=dash),
                marker=dict(size=5), customdata=c["stage"].to_numpy(dtype=float),
                hovertemplate=f"{name}<br>epoch %{{x}} (stage %{{customdata}})<br>%{{y:.4f}}<extra></extra>",
            ), row=1, col=panel_of[m])
    loss_col = keys.index("loss") + 1 if "loss" in keys else None
    if loss_floors is not None and loss_col is not None and not overlay:  # one trace, even while empty
        stage_epochs = _stage_spans(runs)
        xs, ys = [], []
        for st, floor in sorted(loss_floors.items()):
            if int(st) in stage_epochs:
                a, b = stage_epochs[int(st)]
                xs += [a - 0.5, b + 0.5, None]
                ys += [float(floor), float(floor), None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="lowest reachable train loss (target entropy)",
                                 showlegend=bool(xs), line=dict(color="#999", dash="dash", width=1),
                                 hoverinfo="skip"), row=1, col=loss_col)
    for col, key in enumerate(keys, start=1):
        suffix = "" if col == 1 else str(col)
        for b in sorted(boundaries):
            fig.add_shape(type="line", x0=b + 0.5, x1=b + 0.5, y0=0, y1=1, xref=f"x{suffix}",
                          yref=f"y{suffix} domain", line=dict(color="#888", dash="dot", width=1))
            if col == loss_col:
                fig.add_annotation(x=b + 0.5, y=1, xref=f"x{suffix}", yref=f"y{suffix} domain", text="new labels",
                                   showarrow=False, xanchor="left", yanchor="top", font=dict(size=10, color="#777"))
        fig.update_xaxes(title_text="epoch", row=1, col=col, dtick=max(1, math.ceil(max(span, 1) / 10)),
                         range=[0.5, span + 0.5] if span else [0.5, 1.5])
        if key == "acc":
            fig.update_yaxes(range=[0, 1.02], row=1, col=col)
        elif last_epoch == 0:
            fig.update_yaxes(range=[0, 1], row=1, col=col)  # no data yet: a plain axis, not plotly's -1..4
    if last_epoch == 0:
        fig.add_annotation(text="no epoch finished yet", x=0.5, y=0.5, xref="paper", yref="paper",
                           showarrow=False, font=dict(size=13, color="#777"))
    return _base_layout(fig, title, height, legend=dict(orientation="h", y=-0.3))


def _stage_spans(runs: Mapping[str, pd.DataFrame]) -> dict[int, tuple[int, int]]:
    """stage -> (first epoch, last epoch) of the (single) history."""
    (h,) = runs.values()
    if not len(h):
        return {}
    g = h.groupby("stage")["epoch"]
    return {int(s): (int(a), int(b)) for s, a, b in zip(g.min().index, g.min(), g.max())}


# ---------------------------------------------------------------------------
# soft labels
# ---------------------------------------------------------------------------

def soft_label_heatmap(soft: Any, class_names: Sequence[str] | None = None, page: int | tuple[int, int] | None = None,
                       page_size: int = 100, highlight: int | None = None, title: str | None = None,
                       height: int = 520) -> go.Figure:
    """Heatmap of a C x C soft-label matrix: row ``c`` is the soft label of class ``c``.

    Up to ``page_size`` classes the whole matrix is drawn and ``z`` is the
    matrix itself. Above that (ImageNet's 1000 classes) the figure never
    draws more than ``page_size`` x ``page_size`` cells:

    * ``page=None``: an overview of block means (blocks of ``ceil(C /
      page_size)`` consecutive classes), labelled by their first and last class;
    * ``page=p``: rows and columns of classes ``p * page_size`` to
      ``(p + 1) * page_size - 1``; ``page=(r, c)``: row page ``r``, column page ``c``.

    ``highlight`` outlines the row of that class (when it is on the page).
    Colors bend towards small masses (see ``_emphasize_small``); hover shows
    the exact mass. Erased classes (``colam_core.metrics.erasures``: the
    label's largest entry is another class) are always marked: a red dotted
    outline of the row, a red ✖ on the cell that took the mass (trace 1,
    empty when none) and the row label ``✖ class → taker``.
    """
    s = _square(soft)
    C = s.shape[0]
    names = _names(class_names, C)
    row_of = {c: c for c in range(C)}  # class id -> row of the drawn matrix
    if C <= page_size:
        z, ylab, xlab, what = s, names, names, "mass"
    elif page is None:
        size = math.ceil(C / page_size)
        starts = np.arange(0, C, size)
        counts = np.diff(np.append(starts, C))
        z = np.add.reduceat(np.add.reduceat(s, starts, axis=0), starts, axis=1) / np.outer(counts, counts)
        ylab = xlab = [f"{names[a]} … {names[a + n - 1]}" if n > 1 else names[a] for a, n in zip(starts, counts)]
        row_of = {c: c // size for c in range(C)}
        what = f"mean mass over blocks of {size} classes"
    else:
        r, c = (page, page) if isinstance(page, (int, np.integer)) else page
        pages = math.ceil(C / page_size)
        if not (0 <= r < pages and 0 <= c < pages):
            raise ValueError(f"page must be in [0, {pages}) for {C} classes in pages of {page_size}; got {page!r}")
        rows = range(r * page_size, min(C, (r + 1) * page_size))
        cols = range(c * page_size, min(C, (c + 1) * page_size))
        z = s[np.ix_(rows, cols)]
        ylab, xlab, what = [names[i] for i in rows], [names[j] for j in cols], "mass"
        row_of = {k: i for i, k in enumerate(rows)}
    fig = _new(go.Heatmap(
        z=z, x=xlab, y=ylab, zmin=0.0, zmax=1.0, colorscale=SOFT_SCALE, colorbar=dict(title="mass", thickness=12),
        hovertemplate="soft label of %{y}<br>" + what + " on %{x}: %{z:.4f}<extra></extra>",
    ))
    # erased classes (their label's largest entry is another class): never hidden, whatever is picked
    gone = [e for e in erasures(s) if what == "mass" and e["class"] in row_of and names[e["taken_by"]] in xlab]
    fig.add_trace(go.Scatter(
        x=[names[e["taken_by"]] for e in gone], y=[names[e["class"]] for e in gone], mode="markers",
        name="erased: the label's largest mass", showlegend=bool(gone),
        marker=dict(symbol="x-thin-open", size=12, color=FLAGGED, line=dict(width=3, color=FLAGGED)),
        text=[f"{names[e['class']]} is erased: {e['taken_mass']:.3f} on {names[e['taken_by']]}, "
              f"{e['own_mass']:.3f} on itself" for e in gone],
        hovertemplate="%{text}<extra></extra>",
    ))
    if highlight is not None and int(highlight) in row_of:
        i = row_of[int(highlight)]
        fig.add_shape(type="rect", x0=-0.5, x1=len(xlab) - 0.5, y0=i - 0.5, y1=i + 0.5, xref="x", yref="y",
                      line=dict(color="white", width=2))
    for e in gone:
        i = row_of[e["class"]]
        fig.add_shape(type="rect", x0=-0.5, x1=len(xlab) - 0.5, y0=i - 0.5, y1=i + 0.5, xref="x", yref="y",
                      line=dict(color=FLAGGED, width=2, dash="dot"))
    erased_names = {names[e["class"]]: names[e["taken_by"]] for e in gone}
    ticks = [f"<span style='color:{FLAGGED}'><b>✖ {n}</b> → {erased_names[n]}</span>" if n in erased_names else n
             for n in ylab]
    fig.update_xaxes(type="category", title_text="mass on class", showgrid=False)
    fig.update_yaxes(type="category", title_text="soft label of class" + (" (✖: erased)" if gone else ""),
                     autorange="reversed", showgrid=False, scaleanchor="x", constrain="domain",
                     tickmode="array", tickvals=list(ylab), ticktext=ticks)
    fig.update_layout(legend=dict(orientation="h", y=-0.15, x=0))
    return _base_layout(fig, title, height)


def top_k_bars(soft: Any, cls: int, k: int = 5, class_names: Sequence[str] | None = None,
               title: str | None = None, height: int = 300) -> go.Figure:
    """The ``k`` largest entries of class ``cls``'s soft label (the class itself included, in its own color).

    When ``cls`` is erased (its largest entry is another class) the bar of that class is red and a line on the
    figure says so.

    Numbers from ``analysis.top_k_soft(soft, k, class_names, include_self=True)``.
    """
    s = _square(soft)
    if not 0 <= int(cls) < s.shape[0]:
        raise ValueError(f"cls must be a class id in [0, {s.shape[0]}); got {cls}")
    t = analysis.top_k_soft(s, k=k, class_names=class_names, include_self=True)
    t = t[t["class"] == int(cls)]
    taken = {e["class"]: e for e in erasures(s)}.get(int(cls))
    colors = [HIGHLIGHT if o == int(cls) else FLAGGED if taken and o == taken["taken_by"] else "#9ab3d6"
              for o in t["other"]]
    fig = _new(go.Bar(
        x=t["other_name"].tolist(), y=t["mass"].to_numpy(), marker_color=colors, customdata=t["other"].to_numpy(),
        text=[f"{m:.3f}" for m in t["mass"]], textposition="outside", cliponaxis=False,
        hovertemplate="mass on %{x}: %{y:.4f}<extra></extra>",
    ))
    names = _names(class_names, s.shape[0])
    name = names[int(cls)]
    fig.update_xaxes(type="category", title_text="class")
    fig.update_yaxes(title_text="mass", range=[0, 1.08])
    if taken:  # said on the figure itself, whatever title the caller gives
        fig.add_annotation(text=f"✖ {name} is erased: its label puts {taken['taken_mass']:.2f} on "
                                f"{names[taken['taken_by']]}, {taken['own_mass']:.2f} on itself",
                           x=1, y=1.0, xref="paper", yref="paper", xanchor="right", yanchor="bottom",
                           showarrow=False, font=dict(color=FLAGGED, size=13))
    return _base_layout(fig, title if title is not None else f"Top {k} of the soft label of {name}", height)


def _name_list(names: Sequence[str], limit: int = 4) -> str:
    """``a, b, c`` or ``a, b, c, d +5 more``."""
    names = list(names)
    return ", ".join(names[:limit]) + (f" +{len(names) - limit} more" if len(names) > limit else "")


def own_mass_lines(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None,
                   threshold: float = 0.5, highlight: int | None = None, title: str | None = None,
                   height: int = 360) -> go.Figure:
    """Each class's own mass (the diagonal) at every soft-label update: the softening-ratchet diagnostic.

    Classes that ``analysis.sharpness`` flags at any stage (own mass below
    ``threshold``, or below another class's mass) are drawn in red and named
    in the legend, the other classes in grey, ``highlight`` in blue (its
    markers red where it is flagged: picking a class never hides its flag);
    every erased class at every update (``analysis.erasures_by_stage``) gets a
    red ✖; the dashed line is the threshold. Hover names the class and the
    flag reason. Numbers from ``analysis.own_mass_table``, ``sharpness`` and
    ``erasures_by_stage``. Five traces (grey, red, blue, erased, threshold;
    each of the first four may be empty), whatever C is.
    """
    if not soft_by_stage:
        return message("no soft labels: stage 1 trains on hard labels, the first update comes at its end")
    table = analysis.own_mass_table(soft_by_stage, class_names)
    sharp = analysis.sharpness(soft_by_stage, threshold=threshold, class_names=class_names)
    gone = analysis.erasures_by_stage(soft_by_stage, class_names)
    stages = list(table.columns)
    C = len(table)
    names = _names(class_names, C)
    flagged = set(sharp.loc[sharp["flag"], "class"].astype(int))
    reason = {(r.stage, int(r["class"])): r.flag_reason for _, r in sharp.iterrows()}
    values = table.to_numpy()

    def lines(classes):
        x, y, text = [], [], []
        for c in classes:
            for j, st in enumerate(stages):
                x.append(st)
                y.append(values[c, j])
                why = reason.get((st, c), "")
                text.append(f"{names[c]}<br>{st}: own mass {values[c, j]:.3f}" + (f"<br>{why}" if why else ""))
            x.append(None)
            y.append(None)
            text.append("")
        return x, y, text

    fig = _new()
    picked = [] if highlight is None else [int(highlight)]
    red = sorted(flagged - set(picked))
    pick_name = (names[picked[0]] + (" (flagged)" if set(picked) & flagged else "")) if picked else "picked class"
    groups = [
        ("other classes", [c for c in range(C) if c not in flagged and c not in picked], MUTED, 1),
        (f"flagged: {_name_list(names[c] for c in red)}" if red else "flagged: none", red, FLAGGED, 2),
        (pick_name, picked, HIGHLIGHT, 3.5),
    ]
    for name, classes, color, width in groups:
        x, y, text = lines(classes)
        marker_color = ([FLAGGED if (st, c) in reason and reason[(st, c)] else color for c in classes
                         for st in [*stages, None]] if classes == picked and picked else color)
        fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines+markers", name=name, connectgaps=False,
                                 line=dict(color=color, width=width), marker=dict(size=4 + width, color=marker_color),
                                 hovertemplate="%{text}<extra></extra>"))
    er_names = _name_list(dict.fromkeys(gone["class_name"]))
    fig.add_trace(go.Scatter(
        x=gone["stage"].tolist(), y=gone["own_mass"].to_numpy(), mode="markers",
        name=f"✖ erased: {er_names}" if len(gone) else "erased: none", showlegend=bool(len(gone)),
        marker=dict(symbol="x-thin-open", size=14, color=FLAGGED, line=dict(width=3, color=FLAGGED)),
        text=[f"{r.class_name} erased at {r.stage}: {r.taken_mass:.3f} on {r.taken_by_name}, {r.own_mass:.3f} on "
              "itself" for r in gone.itertuples()],
        hovertemplate="%{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[stages[0], stages[-1]], y=[threshold, threshold], mode="lines",
                             name=f"threshold {threshold:g}", line=dict(color="#444", dash="dash", width=1),
                             hoverinfo="skip"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=stages,
                     title_text="soft labels learned at the end of stage", tickmode="array", tickvals=stages,
                     ticktext=[str(st).removeprefix("stage_") for st in stages])
    fig.update_yaxes(title_text="own-class mass", range=[0, 1.02])
    fig.update_layout(legend=dict(orientation="h", y=-0.3, x=0))
    return _base_layout(fig, title if title is not None else "Own-class mass per update (red: flagged, ✖: erased)",
                        height)


def drift_bars(soft_by_stage: Mapping[str, Any], class_names: Sequence[str] | None = None,
               to_stage: str | int | None = None, threshold: float = 0.5, highlight: int | None = None,
               title: str | None = None, height: int = 300) -> go.Figure:
    """How far each class's soft label moved into ``to_stage`` (default the last), as total variation.

    The move into the first update is measured from the hard (one-hot)
    labels. Numbers from ``analysis.drift(include_hard=True)``; bars of classes
    flagged at ``to_stage`` by ``analysis.sharpness`` are red, ``highlight``
    blue; classes erased at ``to_stage`` are cross-hatched with a red outline
    (also when picked).
    """
    if not soft_by_stage:
        return message("no soft labels yet")
    mats = {str(k): v for k, v in soft_by_stage.items()}
    target = list(mats)[-1] if to_stage is None else (str(to_stage) if str(to_stage) in mats
                                                      else f"stage_{to_stage}")
    if target not in mats:
        raise ValueError(f"to_stage {to_stage!r} is not one of {list(mats)}")
    d = analysis.drift(mats, class_names, include_hard=True)
    d = d[d["to_stage"] == target]
    sharp = analysis.sharpness({target: mats[target]}, threshold=threshold, class_names=class_names)
    flagged = set(sharp.loc[sharp["flag"], "class"].astype(int))
    colors = [HIGHLIGHT if c == highlight else FLAGGED if c in flagged else "#9ab3d6" for c in d["class"]]
    gone = {e["class"]: e for e in erasures(_square(mats[target]))}
    names = _names(class_names, len(mats[target]))
    fig = _new(go.Bar(
        x=d["class_name"].tolist(), y=d["tv"].to_numpy(), marker_color=colors, customdata=d["class"].to_numpy(),
        marker_pattern_shape=["x" if c in gone else "" for c in d["class"]],
        marker_line=dict(color=[FLAGGED if c in gone else "rgba(0,0,0,0)" for c in d["class"]], width=2),
        text=[f"erased → {names[gone[c]['taken_by']]}" if c in gone else "" for c in d["class"]],
        hovertemplate="%{x}: total variation %{y:.4f} %{text}<extra></extra>",
    ))
    src = d["from_stage"].iloc[0] if len(d) else ""
    fig.update_xaxes(type="category", title_text="class")
    fig.update_yaxes(title_text="total variation", rangemode="tozero")
    return _base_layout(fig, title if title is not None else f"Drift of each soft label, {src} → {target}", height)


# ---------------------------------------------------------------------------
# representations
# ---------------------------------------------------------------------------

def _class_scatter(fig: go.Figure, points: pd.DataFrame, classes: Sequence[int], names: Sequence[str]) -> None:
    """One marker trace per class; ``customdata`` holds the dataset index of each point (for hover images)."""
    Trace = go.Scattergl if len(points) > 5000 else go.Scatter
    for i, (c, name) in enumerate(zip(classes, names)):
        p = points[points["label"] == c]
        fig.add_trace(Trace(
            x=p["x"].to_numpy(), y=p["y"].to_numpy(), mode="markers", name=str(name),
            customdata=p["index"].to_numpy(), marker=dict(color=PALETTE[i % len(PALETTE)], size=6, opacity=0.7),
            hovertemplate=f"{name} #%{{customdata}}<extra></extra>",
        ))


def _classes_of(points: pd.DataFrame) -> tuple[list[int], list[str]]:
    first = points.drop_duplicates("label")
    return first["label"].astype(int).tolist(), first["class_name"].astype(str).tolist()


def plane_range(*planes: tuple[pd.DataFrame, pd.DataFrame], pad: float = 0.08) -> tuple[float, float]:
    """One axis range that holds every point and template of the given ``(points, templates)`` planes on both
    axes (the plane is drawn with equal scales), with ``pad`` of the span either side: pass it to
    ``template_plane(..., axis_range=)`` to draw several methods on the same axes."""
    vals = np.concatenate([np.concatenate([p[["x", "y"]].to_numpy(dtype=float).ravel(),
                                           t[["x", "y"]].to_numpy(dtype=float).ravel()]) for p, t in planes])
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return (-1.0, 1.0)
    lo, hi = float(vals.min()), float(vals.max())
    span = max(hi - lo, 1e-9)
    return (lo - pad * span, hi + pad * span)


def _label_positions(templates: pd.DataFrame) -> list[str]:
    """Each template's label on the side away from the other templates (close templates' labels do not overlap)."""
    x, y = templates["x"].to_numpy(dtype=float), templates["y"].to_numpy(dtype=float)
    cx, cy = x.mean(), y.mean()
    return [("top" if yi >= cy else "bottom") + " " + ("right" if xi >= cx else "left") for xi, yi in zip(x, y)]


def _plane_traces(points: pd.DataFrame, templates: pd.DataFrame, legend: bool = True) -> list:
    classes = templates["label"].astype(int).tolist()
    names = templates["class_name"].astype(str).tolist()
    tmp = _new()
    _class_scatter(tmp, points, classes, names)
    traces = list(tmp.data)
    for t in traces:
        t.showlegend = legend
    traces.append(go.Scatter(
        x=templates["x"].to_numpy(), y=templates["y"].to_numpy(), mode="markers+text", name="templates",
        text=names, textposition=_label_positions(templates), showlegend=False, textfont=dict(size=13),
        marker=dict(symbol="star", size=20, color=PALETTE[:len(classes)], line=dict(color="black", width=1.5)),
        hovertemplate="template of %{text}<extra></extra>",
    ))
    # the legend's star: one neutral entry (a marker list would show the first class's color)
    traces.append(go.Scatter(x=[None], y=[None], mode="markers", name="★ class templates", showlegend=legend,
                             marker=dict(symbol="star", size=14, color="white", line=dict(color="black", width=1.5)),
                             hoverinfo="skip"))
    return traces


def template_plane(points: pd.DataFrame, templates: pd.DataFrame, title: str | None = None,
                   height: int = 480, axis_range: tuple[float, float] | None = None) -> go.Figure:
    """Müller et al.'s template plane: samples of three classes and their templates (stars).

    ``(points, templates)`` as returned by ``analysis.template_plane_for_run``.
    One marker trace per class (in the templates' order), one trace of the
    three templates (labels placed away from each other) and a legend-only
    star; each point's ``customdata`` is its dataset index. Both axes span
    ``axis_range`` (default ``plane_range`` of this plane) at equal scale;
    pass one shared range to compare methods on the same axes.
    """
    fig = _new(*_plane_traces(points, templates))
    rng = list(axis_range or plane_range((points, templates)))
    fig.update_xaxes(title_text="plane axis 1", zeroline=False, range=rng, constrain="domain")
    fig.update_yaxes(title_text="plane axis 2", zeroline=False, range=rng, scaleanchor="x", constrain="domain")
    return _base_layout(fig, title if title is not None else "Template plane (stars: class templates)", height)


def template_planes(planes: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]], title: str | None = None,
                    height: int = 430) -> go.Figure:
    """Several runs' template planes side by side on the same axes (one ``plane_range`` for all), so that how
    tight and how far apart the clusters are can be compared between methods. ``planes``: ``{label: (points,
    templates)}`` from ``analysis.template_plane_for_run`` over the same three classes."""
    if not planes:
        return message("no runs")
    rng = list(plane_range(*planes.values()))
    fig = make_subplots(rows=1, cols=len(planes), subplot_titles=list(planes), horizontal_spacing=0.04,
                        figure=_new())
    for col, (points, templates) in enumerate(planes.values(), start=1):
        for trace in _plane_traces(points, templates, legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
        suffix = "" if col == 1 else str(col)
        fig.update_xaxes(range=rng, zeroline=False, constrain="domain", row=1, col=col)
        fig.update_yaxes(range=rng, zeroline=False, scaleanchor=f"x{suffix}", constrain="domain", row=1, col=col,
                         showticklabels=col == 1)
    return _base_layout(fig, title, height, legend=dict(orientation="h", y=-0.12))


def embedding_scatter(points: pd.DataFrame, method: str = "UMAP", classes: Sequence[int] | None = None,
                      title: str | None = None, height: int = 480) -> go.Figure:
    """2-D embedding of penultimate features (``analysis.EmbeddingCache.get`` or ``analysis.embed``).

    ``points`` has columns x, y, label, class_name, index. One marker trace
    per class, in the order of ``classes`` (default: first appearance).
    """
    if classes is None:
        classes, names = _classes_of(points)
    else:
        lookup = dict(zip(points["label"].astype(int), points["class_name"].astype(str)))
        classes = [int(c) for c in classes]
        names = [lookup.get(c, str(c)) for c in classes]
    fig = _new()
    _class_scatter(fig, points, classes, names)
    fig.update_xaxes(title_text=f"{method} 1", zeroline=False)
    fig.update_yaxes(title_text=f"{method} 2", zeroline=False)
    return _base_layout(fig, title if title is not None else f"{method} of penultimate features", height)


# ---------------------------------------------------------------------------
# tables and distance heatmaps
# ---------------------------------------------------------------------------

NBSP = "\u00a0"


def _nowrap(text: Any) -> str:
    """A table cell plotly.js draws at once: spaces become non-breaking, line breaks are explicit ``<br>``.

    plotly.js wraps table text that holds a plain space by measuring it after the first render; in a view that is
    not laid out yet (a JupyterLab output being attached, a hidden tab) that measurement fails and the cell stays
    blank until the next interaction (plotly.py #2664). Text without a plain space is drawn directly.
    """
    return str(text).replace(" ", NBSP)


def _table(header: Sequence[str], columns: Sequence[Sequence[Any]], title: str | None, height: int | None = None,
           align: Sequence[str] | None = None) -> go.Figure:
    """A plotly table sized to its content: column widths from the longest text of each column, the height from
    the rows (no blank band below), a fixed width when the columns need more than a notebook's ~900 px (the
    output then scrolls instead of squeezing the text), every cell drawn on first display (see ``_nowrap``;
    headers stay on one line and plain, told apart by their fill and font: a ``<br>`` or ``<b>`` is placed by a
    measuring pass that fails the same way, leaving the text at the cell's top edge)."""
    n_rows = max((len(c) for c in columns), default=0)
    widths = [max([len(str(h))] + [len(str(v)) for v in col]) + 3 for h, col in zip(header, columns)]
    fig = _new(go.Table(
        columnwidth=widths,
        header=dict(values=[_nowrap(h) for h in header], fill_color="#dfe6f1", align="left", height=28,
                    font=dict(color="#14213d", size=13)),
        cells=dict(values=[[_nowrap(v) for v in c] for c in columns], align=list(align) if align else "left",
                   height=24),
    ))
    top = 40 if title else 10
    needed = 20 + 7 * sum(widths)
    fig.update_layout(title=title, height=height or min(top + 28 + 24 * n_rows + 24, 760),
                      width=needed if needed > 900 else None, margin=dict(l=10, r=10, t=top, b=10))
    return fig


def _fmt(v: Any, decimals: int) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "-" if math.isnan(f) else f"{f:.{decimals}f}"


def template_distance_table(distances: pd.DataFrame | Mapping[str, pd.DataFrame], decimals: int = 3,
                            title: str | None = None) -> go.Figure:
    """Distances between L2-normalized class templates (paper Table 5), as a table.

    ``distances``: one ``analysis.template_distances_for_run`` DataFrame
    (drawn as the square matrix), or ``{label: DataFrame}`` of several runs
    over the same classes, drawn side by side as one row per class pair and
    one column per run.
    """
    if isinstance(distances, pd.DataFrame):
        labels = [str(i) for i in distances.index]
        cols = [labels] + [[_fmt(v, decimals) for v in distances[c]] for c in distances.columns]
        return _table(["class"] + [str(c) for c in distances.columns], cols,
                      title if title is not None else "Normalized template distances")
    runs = list(distances.items())
    if not runs:
        return message("no runs selected")
    first = runs[0][1]
    idx = list(first.index)
    pairs = [(a, b) for i, a in enumerate(idx) for b in idx[i + 1:]]
    cols = [[f"{a} – {b}" for a, b in pairs]]
    for label, d in runs:
        if list(d.index) != idx:
            raise ValueError(f"run {label!r} has classes {list(d.index)}, the first run {idx}")
        cols.append([_fmt(d.loc[a, b], decimals) for a, b in pairs])
    return _table(["class pair"] + [str(k) for k, _ in runs], cols,
                  title if title is not None else "Normalized template distances (lower: closer templates)")


def adt_adc_heatmaps(adt: pd.DataFrame, adc: pd.DataFrame, title: str | None = None, height: int = 420,
                     zrange: tuple[float, float] | None = None) -> go.Figure:
    """ADT and ADC side by side (paper Fig. 3), from ``analysis.adt_adc_for_run``, on one colour scale.

    Rows are the class of the samples, columns the template (ADT) or
    centroid (ADC) class; small values on the diagonal and large ones off it
    mean compact, well separated classes. Both panels share ``zrange``
    (default: the range of both); pass one range to several runs' figures to
    compare them colour for colour.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=["ADT: distance to templates", "ADC: distance to centroids"],
                        horizontal_spacing=0.16, figure=_new())
    show_text = len(adt) <= 20
    both = np.concatenate([adt.to_numpy(dtype=float).ravel(), adc.to_numpy(dtype=float).ravel()])
    lo, hi = zrange if zrange is not None else (float(np.nanmin(both)), float(np.nanmax(both)))
    for col, d in enumerate((adt, adc), start=1):
        labels_x = [str(c) for c in d.columns]
        labels_y = [str(i) for i in d.index]
        fig.add_trace(go.Heatmap(
            z=d.to_numpy(dtype=float), x=labels_x, y=labels_y, colorscale="Cividis", zmin=lo, zmax=hi,
            showscale=col == 2, colorbar=dict(thickness=10, len=0.9, title="distance"),
            texttemplate="%{z:.2f}" if show_text else None,
            hovertemplate="samples of %{y}<br>to %{x}: %{z:.3f}<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(type="category", title_text="template / centroid of", row=1, col=col)
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=col,
                         title_text="samples of" if col == 1 else None)
    return _base_layout(fig, title, height)


def _calibrations(cal: Any) -> dict[str, tuple[pd.DataFrame, dict]]:
    """label -> (bins, calibration numbers: ece, ece_T1, temperature where given) from bins, a calibration dict,
    or a mapping of either."""
    def one(v):
        if isinstance(v, pd.DataFrame):
            return v, {}
        if isinstance(v, Mapping) and "bins" in v:
            return v["bins"], {k: v.get(k) for k in ("ece", "ece_T1", "temperature")}
        raise TypeError("expected a reliability_bins DataFrame or a calibration_for_run dict; "
                        f"got {type(v).__name__}")
    if isinstance(cal, pd.DataFrame) or (isinstance(cal, Mapping) and "bins" in cal):
        return {"": one(cal)}
    return {str(k): one(v) for k, v in cal.items()}


def _ece_legend(numbers: Mapping) -> str:
    """``ECE softmax(z/T) 0.100 at T=1.5, ECE softmax(z) 0.080``: the ECEs a calibration dict holds, labelled
    (``ece`` is of softmax(z / T), ``ece_T1`` of softmax(z); with T = 1 they are one number, of softmax(z))."""
    ece, ece1, T = numbers.get("ece"), numbers.get("ece_T1"), numbers.get("temperature")
    if T is not None and float(T) == 1.0 and ece is not None:
        ece, ece1 = None, ece
    parts = []
    if ece is not None:
        parts.append(f"{ECE_LABELS['test_ece']} {ece:.3f}" + (f" at T={float(T):g}" if T is not None else ""))
    if ece1 is not None:
        parts.append(f"{ECE_LABELS['test_ece_T1']} {ece1:.3f}")
    return ", ".join(parts)


def reliability_diagram(calibration: Any, title: str | None = None, height: int = 380) -> go.Figure:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration.

    ``calibration``: ``analysis.reliability_bins(...)``, an
    ``analysis.calibration_for_run(...)`` dict (its ECEs go into the
    legend, labelled: ``ECE softmax(z/T)`` of the binned probabilities,
    ``ECE softmax(z)`` of the logits at T = 1), or ``{label: either}`` to
    overlay runs. One run: bars per bin (width = bin width); several: one
    line per run. Empty bins are left out.
    """
    items = _calibrations(calibration)
    fig = _new()
    single = len(items) == 1
    for i, (label, (bins, numbers)) in enumerate(items.items()):
        b = bins[bins["count"] > 0]
        eces = _ece_legend(numbers)
        name = (label or "accuracy") + (f" ({eces})" if eces else "")
        if single:
            fig.add_trace(go.Bar(
                x=((b["bin_lower"] + b["bin_upper"]) / 2).to_numpy(), y=b["accuracy"].to_numpy(),
                width=(b["bin_upper"] - b["bin_lower"]).to_numpy(), name=name, marker_color="#7aa6d8",
                marker_line=dict(color="white", width=1), customdata=b[["confidence", "count"]].to_numpy(),
                hovertemplate="accuracy %{y:.3f}<br>mean confidence %{customdata[0]:.3f}<br>"
                              "%{customdata[1]} samples<extra></extra>",
            ))
        else:
            fig.add_trace(go.Scatter(
                x=b["confidence"].to_numpy(), y=b["accuracy"].to_numpy(), mode="lines+markers", name=name,
                line=dict(color=PALETTE[i % len(PALETTE)]), customdata=b["count"].to_numpy(),
                hovertemplate=f"{label}<br>confidence %{{x:.3f}}<br>accuracy %{{y:.3f}}<br>"
                              "%{customdata} samples<extra></extra>",
            ))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="#444", dash="dash", width=1), hoverinfo="skip"))
    fig.update_xaxes(title_text="confidence", range=[0, 1])
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02])
    return _base_layout(fig, title if title is not None else "Reliability diagram", height)


# ---------------------------------------------------------------------------
# sweeps and results
# ---------------------------------------------------------------------------

def sweep_heatmap(grid: pd.DataFrame, text: pd.DataFrame | None = None, value: str = "test accuracy",
                  decimals: int = 3, title: str | None = None, height: int = 360) -> go.Figure:
    """A sweep grid as a heatmap (paper Fig. 4a: interval x peer samples).

    ``grid``: numeric ``sweeps.grid_table(results)`` (rows e.g. interval,
    columns e.g. peer_samples); cells show the value, or the matching cell of
    ``text`` (e.g. ``grid_table(..., agg="mean ± std")``). NaN cells (runs not
    finished) stay blank.
    """
    z = grid.to_numpy(dtype=float)
    if text is not None:
        cells = text.astype(str).to_numpy()
    else:
        cells = np.array([["" if math.isnan(v) else _fmt(v, decimals) for v in row] for row in z], dtype=object)
    fig = _new(go.Heatmap(
        z=z, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index], colorscale="Viridis",
        text=cells, texttemplate="%{text}", colorbar=dict(title=value, thickness=12),
        hovertemplate=f"{grid.index.name or 'row'} %{{y}}, {grid.columns.name or 'column'} %{{x}}<br>"
                      f"{value}: %{{text}}<extra></extra>",
    ))
    fig.update_xaxes(type="category", title_text=str(grid.columns.name or ""))
    fig.update_yaxes(type="category", title_text=str(grid.index.name or ""))
    return _base_layout(fig, title, height)


def temperature_curve(table: pd.DataFrame, metrics: Sequence[str] = ("test_acc", *ECE_LABELS), by: str = "T",
                      title: str | None = None, height: int = 340) -> go.Figure:
    """Metrics against temperature with ± std error bars (paper Fig. 4b), from ``sweeps.temperature_table``.

    One panel per metric, except calibration: the two ECEs (``test_ece`` of
    softmax(z / T), ``test_ece_T1`` of softmax(z)) share one panel as two
    lines named ``ECE softmax(z/T)`` and ``ECE softmax(z)`` in the legend.
    ``{metric}_mean`` and ``{metric}_std`` columns are read (std is NaN, so
    no bar, for a single seed); a metric with no value at all (``test_ece_T1``
    of runs written before it existed) is a line without points marked n/a.
    """
    wanted = list(metrics)
    metrics = [m for m in wanted if f"{m}_mean" in table.columns]
    if not metrics:
        raise ValueError(f"table has no *_mean column for {wanted}; pass sweeps.temperature_table(...)")
    panels: list[list[str]] = []
    for m in metrics:
        shared = next((p for p in panels if m in ECE_LABELS and p[0] in ECE_LABELS), None)
        if shared is not None:
            shared.append(m)
        else:
            panels.append([m])
    titles = ["calibration (ECE)" if len(p) > 1 else metric_label(p[0]) for p in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.12, figure=_new())
    x = table[by].to_numpy(dtype=float)
    k = 0
    for i, panel in enumerate(panels, start=1):
        for m in panel:
            y = table[f"{m}_mean"].to_numpy(dtype=float)
            std = table[f"{m}_std"].to_numpy(dtype=float) if f"{m}_std" in table.columns else None
            label = metric_label(m)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=label + ("" if np.isfinite(y).any() else " (n/a)"),
                line=dict(color=PALETTE[k % len(PALETTE)]), showlegend=len(panel) > 1,
                error_y=dict(type="data", array=std, visible=True) if std is not None else None,
                hovertemplate=f"{by} %{{x}}<br>{label} %{{y:.4f}}<extra></extra>",
            ), row=1, col=i)
            k += 1
        fig.update_xaxes(title_text=by, row=1, col=i)
    return _base_layout(fig, title, height, showlegend=any(len(p) > 1 for p in panels))


def results_table(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, metrics: Sequence[str] | None = None,
                  by: str = "method", seed: str = "seed", scale: float = 1.0, decimals: int = 4,
                  title: str | None = None) -> go.Figure:
    """Methods x seeds: one row per ``by`` value, one column per seed and metric, then mean ± std.

    ``rows``: one dict per finished run (``dict(method="colam", seed=0,
    test_acc=0.77, test_ece=0.05, test_ece_T1=0.04)``), e.g. ``Sweep.results()``.
    ``metrics`` defaults to ``test_acc``, and calibration both ways (``test_ece``
    and ``test_ece_T1``, headed ``ECE softmax(z/T)`` and ``ECE softmax(z)``)
    when the rows hold either; a run without one (written before
    ``test_ece_T1`` existed) shows ``-``. The mean ± std column is
    ``analysis.results_table``'s (sample std over seeds), left out when no
    group has more than one run; a seed cell holding several runs lists them all.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if not len(df):
        return message("no finished runs")
    if metrics is None:
        metrics = ("test_acc", *ECE_LABELS) if any(m in df.columns for m in ECE_LABELS) else ("test_acc",)
    for m in metrics:
        if m in ECE_LABELS and m not in df.columns:
            df[m] = float("nan")
    if seed not in df.columns:
        df[seed] = 0
    groups = list(dict.fromkeys(df[by].tolist()))
    seeds = sorted(dict.fromkeys(df[seed].tolist()), key=lambda s: (isinstance(s, str), s))
    header, columns = [by], [[str(g) for g in groups]]
    for m in metrics:
        agg = analysis.results_table(df, metric=m, by=by, scale=scale, decimals=decimals).set_index(by)
        values = pd.to_numeric(df[m], errors="coerce") * float(scale)
        name = metric_label(m)
        for s in seeds:
            header.append(f"{name} · seed {s}")
            columns.append([", ".join(_fmt(v, decimals) for v in values[(df[by] == g) & (df[seed] == s)]) or "-"
                            for g in groups])
        if (agg["n"] > 1).any():  # with one seed per group the mean would only repeat the seed column
            header += [f"{name} · mean ± std", f"{name} · n"]
            columns += [[agg.loc[g, "mean ± std"] for g in groups], [int(agg.loc[g, "n"]) for g in groups]]
    several = (df.groupby(by)[seed].nunique() > 1).any()
    default = "Results (mean ± std over seeds)" if several else "Results (one seed per row: no spread to show)"
    return _table(header, columns, title if title is not None else default)
