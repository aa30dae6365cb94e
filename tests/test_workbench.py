"""The workbench headless: figures, the display-mode switch, and every widget driven as a user would."""
import io
import json
import os
import subprocess
import sys
import threading
import time

import ipywidgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import workbench
from colam_core import Config, Trainer, analysis, load_run
from colam_core import progress as colam_progress
from colam_core.sweeps import grid_table, temperature_table
from colam_core.runs import RunError
from workbench import (RepresentationExplorer, RunComparison, SoftLabelExplorer, StageStepper, display_mode,
                       figures, set_display_mode)
from workbench import display as wdisplay
from workbench.widgets import png_image, sync_figure

TINY = dict(dataset="synthetic", model="small_cnn", batch_size=32, lr=0.05)


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    """Every test starts with auto-detection and no environment override, and leaves it that way."""
    monkeypatch.delenv(wdisplay.ENV_VAR, raising=False)
    set_display_mode(None)
    yield
    set_display_mode(None)


def arr(v):
    return np.asarray(v, dtype=float)


def same_figure(view, fig):
    """A live view shows exactly ``fig`` (trace uids aside; an emptied array counts as absent)."""
    a, b = (json.loads(go.Figure(f).to_json()) for f in (view, fig))
    for t in a["data"] + b["data"]:
        t.pop("uid", None)
    for d in (a, b):
        d["layout"] = {k: v for k, v in d["layout"].items() if v not in ([], {})}
    return a == b


def plain(values):
    """Table cells as the user reads them (the figures write spaces as non-breaking spaces, see figures._nowrap)."""
    return [str(v).replace(figures.NBSP, " ") for v in values]


def soft_by_stage(*mats):
    return {f"stage_{i}": np.asarray(m, dtype=float) for i, m in enumerate(mats, start=1)}


# ---------------------------------------------------------------------------
# display mode
# ---------------------------------------------------------------------------

def test_display_mode_is_static_outside_a_kernel_and_can_be_overridden(monkeypatch):
    assert display_mode() == "static"
    monkeypatch.setenv("COLAM_WORKBENCH_MODE", "interactive")
    assert display_mode() == "interactive"
    set_display_mode("static")                     # the call wins over the environment
    assert display_mode() == "static"
    set_display_mode("auto")
    assert display_mode() == "interactive"
    monkeypatch.setenv("COLAM_WORKBENCH_MODE", "auto")
    assert display_mode() == "static"
    monkeypatch.setenv("COLAM_WORKBENCH_MODE", "fancy")
    with pytest.raises(ValueError, match="COLAM_WORKBENCH_MODE"):
        display_mode()
    with pytest.raises(ValueError, match="interactive"):
        set_display_mode("widgets")


def test_widgets_take_the_mode_at_creation(tiny_runs):
    run = tiny_runs["colam"]
    assert SoftLabelExplorer(run).mode == "static"
    set_display_mode("interactive")
    e = SoftLabelExplorer(run)
    assert e.mode == "interactive" and isinstance(e.widget, ipywidgets.VBox) and set(e.views) == set(e.figures())
    s = SoftLabelExplorer(run, mode="static")
    assert s.widget is None and s.views == {}


def _sleeper(env):
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def test_auto_detection_tells_a_jupyter_server_kernel_from_an_inheriting_one(monkeypatch):
    """A kernel is interactive when JPY_SESSION_NAME was set for it (Jupyter Server), not when its launcher
    has the same value (papermill run from inside a JupyterLab kernel inherits the variable)."""
    monkeypatch.setattr(colam_progress, "in_kernel", lambda: True)
    monkeypatch.setenv("JPY_SESSION_NAME", "/nb/analysis.ipynb")
    plain = _sleeper({k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"})
    inheriting = _sleeper(dict(os.environ))
    try:
        monkeypatch.setenv("JPY_PARENT_PID", str(plain.pid))
        assert display_mode() == "interactive"
        monkeypatch.setenv("JPY_PARENT_PID", str(inheriting.pid))
        assert display_mode() == "static"
    finally:
        plain.kill()
        inheriting.kill()
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert display_mode() == "static"
    monkeypatch.setattr(colam_progress, "in_kernel", lambda: False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/nb/analysis.ipynb")
    assert display_mode() == "static"               # a script, even with the variable around


@pytest.mark.slow
def test_papermill_kernels_render_small_static_figures(tmp_path, tiny_runs):
    """Empirically: papermill's kernel has no JPY_SESSION_NAME, so widgets render plain plotly JSON."""
    pytest.importorskip("papermill")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os, workbench\n"
                                  "print('JPY_SESSION_NAME' in os.environ, workbench.display_mode())"),
        nbformat.v4.new_code_cell("from workbench import SoftLabelExplorer\n"
                                  f"SoftLabelExplorer({str(tiny_runs['colam'].path)!r})"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("JPY_SESSION_NAME", wdisplay.ENV_VAR)}
    subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                    "-k", "python3", "--no-progress-bar"], check=True, env=env, timeout=240,
                   capture_output=True)
    text = (tmp_path / "out.ipynb").read_text()
    out = json.loads(text)
    first = "".join(out["cells"][0]["outputs"][0]["text"])
    assert first.strip() == "False static"
    outputs = out["cells"][1]["outputs"]
    specs = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs]
    assert [s["data"][0]["type"] for s in specs] == ["heatmap", "bar", "bar", "scatter"]
    assert "application/vnd.jupyter.widget-view+json" not in text and "text/html" not in text
    assert len(text) < 150_000


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------

def test_learning_curves_one_run_overlay_and_empty(tiny_runs):
    h = tiny_runs["colam"].history
    fig = figures.learning_curves(h)
    assert [t.name for t in fig.data] == ["train_loss", "test_loss", "train_acc", "test_acc"]
    for t in fig.data:
        np.testing.assert_allclose(arr(t.y), h[t.name].to_numpy())
        np.testing.assert_allclose(arr(t.x), h["epoch"].to_numpy())
    assert {t.xaxis for t in fig.data} == {"x", "x2"}          # loss and accuracy panels
    lines = sorted((s.xref, s.x0) for s in fig.layout.shapes)  # updates after epochs 2 and 4, in both panels
    assert lines == [("x", 2.5), ("x", 4.5), ("x2", 2.5), ("x2", 4.5)]

    over = figures.learning_curves({"HL": tiny_runs["hl"], "COLAM": h})
    assert len(over.data) == 8 and over.data[0].name == "HL train_loss" and over.data[0].line.dash == "dot"
    assert over.data[0].line.color != over.data[4].line.color

    empty = figures.learning_curves(pd.DataFrame(columns=h.columns))
    assert len(empty.data) == 4 and all(len(t.x) == 0 for t in empty.data) and not empty.layout.shapes


