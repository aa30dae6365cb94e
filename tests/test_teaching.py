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
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("teach")
    runs = {}
    for name, method in (("HL", "hl"), ("LS", "ls"), ("COLAM", "colam")):
        with Trainer(Config(dataset="synthetic", method=method, epochs=4, stages=2 if method == "colam" else 1,
                            batch_size=32), out=root / name) as t:
            t.run()
        runs[name] = load_run(root / name)
    return runs


def test_structure_table_matches_template_distances(three_runs):
    classes = (0, 1, 2)
    st = teaching.structure_table(three_runs, classes)
    for name, run in three_runs.items():
        d = analysis.template_distances_for_run(run, classes=list(classes), names=False)
        assert st.loc[name, "d(a,b)"] == pytest.approx(d.loc[0, 1])
        assert st.loc[name, "d(a,c) / d(a,b)"] == pytest.approx(d.loc[0, 2] / d.loc[0, 1])


def test_explain_states_only_computed_numbers(three_runs):
    text = teaching.explain(three_runs, (0, 1, 2))
    st = teaching.structure_table(three_runs, (0, 1, 2))
    res = teaching.results_summary(three_runs)
    computed = {f"{v:.3f}" for v in st[["d(a,b)", "d(a,c)"]].to_numpy().ravel()}
    computed |= {f"{v:.2f}" for v in st["d(a,c) / d(a,b)"]}
    computed |= {f"{v:.4f}" for v in res[["test_acc", "test_ece"]].to_numpy().ravel()}
    computed |= {f"{v:.2f}" for v in res["final own-class mass"].dropna()}
    hl, co = res.loc["HL", "test_acc"], res.loc["COLAM", "test_acc"]
    computed.add(f"{abs(co - hl) * 100:.2f}")
    numbers = set(re.findall(r"\d+\.\d+", text))
    assert numbers and numbers <= computed, numbers - computed
    assert "test accuracy" in text and "calibration" in text
