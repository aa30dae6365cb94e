"""The teaching helpers: every number in the prose comes from the runs."""
import re

import numpy as np
import pytest

from colam_core import Config, Trainer, analysis, load_run
from workbench import teaching


def test_pick_triple():
    soft = np.full((4, 4), 0.02)
    np.fill_diagonal(soft, 0.9)
    soft[1, 3] = soft[3, 1] = 0.3   # 1 and 3 are tied most closely
    soft[1, 0] = soft[3, 0] = 0.001  # 0 is farthest from both
    a, b, c = teaching.pick_triple(soft)
    assert {a, b} == {1, 3} and c == 0
    assert teaching.default_triple("fashion_mnist") == (6, 2, 7)  # Shirt, Pullover, Sneaker


@pytest.fixture(scope="module")
def seeded_runs(tmp_path_factory):
    """HL, LS and COLAM on the synthetic data set, seeds 0 and 1: ``{label: [run_seed0, run_seed1]}``."""
    root = tmp_path_factory.mktemp("teach")
    runs = {}
    for name, method in (("HL", "hl"), ("LS", "ls"), ("COLAM", "colam")):
        runs[name] = []
        for seed in (0, 1):
            out = root / f"{name}_s{seed}"
            with Trainer(Config(dataset="synthetic", method=method, epochs=4, stages=2 if method == "colam" else 1,
                                batch_size=32, seed=seed), out=out) as t:
                t.run()
            runs[name].append(load_run(out))
    return runs


def test_structure_table_matches_template_distances(seeded_runs):
    classes = (0, 1, 2)
    st = teaching.structure_table(seeded_runs, classes)
    assert len(st) == 6 and sorted(st.loc["HL", "seed"]) == [0, 1]
    for name, group in seeded_runs.items():
        for run in group:
            d = analysis.template_distances_for_run(run, classes=list(classes), names=False)
            row = st.loc[[name]].set_index("seed").loc[run.config["seed"]]
            assert row["d(a,b)"] == pytest.approx(d.loc[0, 1])
            assert row["d(a,c) / d(a,b)"] == pytest.approx(d.loc[0, 2] / d.loc[0, 1])


def computed_numbers(runs, classes):
    """Every number the explanation may print, formatted as it prints them, from tables computed here."""
    st = teaching.structure_table(runs, classes)
    res = teaching.results_summary(runs)
    out = set()

    def spread(values, fmt):
        v = np.asarray(values, dtype=float)
        out.update({format(v.mean(), fmt), format(v[0], fmt)})
        if len(v) > 1:
            out.add(format(v.std(ddof=1), fmt))

    for key in st.index.unique():
        for col, fmt in (("d(a,b)", ".3f"), ("d(a,c)", ".3f"), ("d(a,c) / d(a,b)", ".2f")):
            spread(st.loc[[key], col], fmt)
    for key in res.index.unique():
        for col, fmt in (("test_acc", ".4f"), ("ECE softmax(z/T)", ".4f"), ("ECE softmax(z)", ".4f"),
                         ("final own-class mass", ".2f")):
            if res.loc[[key], col].notna().any():
                spread(res.loc[[key], col].dropna(), fmt)

    def paired(table, x, y, col, scale=1.0):
        a, b = table.loc[[x]].set_index("seed")[col], table.loc[[y]].set_index("seed")[col]
        d = (a - b).dropna() * scale
        out.update({format(d.mean(), "+.2f"), format(d.iloc[0], "+.2f")})
        if len(d) > 1:
            out.add(format(d.std(ddof=1), "+.2f"))

    paired(st, "COLAM", "LS", "d(a,c) / d(a,b)")
    paired(res, "COLAM", "HL", "test_acc", 100)
    out |= {f"{teaching.EQUIDISTANT:.1f}", "1", "2", "2019", "160"}   # the claims: their year, the paper's epochs
    return out