def test_soft_label_heatmap_draws_the_matrix_and_outlines_the_picked_row():
    rng = np.random.default_rng(0)
    s = 0.5 * np.eye(10) + 0.5 * rng.dirichlet(np.ones(10), size=10)   # healthy: every row peaks on itself
    names = [f"c{i}" for i in range(10)]
    fig = figures.soft_label_heatmap(s, names, highlight=3)
    np.testing.assert_array_equal(arr(fig.data[0].z), s)
    assert list(fig.data[0].y) == names and fig.layout.yaxis.autorange == "reversed"
    (rect,) = fig.layout.shapes
    assert (rect.y0, rect.y1) == (2.5, 3.5)
    assert len(fig.data[1].x) == 0 and list(fig.layout.yaxis.ticktext) == names   # nothing erased, nothing marked
    with pytest.raises(ValueError, match="square"):
        figures.soft_label_heatmap(s[:, :5])


def erased_matrix():
    """4 classes; class 2's label puts more on class 3 than on itself (erased, taken by 3)."""
    s = np.full((4, 4), 0.05) + 0.85 * np.eye(4)
    s[2] = [0.05, 0.05, 0.35, 0.55]
    return s


def test_erased_classes_are_marked_in_every_soft_label_figure():
    s = erased_matrix()
    names = ["T-shirt", "Trouser", "Coat", "Shirt"]
    for picked in (0, 2):                                   # also when the erased class itself is picked
        heat = figures.soft_label_heatmap(s, names, highlight=picked)
        marks = heat.data[1]
        assert list(marks.x) == ["Shirt"] and list(marks.y) == ["Coat"] and "Coat is erased" in marks.text[0]
        assert "✖ Coat" in heat.layout.yaxis.ticktext[2] and "Shirt" in heat.layout.yaxis.ticktext[2]
        red = [r for r in heat.layout.shapes if r.line.color == figures.FLAGGED]
        assert [(r.y0, r.y1) for r in red] == [(1.5, 2.5)]
        lines = figures.own_mass_lines(soft_by_stage(np.eye(4) * 0.9 + 0.025, s), names, highlight=picked)
        erased = lines.data[3]
        assert list(erased.x) == ["stage_2"] and list(erased.y) == [0.35] and "Coat" in erased.name
        assert "Coat" in (lines.data[1].name if picked != 2 else lines.data[2].name)   # the flag stays named
        if picked == 2:
            assert lines.data[2].name == "Coat (flagged)"
            assert figures.FLAGGED in lines.data[2].marker.color and figures.HIGHLIGHT in lines.data[2].marker.color
        drift = figures.drift_bars(soft_by_stage(s), names, highlight=picked)
        assert drift.data[0].marker.pattern.shape[2] == "x" and "Shirt" in drift.data[0].text[2]
    top = figures.top_k_bars(s, 2, k=3, class_names=names)
    assert list(top.data[0].x) == ["Shirt", "Coat", "T-shirt"] and top.data[0].marker.color[0] == figures.FLAGGED
    assert "Coat is erased" in top.layout.annotations[0].text and "0.55 on Shirt" in top.layout.annotations[0].text


def test_soft_label_heatmap_of_1000_classes_is_fast_and_small():
    C = 1000
    s = np.random.default_rng(1).dirichlet(np.full(C, 0.1), size=C)
    names = [f"class_{i}" for i in range(C)]
    t0 = time.perf_counter()
    fig = figures.soft_label_heatmap(s, names)
    text = fig.to_json()
    seconds = time.perf_counter() - t0
    assert seconds < 1.0, f"{seconds:.2f} s"
    z = arr(fig.data[0].z)
    assert z.shape == (100, 100) and len(text) < 300_000
    assert z[0, 0] == pytest.approx(s[:10, :10].mean()) and z[99, 37] == pytest.approx(s[990:, 370:380].mean())
    assert fig.data[0].y[1] == "class_10 … class_19"

    page = figures.soft_label_heatmap(s, names, page=3, highlight=305)
    np.testing.assert_array_equal(arr(page.data[0].z), s[300:400, 300:400])
    assert page.data[0].y[0] == "class_300" and page.layout.shapes[0].y0 == 4.5
    off = figures.soft_label_heatmap(s, names, page=(1, 9))
    np.testing.assert_array_equal(arr(off.data[0].z), s[100:200, 900:1000])
    with pytest.raises(ValueError, match="page"):
        figures.soft_label_heatmap(s, names, page=10)


def test_top_k_bars_match_analysis():
    s = 0.5 * np.eye(6) + 0.5 * np.random.default_rng(2).dirichlet(np.ones(6), size=6)
    names = list("abcdef")
    fig = figures.top_k_bars(s, 4, k=3, class_names=names)
    ref = analysis.top_k_soft(s, k=3, class_names=names, include_self=True)
    ref = ref[ref["class"] == 4]
    assert list(fig.data[0].x) == ref["other_name"].tolist() and fig.data[0].x[0] == "e"
    np.testing.assert_allclose(arr(fig.data[0].y), ref["mass"].to_numpy())
    assert fig.data[0].marker.color[0] == figures.HIGHLIGHT and fig.data[0].marker.color[1] != figures.HIGHLIGHT
    with pytest.raises(ValueError, match="class id"):
        figures.top_k_bars(s, 6)


