"""Class erasure: detected per update, warned about, and prevented by peer_filter="correct" (docs/RESULTS.md)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colam_core import Config, Trainer, load_run
from colam_core.errors import ConfigError
from colam_core.metrics import class_health, erasures, soft_label_health

sys.path.insert(0, str(Path(__file__).parent))
from datafiles import write_confusable_fashion  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINORITY, MAJORITY = 1, 0


@pytest.fixture(scope="module")
def confusable(tmp_path_factory):
    """Fashion-MNIST-format files in which class 1 is drawn exactly like class 0 and is 4x rarer."""
    d = tmp_path_factory.mktemp("confusable") / "fm"
    write_confusable_fashion(d, np.random.default_rng(0), minority=MINORITY, majority=MAJORITY)
    return d


def train(data_root, out, **kw):
    cfg = Config(dataset="fashion_mnist", data_root=str(data_root), method="colam", epochs=4, stages=2, T=1.5,
                 batch_size=32, lr=0.1, augment="none", **kw)
    warnings = []
    with Trainer(cfg, out=out) as t:
        t.subscribe(lambda ev: ev.kind == "warning" and warnings.append(ev))
        t.run()
    return load_run(out), warnings


@pytest.fixture(scope="module")
def paper_run(confusable, tmp_path_factory):
    return train(confusable, tmp_path_factory.mktemp("paper") / "r")


@pytest.fixture(scope="module")
def correct_run(confusable, tmp_path_factory):
    # compared below with a float32 computation: trained in float32 too (amp auto is bf16 on CPUs with AMX)
    return train(confusable, tmp_path_factory.mktemp("correct") / "r", peer_filter="correct", amp="off")


def test_built_to_fail_run_reports_the_erased_class_and_warns(paper_run):
    run, warnings = paper_run
    health = run.summary["soft_label_health"]
    assert set(health) == {"stage_1"} and set(health["stage_1"]) == {"own_mass_mean", "own_mass_min",
                                                                      "erased_classes"}
    assert MINORITY in health["stage_1"]["erased_classes"]
    soft = run.soft_labels(1)
    assert soft[MINORITY].argmax() == MAJORITY  # its label's largest entry is the majority class
    assert health["stage_1"]["own_mass_min"] == pytest.approx(float(np.diag(soft).min()), abs=1e-6)
    lost = {e["class"]: e["taken_by"] for e in run.summary["soft_label_erasures"]["stage_1"]}
    assert lost[MINORITY] == MAJORITY
    assert len(warnings) == 1 and warnings[0].stage == 1
    assert "class 1 (Trouser)" in warnings[0].message and "0 (T-shirt/top)" in warnings[0].message


def test_colam_show_names_the_erased_class(paper_run):
    run, _ = paper_run
    out = subprocess.run([sys.executable, "-m", "colam_core", "show", str(run.path)], capture_output=True,
                         text=True, cwd=ROOT, check=True).stdout
    assert "stage_1:" in out and "ERASED" in out and "Trouser -> T-shirt/top" in out


def test_peer_filter_correct_never_erases_and_equals_the_independent_mean(correct_run):
    run, warnings = correct_run
    assert all(h["erased_classes"] == [] for h in run.summary["soft_label_health"].values())
    soft = run.soft_labels(1)
    assert (soft.argmax(1) == np.arange(10)).all()
    # independently: softmax(mean over the correctly classified peers / T) with the stage-1 model, eval mode
    model = run.model(1)
    x, y = run.data("train")
    with torch.no_grad():
        z = model(x).double()
    correct = z.argmax(1) == y
    for c in range(10):
        peers = correct & (y == c)
        want = torch.softmax(z[peers].mean(0) / 1.5, 0).numpy() if peers.any() else np.eye(10)[c]
        np.testing.assert_allclose(soft[c], want, atol=2e-5)
    # the minority class has no correct peer: it kept its (one-hot) label, and the run said so
    assert not (correct & (y == MINORITY)).any()
    np.testing.assert_allclose(soft[MINORITY], np.eye(10)[MINORITY])
    assert len(warnings) == 1 and warnings[0].no_peers == [MINORITY] and not warnings[0].erased


def test_a_healthy_run_reports_no_erasure(tmp_path):
    cfg = Config(dataset="synthetic", method="colam", epochs=6, stages=3, batch_size=32, lr=0.05)
    warnings = []
    with Trainer(cfg, out=tmp_path / "r") as t:
        t.subscribe(lambda ev: ev.kind == "warning" and warnings.append(ev))
        summary = t.run()
    assert set(summary["soft_label_health"]) == {"stage_1", "stage_2"}
    assert all(h["erased_classes"] == [] for h in summary["soft_label_health"].values())
    assert warnings == [] and summary["soft_label_warnings"] == []  # neither erased nor close to uniform


def test_own_floor_lifts_only_the_labels_below_it(confusable, tmp_path):
    run, _ = train(confusable, tmp_path / "r", own_floor=0.5)
    soft = run.soft_labels(1)
    own = np.diag(soft)
    assert own.min() == pytest.approx(0.5, abs=1e-5) and (soft.argmax(1) == np.arange(10)).all()
    np.testing.assert_allclose(soft.sum(1), 1, atol=1e-5)


def test_class_health_by_hand():
    q = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]])
    h = class_health(q)
    assert h["erased"].tolist() == [False, True, False] and h["top_class"].tolist() == [0, 0, 2]
    assert h["own_rank"].tolist() == [1, 2, 1]
    assert soft_label_health({"stage_1": q}) == {"stage_1": {"own_mass_mean": pytest.approx(1.4 / 3),
                                                             "own_mass_min": 0.4, "erased_classes": [1]}}
    assert erasures(q) == [{"class": 1, "taken_by": 0, "own_mass": 0.4, "taken_mass": 0.5}]
    tie = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert not class_health(tie)["erased"].any()  # a tie is not erasure


@pytest.mark.parametrize("opt,value", [("peer_filter", "correct"), ("own_floor", 0.3), ("stage1_T", 1.0)])
def test_the_extensions_are_refused_for_other_methods(opt, value):
    with pytest.raises(ConfigError, match=f"{opt}.*unless method is colam"):
        Config(method="hl", **{opt: value}).validate()


@pytest.mark.parametrize("opt,value", [("peer_filter", "some"), ("own_floor", 1.0), ("own_floor", -0.1),
                                       ("stage1_T", 0)])
def test_bad_extension_values_name_what_is_allowed(opt, value):
    with pytest.raises(ConfigError, match=opt):
        Config(method="colam", **{opt: value}).validate()


def test_stage1_T_changes_only_stage_1(tmp_path):
    """stage1_T=1 trains stage 1 as HL does (same seed, same batches: the same weights up to float rounding, the
    loss being written as CE against one-hot targets); the default T=1.5 does not."""
    base = dict(dataset="synthetic", epochs=2, stages=2, batch_size=32, lr=0.05)
    with Trainer(Config(method="hl", **base), out=tmp_path / "hl") as t:
        t.run()
    for name, T1 in (("c1", 1.0), ("c15", None)):
        with Trainer(Config(method="colam", stage1_T=T1, **base), out=tmp_path / name) as t:
            t.run_stage()
    hl = load_run(tmp_path / "hl").model(1).state_dict()
    c1, c15 = (load_run(tmp_path / n).model(1).state_dict() for n in ("c1", "c15"))
    assert all(torch.allclose(hl[k].float(), c1[k].float(), atol=1e-4) for k in hl)
    assert not all(torch.allclose(hl[k].float(), c15[k].float(), atol=1e-4) for k in hl)