@pytest.mark.parametrize("seeds", [(0, 1), (0,)], ids=["two seeds", "one seed"])
def test_explain_states_only_computed_numbers(seeded_runs, seeds):
    runs = {k: [r for r in v if r.config["seed"] in seeds] for k, v in seeded_runs.items()}
    text = teaching.explain(runs, (0, 1, 2))
    numbers = set(re.findall(r"[+-]?\d+(?:\.\d+)?", text)) - {"5", "3", "4", "0"}  # Table 5, Fig. 3, seed 0
    allowed = computed_numbers(runs, (0, 1, 2))
    assert numbers and {n.lstrip("+") for n in numbers} <= {a.lstrip("+") for a in allowed}, numbers - allowed
    assert "test accuracy" in text and "calibration" in text and "HL" in text and "Erased classes" in text
    if len(seeds) == 1:
        assert "one seed cannot support or refute" in text
    else:
        assert "Over 2 seeds" in text and "(2 seeds)" in text


class OldSummary:
    """A run whose summary.json was written before test_ece_T1 existed (everything else is the run's)."""

    def __init__(self, run):
        self._run = run
        self.summary = {k: v for k, v in run.summary.items() if k != "test_ece_T1"}

    def __getattr__(self, name):
        return getattr(self._run, name)


def test_results_summary_and_explain_show_ece_both_ways(seeded_runs):
    res = teaching.results_summary(seeded_runs)
    assert {"ECE softmax(z/T)", "ECE softmax(z)"} <= set(res.columns) and "test_ece" not in res.columns
    for name, group in seeded_runs.items():
        rows = res.loc[[name]].set_index("seed")
        for run in group:
            assert rows.loc[run.config["seed"], "ECE softmax(z/T)"] == run.summary["test_ece"]
            assert rows.loc[run.config["seed"], "ECE softmax(z)"] == run.summary["test_ece_T1"]
    one = {k: v[:1] for k, v in seeded_runs.items()}
    text = teaching.explain(one, (0, 1, 2))
    s = one["COLAM"][0].summary
    assert f"ECE softmax(z/T) {s['test_ece']:.4f}, ECE softmax(z) {s['test_ece_T1']:.4f}" in text
    # a run written before test_ece_T1 existed: NaN in the table, n/a in the text, no error
    one["COLAM"] = [OldSummary(one["COLAM"][0])]
    assert np.isnan(teaching.results_summary(one).loc["COLAM", "ECE softmax(z)"])
    assert f"ECE softmax(z/T) {s['test_ece']:.4f}, ECE softmax(z) n/a" in teaching.explain(one, (0, 1, 2))


def test_explain_says_when_ls_is_not_equidistant_and_names_erased_classes(seeded_runs, monkeypatch):
    runs = {k: v[:1] for k, v in seeded_runs.items()}
    st = teaching.structure_table(runs, (0, 1, 2))
    r_ls = float(st.loc[["LS"], "d(a,c) / d(a,b)"].mean())
    text = teaching.explain(runs, (0, 1, 2))
    if abs(r_ls - 1) > teaching.EQUIDISTANT:
        assert "**Not seen here**" in text and f"{r_ls:.2f}, far from 1" in text
    else:
        assert "within 0.1 of 1" in text
    from conftest import erased_matrix
    colam = runs["COLAM"][0]
    names = colam.class_names
    monkeypatch.setattr(colam, "soft_labels", lambda k: erased_matrix(len(names), 2, 3))
    text = teaching.explain(runs, (0, 1, 2))
    assert f"{names[2]} → {names[3]} (stage_1)" in text and "erase classes" in text


def test_compactness_reads_the_diagonals():
    import pandas as pd
    adt = pd.DataFrame([[1.0, 2.0], [4.0, 3.0]])
    m = teaching.compactness(adt, adt * 2)
    assert m == {"ADT own": 2.0, "ADT other": 3.0, "ADC own": 4.0, "ADC other": 6.0}
    text = teaching.describe_compactness({"LS": m, "COLAM": teaching.compactness(adt, adt)})
    assert "2.000 from their own class's template" in text and "LS's: 2.000" in text