def test_own_mass_lines_flag_the_softening_classes_and_drift_bars_match_analysis():
    eye = np.eye(3)
    st1 = 0.8 * eye + 0.2 / 3
    st2 = st1.copy()
    st2[1] = [0.5, 0.3, 0.2]                      # class 1 lost its own mass: flagged
    soft = soft_by_stage(st1, st2)
    names = ["cat", "dog", "fox"]
    fig = figures.own_mass_lines(soft, names, threshold=0.5, highlight=2)
    grey, red, blue, erased, thr = fig.data
    assert list(erased.x) == ["stage_2"] and "dog" in erased.name     # dog's label peaks on cat: erased
    assert red.name == "flagged: dog" and [y for y in red.y if y is not None] == [pytest.approx(0.8 + 0.2 / 3), 0.3]
    assert "own mass 0.30 < 0.50" in red.text[1] and "below cat" in red.text[1]
    assert [y for y in blue.y if y is not None] == [pytest.approx(0.8 + 0.2 / 3)] * 2 and blue.name == "fox"
    assert sum(y is not None for y in grey.y) == 2 and list(thr.y) == [0.5, 0.5]

    bars = figures.drift_bars(soft, names, highlight=0)
    ref = analysis.drift(soft, names, include_hard=True)
    np.testing.assert_allclose(arr(bars.data[0].y), ref[ref["to_stage"] == "stage_2"]["tv"].to_numpy())
    assert list(bars.data[0].marker.color)[:2] == [figures.HIGHLIGHT, figures.FLAGGED]
    first = figures.drift_bars(soft, names, to_stage=1)
    np.testing.assert_allclose(arr(first.data[0].y), 0.5 * np.abs(st1 - eye).sum(1))
    assert figures.own_mass_lines({}).layout.annotations[0].text.startswith("no soft labels")


def test_template_plane_and_embedding_scatter_keep_dataset_indices():
    pts = pd.DataFrame({"x": [0.0, 1, 2, 3], "y": [1.0, 2, 3, 4], "label": [5, 5, 7, 9],
                        "class_name": ["e", "e", "g", "i"], "index": [10, 11, 20, 30]})
    tpl = pd.DataFrame({"x": [0.0, 1, 2], "y": [0.0, 1, 0], "label": [9, 5, 7], "class_name": ["i", "e", "g"]})
    fig = figures.template_plane(pts, tpl)
    assert [t.name for t in fig.data] == ["i", "e", "g", "templates", "★ class templates"]
    assert list(fig.data[1].customdata) == [10, 11] and fig.data[3].marker.symbol == "star"
    assert list(fig.data[3].x) == [0, 1, 2] and fig.layout.yaxis.scaleanchor == "x"
    emb = figures.embedding_scatter(pts, "PCA")
    assert [t.name for t in emb.data] == ["e", "g", "i"] and emb.layout.xaxis.title.text == "PCA 1"
    big = pd.DataFrame({"x": np.arange(6000.0), "y": 0.0, "label": 0, "class_name": "a", "index": np.arange(6000)})
    assert figures.embedding_scatter(big).data[0].type == "scattergl"


def test_tables_and_sweep_figures():
    d1 = pd.DataFrame([[0, 1.2, 1.7], [1.2, 0, 1.5], [1.7, 1.5, 0]], index=list("abc"), columns=list("abc"))
    d2 = d1 * 1.1
    single = figures.template_distance_table(d1)
    assert single.data[0].cells.values[1] == ["0.000", "1.200", "1.700"]
    side = figures.template_distance_table({"LS": d1, "COLAM": d2})
    assert plain(side.data[0].cells.values[0]) == ["a – b", "a – c", "b – c"]
    assert all(" " not in str(v) for col in side.data[0].cells.values for v in col)  # drawn on first display
    assert side.data[0].cells.values[2] == ["1.320", "1.870", "1.650"]
    with pytest.raises(ValueError, match="classes"):
        figures.template_distance_table({"LS": d1, "X": d1.iloc[:2, :2]})

    rows = [dict(method="hl", seed=0, test_acc=0.90), dict(method="hl", seed=1, test_acc=0.92),
            dict(method="colam", seed=0, test_acc=0.95)]
    t = figures.results_table(rows)
    header = plain(t.data[0].header.values)
    assert header == ["method", "test_acc · seed 0", "test_acc · seed 1", "test_acc · mean ± std", "test_acc · n"]
    assert all(" " not in h and "<" not in h for h in t.data[0].header.values)  # no markup: placed at once
    cells = t.data[0].cells.values
    ref = analysis.results_table(rows)
    assert cells[1] == ["0.9000", "0.9500"] and cells[2] == ["0.9200", "-"]
    assert plain(cells[3]) == ref["mean ± std"].tolist() and plain(cells[4]) == ["2", "1"]
    one = figures.results_table([dict(method="hl", seed=0, test_acc=0.9), dict(method="ls", seed=0, test_acc=0.8)])
    assert len(one.data[0].header.values) == 2 and "one seed" in one.layout.title.text  # no mean of one value

    results = pd.DataFrame({"interval": [2, 2, 4, 4], "peer_samples": [1, "all", 1, "all"],
                            "test_acc": [0.8, 0.9, 0.85, np.nan], "T": [1.0, 1.5, 2.0, 2.0],
                            "test_ece": [0.1, 0.05, 0.07, 0.09]})
    grid = grid_table(results)
    hm = figures.sweep_heatmap(grid)
    np.testing.assert_allclose(arr(hm.data[0].z), grid.to_numpy(dtype=float))
    assert list(hm.data[0].x) == ["1", "all"] and hm.data[0].text[1][1] == ""
    tt = temperature_table(results[results["test_acc"].notna()])  # results without test_ece_T1 (older runs)
    tc = figures.temperature_curve(tt)
    assert len(tc.data) == 3 and list(tc.data[0].x) == [1.0, 1.5, 2.0]
    assert [t.name for t in tc.data] == ["test_acc", "ECE softmax(z/T)", "ECE softmax(z) (n/a)"]
    # calibration both ways: one panel, two labelled lines with the table's means and stds
    both = results.assign(test_ece_T1=[0.06, 0.04, 0.05, 0.03])
    tt = temperature_table(both[both["test_acc"].notna()])
    tc = figures.temperature_curve(tt)
    assert [a.text for a in tc.layout.annotations] == ["test_acc", "calibration (ECE)"]
    (acc, ece, ece1) = tc.data
    assert (ece.name, ece1.name) == ("ECE softmax(z/T)", "ECE softmax(z)") and ece.xaxis == ece1.xaxis == "x2"
    np.testing.assert_allclose(arr(ece.y), tt["test_ece_mean"])
    np.testing.assert_allclose(arr(ece1.y), [0.06, 0.04, 0.05])
    assert ece1.showlegend and ece.showlegend and not acc.showlegend and tc.layout.showlegend
    rt = figures.results_table(both.assign(method=["hl", "hl", "colam", "colam"], seed=[0, 1, 0, 1]))
    assert plain(rt.data[0].header.values)[1:] == [f"{m} · {c}" for m in ("test_acc", "ECE softmax(z/T)", "ECE softmax(z)")
                                                   for c in ("seed 0", "seed 1", "mean ± std", "n")]
    assert list(rt.data[0].cells.values[9]) == ["0.0600", "0.0500"]  # ECE softmax(z), seed 0: hl, colam
    old = figures.results_table([dict(method="hl", seed=0, test_acc=0.9, test_ece=0.05)])  # no test_ece_T1
    assert plain(old.data[0].header.values) == ["method", "test_acc · seed 0", "ECE softmax(z/T) · seed 0",
                                                 "ECE softmax(z) · seed 0"]
    assert [list(v) for v in old.data[0].cells.values[2:]] == [["0.0500"], ["-"]]

    adt, adc = d1, d2
    ah = figures.adt_adc_heatmaps(adt, adc)
    np.testing.assert_allclose(arr(ah.data[1].z), d2.to_numpy())


def test_reliability_diagram_single_and_overlay():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    y = np.array([0, 1, 1, 1])
    bins = analysis.reliability_bins(p, y, n_bins=5)
    one = figures.reliability_diagram({"bins": bins, "ece": 0.2})
    used = bins[bins["count"] > 0]
    assert one.data[0].type == "bar" and one.data[0].name == "accuracy (ECE softmax(z/T) 0.200)"
    np.testing.assert_allclose(arr(one.data[0].y), used["accuracy"].to_numpy())
    two = figures.reliability_diagram({"LS": bins, "COLAM": {"bins": bins, "ece": 0.1}})
    assert [t.type for t in two.data] == ["scatter"] * 3 and two.data[1].name == "COLAM (ECE softmax(z/T) 0.100)"
    # a calibration_for_run dict: both ECEs, labelled; at T = 1 the two are one number, of softmax(z)
    both = figures.reliability_diagram({"COLAM": {"bins": bins, "ece": 0.1, "ece_T1": 0.08, "temperature": 1.5},
                                        "HL": {"bins": bins, "ece": 0.05, "ece_T1": 0.05, "temperature": 1.0}})
    assert [t.name for t in both.data[:2]] == ["COLAM (ECE softmax(z/T) 0.100 at T=1.5, ECE softmax(z) 0.080)",
                                               "HL (ECE softmax(z) 0.050)"]


def test_sync_figure_makes_a_view_equal_to_any_new_figure():
    view = go.FigureWidget(figures.message("nothing yet"))
    s = 0.5 * np.eye(4) + 0.5 * np.random.default_rng(3).dirichlet(np.ones(4), size=4)
    for fig in (figures.soft_label_heatmap(s, highlight=1), figures.soft_label_heatmap(s.T),
                figures.top_k_bars(s, 0), figures.message("again"), figures.soft_label_heatmap(s, highlight=2)):
        sync_figure(view, fig)
        assert same_figure(view, fig)
    heat = view.data[0]
    sync_figure(view, figures.soft_label_heatmap(s.T))          # same structure: the trace is updated in place
    assert view.data[0] is heat and not view.layout.shapes


def test_figure_bundle_is_small_plotly_json():
    s = np.random.default_rng(4).dirichlet(np.ones(100), size=100)
    bundle = wdisplay.figure_bundle(figures.soft_label_heatmap(s, title="Soft labels"))
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/plain"}
    spec = bundle["application/vnd.plotly.v1+json"]
    assert spec["data"][0]["type"] == "heatmap" and bundle["text/plain"] == "<plotly figure: Soft labels>"
    assert len(json.dumps(bundle)) < 150_000                   # 10,000 cells as a typed array, no plotly.js


# ---------------------------------------------------------------------------
# SoftLabelExplorer
# ---------------------------------------------------------------------------

def test_soft_label_explorer_follows_the_stage_slider_and_class_picker(tiny_runs):
    run = tiny_runs["colam"]
    e = SoftLabelExplorer(str(run.path))                        # a run directory, no trainer
    assert list(e.figures()) == ["heatmap", "top_k", "drift", "own_mass"]
    assert e.stage_slider.value == 2
    np.testing.assert_array_equal(arr(e.figures()["heatmap"].data[0].z), run.soft_labels(2))
    e.stage_slider.value = 1
    figs = e.figures()
    np.testing.assert_array_equal(arr(figs["heatmap"].data[0].z), run.soft_labels(1))
    d = analysis.drift(analysis.soft_labels_by_stage(run), run.class_names, include_hard=True)
    np.testing.assert_allclose(arr(figs["drift"].data[0].y), d[d["to_stage"] == "stage_1"]["tv"].to_numpy())
    e.class_picker.value = 3
    figs = e.figures()
    ref = analysis.top_k_soft(run.soft_labels(1), k=5, class_names=run.class_names, include_self=True)
    ref = ref[ref["class"] == 3]
    assert list(figs["top_k"].data[0].x) == ref["other_name"].tolist()
    np.testing.assert_allclose(arr(figs["top_k"].data[0].y), ref["mass"].to_numpy())
    assert figs["heatmap"].layout.shapes[0].y0 == 2.5
    assert figs["own_mass"].data[2].name.startswith(run.class_names[3])
    with pytest.raises(ValueError, match="no soft labels"):
        SoftLabelExplorer(tiny_runs["hl"])
    with pytest.raises(ValueError, match="stage 5"):
        SoftLabelExplorer(run, stage=5)


def test_soft_label_explorer_marks_erased_classes_in_every_view(erased_run):
    """Issue 17: stage_2 of this run erases class 2 (its label peaks on class 3); the explorer names both, in the
    banner, the class picker and every figure, also when the erased class is the one picked."""
    names = erased_run.class_names
    e = SoftLabelExplorer(erased_run, cls=2, mode="interactive")
    assert e.stage_slider.value == 2 and list(e.erased["class"]) == [2]
    assert "Class erased" in e.note.value and f"erase {names[2]}" in e.note.value and names[3] in e.note.value
    assert dict(e.class_picker.options)[f"✖ {names[2]} (erased at stage 2)"] == 2
    figs = e.figures()
    assert list(figs["heatmap"].data[1].y) == [names[2]] and list(figs["heatmap"].data[1].x) == [names[3]]
    assert "is erased" in figs["top_k"].layout.annotations[0].text
    assert figs["own_mass"].data[2].name == f"{names[2]} (flagged)" and list(figs["own_mass"].data[3].x) == ["stage_2"]
    assert figs["drift"].data[0].marker.pattern.shape[2] == "x"
    e.stage_slider.value = 1                                       # stage 1 is healthy: no banner there ...
    assert e.note.value == "" and len(e.figures()["heatmap"].data[1].x) == 0
    assert list(e.figures()["own_mass"].data[3].x) == ["stage_2"]  # ... but the history still shows the erasure
    e.k_slider.value = 2                                           # the top-k control
    assert len(e.figures()["top_k"].data[0].x) == 2 and e.views["top_k"].layout.title.text.startswith("Top 2")


def test_soft_label_explorer_live_views_and_heatmap_click(tiny_runs):
    run = tiny_runs["colam"]
    e = SoftLabelExplorer(run, mode="interactive")
    e.stage_slider.value = 1
    e.class_picker.value = 2
    figs = e.figures()
    assert all(same_figure(e.views[n], figs[n]) for n in figs)
    heat = e.views["heatmap"]
    names = run.class_names
    heat._js2py_pointsCallback = {                             # what the front end sends on a click
        "event_type": "plotly_click",
        "points": {"trace_indexes": [0], "point_indexes": [[1, 3]], "xs": [names[3]], "ys": [names[1]]},
    }
    assert e.class_picker.value == 1
    assert e.views["heatmap"].layout.shapes[0].y0 == 0.5 and e.views["top_k"].layout.title.text.endswith(
        f"{names[1]} (stage 1)")


# ---------------------------------------------------------------------------
# RepresentationExplorer
# ---------------------------------------------------------------------------

def test_representation_explorer_template_plane_pca_and_hover_image(tiny_runs):
    run = tiny_runs["colam"]
    r = RepresentationExplorer(run, classes=(0, 1, 2), per_class=20, mode="interactive")
    fig = r.figures()["projection"]
    points, templates = analysis.template_plane_for_run(run, None, (0, 1, 2), per_class=20)
    assert [t.name for t in fig.data] == [*run.class_names[:3], "templates", "★ class templates"]
    np.testing.assert_allclose(arr(fig.data[3].x), templates["x"].to_numpy())
    np.testing.assert_allclose(arr(fig.data[3].y), templates["y"].to_numpy())
    for c in range(3):                                       # the same numbers as analysis.template_plane_for_run
        ref = points[points["label"] == c]
        np.testing.assert_allclose(arr(fig.data[c].x), ref["x"].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(arr(fig.data[c].y), ref["y"].to_numpy(), rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(fig.data[c].customdata), ref["index"].to_numpy())

    r.class_pickers[2].value = 3
    r.stage_picker.value = 1
    r.split_toggle.value = "test"
    fig = r.figures()["projection"]
    points, _ = analysis.template_plane_for_run(run, 1, (0, 1, 3), split="test", per_class=20)
    assert fig.data[2].name == run.class_names[3]
    np.testing.assert_allclose(arr(fig.data[2].x), points[points["label"] == 3]["x"].to_numpy())

    r.projection_toggle.value = "pca"
    fig = r.figures()["projection"]
    emb = analysis.EmbeddingCache(disk=False).get(run, 1, "test", (0, 1, 3), "pca", per_class=20)
    assert [t.name for t in fig.data] == [run.class_names[c] for c in (0, 1, 3)]
    np.testing.assert_allclose(arr(fig.data[0].x), emb[emb["label"] == 0]["x"].to_numpy())
    assert same_figure(r.views["projection"], fig)

    view = r.views["projection"]                             # hover a point: its image appears
    idx = int(view.data[1].customdata[4])
    view._js2py_pointsCallback = {"event_type": "plotly_hover",
                                  "points": {"trace_indexes": [1], "point_indexes": [4], "xs": [0], "ys": [0]}}
    from PIL import Image
    img = Image.open(io.BytesIO(r.image.value))
    assert img.size == (112, 112)                            # 8x8 digits-sized images, enlarged 14x
    expected = run.dataset().images_uint8("test", [idx])[0, ..., 0]
    np.testing.assert_array_equal(np.asarray(img)[::14, ::14], expected)
    assert r.image_caption.value == f"{run.class_names[1]} · test #{idx}"

    r.class_pickers[1].value = 0
    assert "three different classes" in r.note.value
    with pytest.raises(ValueError, match="stage 7"):
        RepresentationExplorer(run, stage=7)
    with pytest.raises(ValueError, match="projection"):
        RepresentationExplorer(run, projection="tsne")


def test_png_image_enlarges_by_an_integer_factor():
    rgb = np.random.default_rng(5).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    from PIL import Image
    img = Image.open(io.BytesIO(png_image(rgb)))
    assert img.size == (96, 96) and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img)[::3, ::3], rgb)


@pytest.mark.slow
def test_representation_explorer_umap(tiny_runs, tmp_path):
    run = tiny_runs["colam"]
    cache = analysis.EmbeddingCache(disk=False)
    r = RepresentationExplorer(run, classes=(1, 2, 3), projection="umap", per_class=30, cache=cache)
    fig = r.figures()["projection"]
    emb = cache.get(run, None, "train", (1, 2, 3), "umap", per_class=30)
    assert fig.layout.xaxis.title.text == "UMAP 1" and len(cache) == 1
    np.testing.assert_allclose(arr(fig.data[0].x), emb[emb["label"] == 1]["x"].to_numpy())


# ---------------------------------------------------------------------------
# RunComparison
# ---------------------------------------------------------------------------

def test_run_comparison_overlays_selected_runs(tiny_runs):
    runs = [tiny_runs[k] for k in ("hl", "ls", "colam")]
    c = RunComparison(runs, mode="interactive")
    figs = c.figures()
    assert list(figs) == ["curves", "results", "template_distances"]
    assert len(figs["curves"].data) == 12
    cells = figs["results"].data[0].cells.values
    assert list(cells[0]) == ["hl", "ls", "colam"]
    assert list(cells[1]) == [f"{r.summary['test_acc']:.4f}" for r in runs]
    # calibration both ways, labelled, with each summary's numbers
    assert plain(figs["results"].data[0].header.values)[2:] == ["ECE softmax(z/T) · seed 0", "ECE softmax(z) · seed 0"]
    assert list(cells[2]) == [f"{r.summary['test_ece']:.4f}" for r in runs]
    assert list(cells[3]) == [f"{r.summary['test_ece_T1']:.4f}" for r in runs]
    dist = figs["template_distances"].data[0].cells.values
    ref = analysis.template_distances_for_run(tiny_runs["ls"], classes=[0, 1, 2])
    names = runs[0].class_names
    assert plain(dist[0])[0] == f"{names[0]} – {names[1]}" and dist[2][1] == f"{ref.iloc[0, 2]:.3f}"

    c.run_picker.value = ("colam", "hl")
    c.class_picker.value = (3, 1)
    figs = c.figures()
    assert [t.name for t in figs["curves"].data][::4] == ["hl train_loss", "colam train_loss"]
    ref = analysis.template_distances_for_run(tiny_runs["colam"], classes=[1, 3])
    assert plain(figs["template_distances"].data[0].cells.values[0]) == [f"{names[1]} – {names[3]}"]
    assert figs["template_distances"].data[0].cells.values[2] == [f"{ref.iloc[0, 1]:.3f}"]
    assert all(same_figure(c.views[n], figs[n]) for n in figs)
    c.run_picker.value = ()
    assert c.figures()["results"].layout.annotations[0].text == "no runs selected"


def test_run_comparison_keeps_colours_finds_nested_runs_and_says_when_runs_differ(tiny_runs, tmp_path):
    import shutil
    shutil.copytree(tiny_runs["hl"].path, tmp_path / "quick" / "HL")
    shutil.copytree(tiny_runs["colam"].path, tmp_path / "sweep" / "deep" / "COLAM")
    c = RunComparison(tmp_path, mode="interactive")
    assert list(c.runs) == ["quick/HL", "sweep/deep/COLAM"]             # nested run folders, labelled by path
    assert "differ in epochs (4: quick/HL; 6: sweep/deep/COLAM)" in c.note.value
    colour = c.figures()["curves"].data[4].line.color                  # COLAM's first curve
    c.run_picker.value = ("sweep/deep/COLAM",)
    assert c.figures()["curves"].data[0].line.color == colour == c.colors["sweep/deep/COLAM"]
    assert "differ" not in c.note.value


def test_slow_work_shows_a_busy_line_and_disables_the_controls(tiny_runs, monkeypatch):
    seen = []
    r = RepresentationExplorer(tiny_runs["colam"], per_class=10, mode="interactive")
    real = r.cache.get

    def spy(*a, **kw):
        seen.append((r.busy.value, [c.disabled for c in r._controls]))
        return real(*a, **kw)
    monkeypatch.setattr(r.cache, "get", spy)
    r.projection_toggle.value = "pca"
    (busy, disabled), = seen
    assert "computing PCA of 30 samples" in busy and "fa-spinner" in busy and all(disabled)
    assert r.busy.value == "" and not any(c.disabled for c in r._controls)
    r.projection_toggle.value = "template"
    r.projection_toggle.value = "pca"                                  # cached now: no busy line, no flicker
    assert len(seen) == 2 and seen[1][0] == ""

    c = RunComparison([tiny_runs["hl"], tiny_runs["ls"]], mode="interactive")
    real_td = analysis.template_distances_for_run
    monkeypatch.setattr(analysis, "template_distances_for_run",
                        lambda *a, **kw: seen.append((c.busy.value, c.class_picker.disabled)) or real_td(*a, **kw))
    c.class_picker.value = (0, 3)
    assert "computing template distances of 2 run(s)" in seen[-1][0] and seen[-1][1] and c.busy.value == ""


def test_run_comparison_shows_a_run_written_before_ece_at_T1(tiny_runs, tmp_path):
    import shutil
    old = tmp_path / "old"
    shutil.copytree(tiny_runs["hl"].path, old)
    s = json.loads((old / "summary.json").read_text())
    del s["test_ece_T1"]
    (old / "summary.json").write_text(json.dumps(s))
    c = RunComparison({"old": load_run(old), "new": tiny_runs["ls"]}, mode="interactive")
    cells = c.figures()["results"].data[0].cells.values
    assert list(cells[2]) == [f"{s['test_ece']:.4f}", f"{tiny_runs['ls'].summary['test_ece']:.4f}"]
    assert list(cells[3]) == ["-", f"{tiny_runs['ls'].summary['test_ece_T1']:.4f}"]


def test_run_comparison_opens_a_folder_of_runs_and_groups_by_method(tiny_runs):
    root = tiny_runs["colam"].path.parent
    c = RunComparison(root, group_by="method")
    assert set(c.runs) == {"colam", "hl", "ls"}
    cells = c.figures()["results"].data[0].cells.values
    assert sorted(cells[0]) == ["colam", "hl", "ls"]
    with pytest.raises(ValueError, match="group_by"):
        RunComparison(root, group_by="dataset")


# ---------------------------------------------------------------------------
# StageStepper
# ---------------------------------------------------------------------------

class Gate:
    """A trainer listener that holds training at its first batch until released."""

    def __init__(self):
        self.reached, self.release = threading.Event(), threading.Event()
        self.thread = None

    def __call__(self, ev):
        if ev.kind == "batch" and not self.reached.is_set():
            self.thread = threading.current_thread()
            self.reached.set()
            assert self.release.wait(30)


def test_stage_stepper_runs_a_stage_on_a_worker_thread(tmp_path):
    s = StageStepper(Config(method="colam", epochs=4, stages=2, **TINY), out=tmp_path / "r", mode="interactive")
    try:
        assert s.figures()["soft_labels"].layout.annotations[0].text.startswith("No soft labels yet")
        assert all(len(t.x) == 0 for t in s.figures()["curves"].data)
        gate = Gate()
        s.trainer.subscribe(gate)
        s.next_button.click()
        assert gate.reached.wait(30)
        assert s.running and s.next_button.disabled and s.all_button.disabled and not s.stop_button.disabled
        assert gate.thread is not threading.main_thread()          # the click returned while training runs
        s.next_button.click()                                   # a double click starts nothing more
        s.all_button.click()
        gate.release.set()
        assert s.wait(60)
        assert len(s.trainer.history) == 2 and s.trainer.current_stage == 2
        figs = s.figures()
        np.testing.assert_array_equal(arr(figs["soft_labels"].data[0].z), s.trainer.soft_label_history["stage_1"])
        assert [len(t.x) for t in figs["curves"].data] == [2, 2, 2, 2, 0]   # + the loss floor (from stage 2 on)
        assert same_figure(s.views["soft_labels"], figs["soft_labels"])
        assert same_figure(s.views["curves"], figs["curves"])
        assert not s.next_button.disabled and s.stop_button.disabled and s.error is None
        assert "Next: stage 2 of 2" in s.status.value

        s.all_button.click()
        assert s.wait(60) and s.trainer.done
        assert s.next_button.disabled and s.all_button.disabled and "Finished all 2 stages" in s.status.value
        done = s.trainer.summary
        assert (f"ECE softmax(z/T) {done['test_ece']:.4f}, ECE softmax(z) {done['test_ece_T1']:.4f}"
                in s.status.value)
        assert s.progress.value == s.progress.max == 4 * 8
        assert len(s.figures()["curves"].layout.shapes) == 2
    finally:
        s.close()


def test_stage_stepper_says_what_it_does_between_batches(tmp_path):
    """The test pass, the soft-label pass and the checkpoint each show a phase line while they run."""
    s = StageStepper(Config(method="colam", epochs=2, stages=2, **TINY), out=tmp_path / "r", mode="interactive")
    seen = []
    s.trainer.subscribe(lambda ev: ev.kind == "phase" and seen.append((ev.phase, s.status.value, s.phase)))
    try:
        s.run_stage().wait(60)
        phases = [p for p, _, _ in seen]
        assert phases == ["test", "soft_labels", "checkpoint"]
        status = {p: st for p, st, _ in seen}
        assert "evaluating on the test set" in status["test"] and "fa-spinner" in status["test"]
        n = s.trainer.info.num_train
        assert f"learning soft labels from {n} training images" in status["soft_labels"]
        assert "writing checkpoint" in status["checkpoint"] and s.phase == ""
        assert "Next: stage 2 of 2" in s.status.value and "fa-spinner" not in s.status.value
        figs = s.figures()["curves"]
        assert list(figs.layout.xaxis.range) == [0.5, 2.5] and list(figs.layout.xaxis2.range) == [0.5, 2.5]
        assert list(figs.layout.yaxis2.range) == [0, 1.02]
    finally:
        s.close()


def test_stage_stepper_axes_before_the_first_epoch(tmp_path):
    with Trainer(Config(method="colam", epochs=4, stages=2, **TINY), out=tmp_path / "r") as t:
        fig = StageStepper(t, mode="static").figures()["curves"]
    assert list(fig.layout.xaxis.range) == [0.5, 4.5] and list(fig.layout.yaxis.range) == [0, 1]
    assert list(fig.layout.yaxis2.range) == [0, 1.02]
    assert any("no epoch finished yet" in a.text for a in fig.layout.annotations)


def test_stage_stepper_shows_a_banner_when_an_update_erases_a_class(tmp_path):
    """A built-to-fail run (tests/datafiles.write_confusable_fashion: class 1 drawn like class 0, 4x rarer) erases
    class 1 at the first update; the stepper names it and the class that took it, and the loss floor appears."""
    sys.path.insert(0, os.path.dirname(__file__))
    from datafiles import write_confusable_fashion
    write_confusable_fashion(tmp_path / "fm", np.random.default_rng(0))
    cfg = Config(dataset="fashion_mnist", data_root=str(tmp_path / "fm"), method="colam", epochs=4, stages=2,
                 T=1.5, batch_size=32, lr=0.1, augment="none")
    s = StageStepper(cfg, out=tmp_path / "r", mode="static")
    try:
        assert s.warning_area.value == ""
        s.run_all()
        names = s.class_names
        assert "Class erased" in s.warning_area.value and len(s.warnings) >= 1
        assert f"erase {names[1]}" in s.warnings[0] and f"on {names[0]}" in s.warnings[0]
        heat = s.figures()["soft_labels"]
        assert names[1] in list(heat.data[1].y)
        floor = s.figures()["curves"].data[4]
        expected = analysis.target_entropy(s.trainer.soft_label_history["stage_1"],
                                           np.bincount(s.trainer.data.train_labels.numpy(), minlength=10))
        assert floor.y[0] == pytest.approx(expected) and list(floor.x[:2]) == [2.5, 4.5]
    finally:
        s.close()
    again = StageStepper(cfg, out=tmp_path / "r", mode="static")      # a new session on the same run: still there
    try:
        assert "Class erased" in again.warning_area.value
    finally:
        again.close()


def test_stage_stepper_shows_an_exception_in_training(tmp_path, monkeypatch):
    s = StageStepper(Config(method="colam", epochs=4, stages=2, **TINY), out=tmp_path / "r", mode="interactive")
    try:
        def boom():
            raise RuntimeError("the data went away")
        monkeypatch.setattr(s.trainer, "run_stage", boom)
        s.next_button.click()
        assert s.wait(30)
        assert isinstance(s.error, RuntimeError)
        assert "RuntimeError: the data went away" in s.error_area.value and "Failed" in s.status.value
        assert "Traceback (most recent call last)" in s.error_area.value  # not ours: a bug, shown with its frames
        assert not s.next_button.disabled and s.stop_button.disabled
    finally:
        s.close()

    with Trainer(Config(method="colam", epochs=4, stages=2, **TINY), out=tmp_path / "r2") as t:
        static = StageStepper(t, mode="static")
        monkeypatch.setattr(t, "run", boom)
        with pytest.raises(RuntimeError, match="went away"):   # static mode: shown and raised
            static.run_all()
        assert "went away" in static.error_area.value and not static.running


def test_a_closed_stage_stepper_never_trains_again(tmp_path):
    """Issue 15, case 4: a click after close() used to train beside the process that took the lock."""
    cfg = Config(method="colam", epochs=4, stages=2, **TINY)
    s = StageStepper(cfg, out=tmp_path / "r", mode="static")
    s.run_stage()
    s.close()
    assert s.next_button.disabled and s.all_button.disabled
    other = StageStepper(cfg, out=tmp_path / "r", mode="static")
    other.run_all()
    summary = (tmp_path / "r" / "summary.json").read_bytes()
    with pytest.raises(RunError, match="was closed"):  # static mode: shown and raised, as any failure
        s.run_all()
    assert "was closed" in s.error_area.value and s.trainer.epoch == 2
    assert "Traceback" not in s.error_area.value  # our own error: its one line, not a traceback
    other.close()
    assert (tmp_path / "r" / "summary.json").read_bytes() == summary and len(load_run(tmp_path / "r").history) == 4


def test_stage_stepper_stop_leaves_a_resumable_run(tmp_path):
    cfg = Config(method="colam", epochs=2, stages=2, **TINY)
    s = StageStepper(cfg, out=tmp_path / "r", mode="interactive")
    gate = Gate()
    s.trainer.subscribe(gate)
    s.all_button.click()
    assert gate.reached.wait(30)
    s.stop_button.click()
    gate.release.set()
    assert s.wait(60)
    assert not s.trainer.done and s.trainer.epoch == 0
    assert "Stopped in stage 1, epoch 1, after batch 1" in s.status.value
    assert not s.next_button.disabled and s.error is None
    s.close()

    resumed = StageStepper(cfg, out=tmp_path / "r", mode="static")   # a new session resumes the same run
    try:
        resumed.run_all()
        assert resumed.trainer.done and len(resumed.trainer.history) == 2
    finally:
        resumed.close()
    run = load_run(tmp_path / "r")
    assert run.finished and run.soft_label_keys() == ["stage_1"] and run.history["epoch"].tolist() == [1, 2]


def test_stage_stepper_static_mode_runs_synchronously(tmp_path, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))

    def plotly_types():
        return [o["application/vnd.plotly.v1+json"]["data"][0]["type"] for o in shown if isinstance(o, dict)]

    s = StageStepper(Config(method="colam", epochs=2, stages=2, **TINY), out=tmp_path / "r")
    try:
        assert s.mode == "static" and s.widget is None
        s.show()                                              # nothing trained yet: just the status line
        assert len(shown) == 1 and "Next: stage 1 of 2" in shown[0].data
        assert s.run_stage() is s                             # trains here; a cell ending in it shows the stepper
        assert len(s.trainer.history) == 1 and not s.running and len(shown) == 1
        shown.clear()
        s.show()
        assert plotly_types() == ["scatter", "heatmap"] and "Next: stage 2 of 2" in shown[0].data
        assert s.run_all() is s and s.trainer.done
        shown.clear()
        s.show()
        assert "Finished all 2 stages" in shown[0].data and plotly_types() == ["scatter", "heatmap"]
    finally:
        s.close()


def test_static_display_emits_plotly_json_only(tiny_runs, monkeypatch):
    import IPython.display

    out = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: out.append((obj, raw)))
    SoftLabelExplorer(tiny_runs["colam"]).show()
    assert len(out) == 4 and all(raw and "application/vnd.plotly.v1+json" in o for o, raw in out)
    assert [o["application/vnd.plotly.v1+json"]["data"][0]["type"] for o, _ in out] == ["heatmap", "bar", "bar",
                                                                                          "scatter"]


def test_show_displays_figures_as_small_plotly_json(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    table = pd.DataFrame({"a": [1]})
    workbench.show(figures.message("hello"), table)
    (bundle, raw), (other, raw2) = shown
    assert raw and set(bundle) == {"application/vnd.plotly.v1+json", "text/plain"}
    assert other is table and not raw2


def test_top_level_api():
    assert set(workbench.__all__) == {"StageStepper", "SoftLabelExplorer", "RepresentationExplorer", "RunComparison",
                                      "figures", "show", "display_mode", "set_display_mode"}
    assert workbench.__doc__.startswith("Interactive widgets and plotly figures for COLAM runs")


# ---------------------------------------------------------------------------
# static images and the offline HTML export
# ---------------------------------------------------------------------------

needs_images = pytest.mark.skipif(__import__("workbench.images").images.unavailable() is not None,
                                  reason="kaleido or a Chromium is missing (apt-get install chromium)")


@pytest.mark.slow
@needs_images
def test_images_png_svg_pdf(tmp_path):
    from workbench import images
    fig = figures.template_distance_table({"LS": pd.DataFrame([[0, 1.2], [1.2, 0]], index=["a b", "c"],
                                                              columns=["a b", "c"])})
    with images.image_server():
        paths = [images.save(fig, tmp_path / f"t.{ext}") for ext in ("png", "svg", "pdf")]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[2].read_bytes()[:4] == b"%PDF"
    svg = paths[1].read_text()
    assert "<svg" in svg and "a\u00a0b\u00a0–\u00a0c" in svg      # the table's cell text is in the image
    with pytest.raises(images.ImageError, match="format"):
        images.to_image(fig, "gif")


@pytest.mark.slow
@needs_images
def test_export_html_is_offline_small_and_folds_logs(tmp_path):
    import re

    import nbformat

    from workbench import export
    nb = nbformat.v4.new_notebook()
    log = "".join(f"stage 1 epoch {i}: train loss 0.5\n" for i in range(30))
    bundle = wdisplay.figure_bundle(figures.soft_label_heatmap(np.eye(3) * 0.8 + 0.2 / 3, ["a", "b", "c"]))
    nb.cells = [nbformat.v4.new_markdown_cell("# Title $x^2$"),
                nbformat.v4.new_code_cell("train()", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text=line) for line in log.splitlines(True)]
                    + [nbformat.v4.new_output("display_data", data=bundle)])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, tmp_path / "x.ipynb")
    html_text = export.export_html(tmp_path / "x.ipynb").read_text()
    assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", html_text)     # nothing fetched: no CDN
    assert "require.min.js" not in html_text and "MathJax" not in html_text and "html-manager" not in html_text
    imgs = re.findall(r"<img[^>]*colam-figure[^>]*>", html_text)
    assert len(imgs) == 1 and "data:image/svg+xml;base64," in imgs[0] and PLOTLY_JS_MARK not in html_text
    assert "log: 30 lines" in html_text and "<details" in html_text
    assert len(html_text) < 800_000
    export.add_images(tmp_path / "x.ipynb")
    out = nbformat.read(tmp_path / "x.ipynb", as_version=4)
    data = out.cells[1].outputs[-1]["data"]
    assert "image/png" in data and "application/vnd.plotly.v1+json" in data   # GitHub shows the PNG


PLOTLY_JS_MARK = "plotly.js v"
