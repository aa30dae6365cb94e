"""Sweeps (paper Fig. 4), comparison tables (Tables 1-4) and expected accuracy of soft labels (Fig. 1b).

Everything trains on the tiny synthetic set (4 classes, 256 train, 1x8x8) for 2-3 epochs on the CPU.
"""
import json
import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from colam_core import Config, ConfigError, RunError, load_run
from colam_core import sweeps as S
from colam_core.errors import TrainingError
from colam_core.runs import load_soft_label_matrix
from colam_core.sweeps import sweep as SW  # the module whose Trainer the Sweep constructs

QUICK = dict(dataset="synthetic", model="small_cnn", batch_size=32, lr=0.05, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train as fast on one thread, and many short trainings on a shared machine do not
    thrash (intra-op threads spin-waiting for busy cores made them 10-100x slower)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def trainers(monkeypatch):
    """Count (and name) every Trainer constructed by the sweeps package (looked up in sweeps/sweep.py)."""
    made = []
    orig = SW.Trainer

    class Counting(orig):
        def __init__(self, cfg, out=None, *a, **kw):
            made.append(Path(out).name)
            super().__init__(cfg, out, *a, **kw)

    monkeypatch.setattr(SW, "Trainer", Counting)
    return made


def epochs_seen(log):
    """A listener recording (run folder unknown) every finished epoch."""
    def listener(ev):
        if ev.kind == "epoch":
            log.append(ev.epoch)
    return listener


# ----------------------------------------------------------------------------- expected accuracy
@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A COLAM run with two soft-label updates (3 stages of 1 epoch), non-default T and seed."""
    from colam_core import Trainer
    out = tmp_path_factory.mktemp("parent") / "colam"
    with Trainer(Config(method="colam", epochs=3, stages=3, T=2.0, seed=3, **QUICK), out=out) as t:
        t.run()
    return load_run(out)


@pytest.fixture(scope="module")
def expected_ref(parent):
    return S.expected_accuracy(parent, epochs=2, progress=False)


def test_expected_accuracy_rows_and_subrun_configs(parent, expected_ref):
    df = expected_ref
    assert list(df.columns) == ["stage", "source", "own_mass", "test_acc", "test_ece", "test_ece_T1", "best_test_acc",
                                "train_seconds", "parent_test_acc", "run_dir", "finished"]
    assert df["stage"].tolist() == [1, 2] and parent.soft_label_keys() == ["stage_1", "stage_2"]
    assert df["finished"].all()
    assert df["test_acc"].between(0, 1).all() and df["test_ece"].between(0, 1).all()
    hist = parent.history
    for _, row in df.iterrows():
        K = row["stage"]
        assert Path(row["run_dir"]) == parent.path.resolve() / "expected" / f"stage_{K}"
        sub = load_run(row["run_dir"])
        c = sub.config
        assert c["method"] == "fixed" and c["fixed_targets"] == f"{parent.path.resolve()}:stage_{K}"
        assert row["source"] == c["fixed_targets"]
        assert c["T"] == 2.0 and sub.output_temperature == 2.0
        assert c["epochs"] == 2 and sub.resolved["num_stages"] == 1 and len(sub.history) == 2
        for k in ("dataset", "model", "seed", "lr", "batch_size", "weight_decay", "schedule"):
            assert c[k] == parent.config[k], k
        np.testing.assert_array_equal(load_soft_label_matrix(c["fixed_targets"]), parent.soft_labels(K))
        assert row["own_mass"] == pytest.approx(np.diag(parent.soft_labels(K)).mean())
        assert row["test_acc"] == sub.summary["test_acc"] and row["test_ece"] == sub.summary["test_ece"]
        assert row["test_ece_T1"] == sub.summary["test_ece_T1"] != row["test_ece"]  # T = 2: two calibrations
        assert row["parent_test_acc"] == hist[hist["stage"] == K]["test_acc"].iloc[-1]


def test_expected_accuracy_skips_finished_subruns(parent, expected_ref, trainers):
    stamps = {d: (Path(d) / "summary.json").stat().st_mtime_ns for d in expected_ref["run_dir"]}
    again = S.expected_accuracy(parent, epochs=2, progress=False)
    assert trainers == []
    pd.testing.assert_frame_equal(again, expected_ref)
    assert {d: (Path(d) / "summary.json").stat().st_mtime_ns for d in again["run_dir"]} == stamps
    # asking for one stage plus the hard-label reference trains only the reference
    sel = S.expected_accuracy(parent, stages=[2], epochs=2, progress=False, include_hard=True)
    assert trainers == ["hard"]
    assert sel["stage"].tolist() == [0, 2] and sel["source"].iloc[0] == "hard labels"
    assert sel["own_mass"].iloc[0] == 1.0 and math.isnan(sel["parent_test_acc"].iloc[0])
    assert load_run(sel["run_dir"].iloc[0]).config["method"] == "hl"
    assert sel["test_acc"].iloc[1] == expected_ref["test_acc"].iloc[1]
    with pytest.raises(KeyError, match="stage_7"):
        S.expected_accuracy(parent, stages=[7], progress=False)


def test_expected_accuracy_interrupted_resumes(parent, expected_ref, tmp_path, trainers):
    done = []

    def interrupt(ev):  # Ctrl-C twice in the middle of the second sub-run, after its first epoch
        if ev.kind == "done":
            done.append(1)
        if ev.kind == "epoch" and done:
            raise KeyboardInterrupt

    out = tmp_path / "exp"
    with pytest.raises(KeyboardInterrupt):
        S.expected_accuracy(parent, out=out, epochs=2, progress=False, listeners=[interrupt])
    assert trainers == ["stage_1", "stage_2"]
    assert (out / "stage_1" / "summary.json").exists() and not (out / "stage_2" / "summary.json").exists()
    assert len(load_run(out / "stage_2").history) == 1
    stamp = (out / "stage_1" / "summary.json").stat().st_mtime_ns

    seen = []
    df = S.expected_accuracy(parent, out=out, epochs=2, progress=False, listeners=[epochs_seen(seen)])
    assert trainers == ["stage_1", "stage_2", "stage_2"]   # stage_1 skipped, stage_2 resumed
    assert seen == [2]                                      # ... from its checkpoint after epoch 1
    assert (out / "stage_1" / "summary.json").stat().st_mtime_ns == stamp
    assert df["finished"].all() and df["stage"].tolist() == [1, 2]
    # resuming is exact: the same accuracies as the uninterrupted sub-runs
    assert df["test_acc"].tolist() == expected_ref["test_acc"].tolist()
    assert df["test_ece"].tolist() == expected_ref["test_ece"].tolist()


def test_expected_accuracy_needs_soft_labels(tmp_path):
    from colam_core import Trainer
    with Trainer(Config(method="hl", epochs=1, **QUICK), out=tmp_path / "hl") as t:
        t.run()
    with pytest.raises(ValueError, match="no soft labels"):
        S.expected_accuracy(tmp_path / "hl", progress=False)
    assert not (tmp_path / "hl" / "expected").exists()


# ----------------------------------------------------------------------------- grid (Fig. 4a)
def test_interval_peers_grid_configs():
    base = Config(method="colam", epochs=4, **QUICK)
    with pytest.warns(UserWarning, match=r"t=3 skipped: it does not divide epochs=4.*1, 2, 4"):
        grid = S.interval_peers_grid(base, intervals=[1, 2, 3, 4], peers=[1, "all"])
    assert list(grid) == ["t1_k1", "t1_kall", "t2_k1", "t2_kall", "t4_k1", "t4_kall"]
    assert [c.num_stages for c in grid.values()] == [4, 4, 2, 2, 1, 1]
    assert [c.stage_epochs for c in grid.values()] == [1, 1, 2, 2, 4, 4]
    assert [c.peer_samples for c in grid.values()] == [1, "all"] * 3
    assert all(c.method == "colam" and c.epochs == 4 and c.T == base.T for c in grid.values())
    for c in grid.values():
        c.validate()
    seeded = S.interval_peers_grid(base, [2], [5], seeds=[0, 1])
    assert list(seeded) == ["t2_k5_s0", "t2_k5_s1"] and [c.seed for c in seeded.values()] == [0, 1]
    with pytest.raises(ConfigError) as e:
        S.interval_peers_grid(base.replace(method="ls"), [1], [1])
    assert e.value.option == "method"
    with pytest.raises(ConfigError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S.interval_peers_grid(base, [3, 5], ["all"])
    assert e.value.option == "intervals" and "1, 2, 4" in str(e.value)
    with pytest.raises(ConfigError, match="appears twice"):
        S.interval_peers_grid(base, [2, 2], ["all"])
    # a bad peer count is caught by the sweep's validation, naming the run
    with pytest.raises(ConfigError) as e:
        S.Sweep("unused", S.interval_peers_grid(base, [2], [0]))
    assert e.value.option == "peer_samples" and e.value.value == 0 and "t2_k0" in str(e.value)


def test_grid_sweep_interrupt_and_resume(tmp_path, trainers):
    base = Config(method="colam", epochs=2, T=1.5, **QUICK)
    grid = S.interval_peers_grid(base, intervals=[1, 2], peers=[1, "all"])
    root = tmp_path / "fig4a"
    sweep = S.Sweep(root, grid)

    # 1) only the first run
    res = sweep.run(progress=False, max_runs=1)
    assert trainers == ["t1_k1"]
    assert res["name"].tolist() == ["t1_k1", "t1_kall", "t2_k1", "t2_kall"]
    assert res["finished"].tolist() == [True, False, False, False]
    assert res["test_acc"].isna().tolist() == [False, True, True, True]
    assert sweep.status()["state"].tolist() == ["finished", "new", "new", "new"]
    stamp = (root / "t1_k1" / "summary.json").stat().st_mtime_ns

    # 2) a clean stop in the middle of the second run
    def stop_after_first_epoch(ev):
        if ev.kind == "epoch" and sweep.current == "t1_kall":
            sweep.request_stop()

    res = sweep.run(progress=False, listeners=[stop_after_first_epoch])
    assert sweep.stopped and trainers == ["t1_k1", "t1_kall"]
    st = sweep.status()
    assert st["state"].tolist() == ["finished", "partial", "new", "new"]
    assert st["epochs_done"].tolist() == [2, 1, 0, 0] and st["total_epochs"].tolist() == [2] * 4

    # 3) resume: the finished run is not retrained, the partial one continues at epoch 2
    seen = []
    res = sweep.run(progress=False, listeners=[epochs_seen(seen)])
    assert not sweep.stopped
    assert trainers == ["t1_k1", "t1_kall", "t1_kall", "t2_k1", "t2_kall"]
    assert seen == [2, 1, 2, 1, 2]
    assert (root / "t1_k1" / "summary.json").stat().st_mtime_ns == stamp
    assert res["finished"].all() and (sweep.status()["state"] == "finished").all()

    # the results table reads the run folders
    assert res["interval"].tolist() == [1, 1, 2, 2] and res["stages"].tolist() == [2, 2, 1, 1]
    assert res["peer_samples"].tolist() == [1, "all", 1, "all"]
    for _, r in res.iterrows():
        s = json.loads((root / r["name"] / "summary.json").read_text())
        assert r["test_acc"] == s["test_acc"] and r["test_ece"] == s["test_ece"]
        assert r["best_test_acc"] == s["best_test_acc"] and r["train_seconds"] == s["train_seconds"]
        if r["interval"] == 1:  # two stages: one soft-label update
            assert r["own_mass_stage_1"] == pytest.approx(s["soft_label_own_mass"]["stage_1"])
        else:
            assert math.isnan(r["own_mass_stage_1"])
    table = S.grid_table(res)
    assert table.shape == (2, 2) and table.index.tolist() == [1, 2] and table.columns.tolist() == [1, "all"]
    assert table.loc[2, "all"] == res.set_index("name").loc["t2_kall", "test_acc"]
    assert table.loc[1, 1] == res.set_index("name").loc["t1_k1", "test_acc"]
    # the sweep can be reopened from its folder (another process, a notebook)
    reopened = S.Sweep.open(root)
    assert reopened.names == sweep.names
    pd.testing.assert_frame_equal(reopened.results(), res)
    assert trainers == ["t1_k1", "t1_kall", "t1_kall", "t2_k1", "t2_kall"]


def test_grid_table_ordering_and_formatting():
    res = pd.DataFrame({
        "interval": [2, 2, 1, 1, 2, 1],
        "peer_samples": ["all", 10, 10, "all", 10, 1],
        "test_acc": [0.5, 0.6, 0.7, 0.8, 0.7, np.nan],
    })
    t = S.grid_table(res)
    assert t.index.tolist() == [1, 2] and t.columns.tolist() == [1, 10, "all"]
    assert t.loc[2, 10] == pytest.approx(0.65) and t.loc[1, "all"] == 0.8 and math.isnan(t.loc[1, 1])
    f = S.grid_table(res, agg="mean ± std", scale=100, decimals=1)
    assert f.loc[2, 10] == f"65.0 ± {100 * statistics.stdev([0.6, 0.7]):.1f}" and f.loc[1, 1] == "-"
    assert f.loc[1, 10] == "70.0"
    assert S.grid_table(res, agg="count").loc[2, 10] == 2
    with pytest.raises(KeyError):
        S.grid_table(res, value="nope")


# ----------------------------------------------------------------------------- tables (Fig. 4b, Tables 1-4)
def test_temperature_sweep_table_hand_values(tmp_path):
    base = Config(method="colam", epochs=2, stages=2, **QUICK)
    cfgs = S.temperature_sweep(base, [2.0, 1.0], seeds=[0, 1])
    assert list(cfgs) == ["T2.0_s0", "T2.0_s1", "T1.0_s0", "T1.0_s1"]
    assert [c.T for c in cfgs.values()] == [2.0, 2.0, 1.0, 1.0]
    res = S.Sweep(tmp_path / "temp", cfgs).run(progress=False)
    t = S.temperature_table(res, scale=100, decimals=2)
    assert t["T"].tolist() == [1.0, 2.0] and t["n"].tolist() == [2, 2]
    assert list(t.columns) == ["T", "n", "test_acc_mean", "test_acc_std", "test_acc",
                               "test_ece_mean", "test_ece_std", "test_ece",
                               "test_ece_T1_mean", "test_ece_T1_std", "test_ece_T1"]
    shown = S.labelled(t)
    assert list(shown.columns)[5:] == ["ECE softmax(z/T) mean", "ECE softmax(z/T) std", "ECE softmax(z/T)",
                                       "ECE softmax(z) mean", "ECE softmax(z) std", "ECE softmax(z)"]
    assert shown["ECE softmax(z)"].tolist() == t["test_ece_T1"].tolist()
    for i, T in enumerate([1.0, 2.0]):
        for m in ("test_acc", "test_ece", "test_ece_T1"):
            vals = [100 * json.loads((tmp_path / "temp" / f"T{T!r}_s{s}" / "summary.json").read_text())[m]
                    for s in (0, 1)]
            mean, std = statistics.mean(vals), statistics.stdev(vals)
            assert t.loc[i, f"{m}_mean"] == pytest.approx(mean)
            assert t.loc[i, f"{m}_std"] == pytest.approx(std)
            assert t.loc[i, m] == f"{mean:.2f} ± {std:.2f}"
    with pytest.raises(ConfigError):
        S.temperature_sweep(base.replace(method="hl"), [1.0])


def test_tables_show_both_eces_and_old_results_without_ece_at_T1():
    res = pd.DataFrame({"label": ["hl", "hl", "colam", "colam"], "T": [1.0, 1.0, 1.5, 1.5], "seed": [0, 1, 0, 1],
                        "test_acc": [0.90, 0.92, 0.93, 0.94], "test_ece": [0.02, 0.03, 0.10, 0.12],
                        "test_ece_T1": [0.02, 0.03, np.nan, 0.05]})  # colam_s0 was written before test_ece_T1
    t = S.methods_table(res, scale=100, decimals=2)
    assert t["mean ± std"].tolist() == ["91.00 ± 1.41", "93.50 ± 0.71"]
    assert t["test_ece"].tolist() == ["2.50 ± 0.71", "11.00 ± 1.41"]
    assert t["test_ece_T1"].tolist() == ["2.50 ± 0.71", "5.00"] and t["test_ece_T1_mean"].tolist() == [2.5, 5.0]
    tt = S.labelled(S.temperature_table(res, scale=100, decimals=2))
    assert tt["ECE softmax(z/T)"].tolist() == ["2.50 ± 0.71", "11.00 ± 1.41"]
    assert tt["ECE softmax(z)"].tolist() == ["2.50 ± 0.71", "5.00"]
    # results of runs that all predate test_ece_T1 (no column at all): the column is there, empty, not an error
    old = res.drop(columns="test_ece_T1")
    for table in (S.methods_table(old), S.temperature_table(old)):
        assert table["test_ece_T1"].tolist() == ["-", "-"] and table["test_ece_T1_mean"].isna().all()
        assert table["test_ece"].tolist()[0] == "0.0250 ± 0.0071"
    with pytest.raises(KeyError):  # other missing metrics still say so
        S.temperature_table(res, metrics=["test_acc", "nope"])
    assert list(S.methods_table(res, also=()).columns) == ["label", "mean", "std", "n", "mean ± std"]


def test_evidence_report_labels_both_eces():
    from colam_core.sweeps import evidence as E
    table = pd.DataFrame([{"setting": "COLAM (short)", "seeds": 3, "acc_mean": 0.9, "acc_std": 0.01, "diff_mean": 0.01,
                           "diff_low": -0.01, "diff_high": 0.03, "wins": 2, "paired": 3, "ece_T": 0.143, "ece_1": 0.072,
                           "min_class_acc": 0.5, "erased_per_run": 0.0, "erased_acc": np.nan, "erasures_any": 0,
                           "own_mass_last": 0.8, "template_ratio": np.nan}])
    header, _, row = E.summary_markdown(table).splitlines()
    cells = dict(zip([h.strip() for h in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))
    assert cells["ECE softmax(z/T)"] == "0.143" and cells["ECE softmax(z)"] == "0.072"


def test_methods_seeds_table_hand_values(tmp_path):
    base = Config(method="colam", epochs=2, stages=2, **QUICK)
    cfgs = S.methods_seeds(base, ["hl", ("ls0.2", {"method": "ls", "ls_eps": 0.2}), "colam"], seeds=[0, 1])
    assert list(cfgs) == ["hl_s0", "hl_s1", "ls0.2_s0", "ls0.2_s1", "colam_s0", "colam_s1"]
    assert [c.method for c in cfgs.values()] == ["hl", "hl", "ls", "ls", "colam", "colam"]
    assert [c.num_stages for c in cfgs.values()] == [1, 1, 1, 1, 2, 2]
    assert cfgs["ls0.2_s1"].ls_eps == 0.2 and cfgs["ls0.2_s1"].seed == 1
    sweep = S.Sweep(tmp_path / "tab", {k: v for k, v in cfgs.items() if not k.startswith("colam")})
    res = sweep.run(progress=False)
    assert res["label"].tolist() == ["hl", "hl", "ls0.2", "ls0.2"]
    assert "ls_eps" in res.columns  # a varied option becomes a column
    t = S.methods_table(res, scale=100, decimals=2)
    assert t["label"].tolist() == ["hl", "ls0.2"] and t["n"].tolist() == [2, 2]
    for i, label in enumerate(["hl", "ls0.2"]):
        vals = [100 * load_run(tmp_path / "tab" / f"{label}_s{s}").summary["test_acc"] for s in (0, 1)]
        assert t.loc[i, "mean"] == pytest.approx(statistics.mean(vals))
        assert t.loc[i, "std"] == pytest.approx(statistics.stdev(vals))
        assert t.loc[i, "mean ± std"] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
        for m in ("test_ece", "test_ece_T1"):  # calibration both ways beside accuracy
            vals = [100 * load_run(tmp_path / "tab" / f"{label}_s{s}").summary[m] for s in (0, 1)]
            assert t.loc[i, f"{m}_mean"] == pytest.approx(statistics.mean(vals))
            assert t.loc[i, m] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    assert {"ECE softmax(z/T)", "ECE softmax(z)"} <= set(S.labelled(t).columns)
    # unfinished runs do not count
    partial = S.Sweep(tmp_path / "tab", cfgs).results()
    tp = S.methods_table(partial)
    assert tp["label"].tolist() == ["hl", "ls0.2", "colam"] and tp["n"].tolist() == [2, 2, 0]
    assert tp["mean ± std"].iloc[2] == "-"
    with pytest.raises(ConfigError) as e:
        S.methods_seeds(base, {"ls": {"ls_epsilon": 0.2}}, seeds=[0])
    assert e.value.option == "ls_epsilon"


# ----------------------------------------------------------------------------- validation
def test_invalid_config_fails_before_any_run_dir(tmp_path, trainers):
    good = Config(method="hl", epochs=1, **QUICK)
    root = tmp_path / "sweep"
    with pytest.raises(ConfigError) as e:
        S.Sweep(root, {"ok": good, "bad": good.replace(T=-1.0)})
    assert e.value.option == "T" and e.value.value == -1.0 and "'bad'" in str(e.value)
    with pytest.raises(ConfigError) as e:
        S.Sweep(root, {"ok": good, "bad": {"method": "hl", "epochz": 3}})
    assert e.value.option == "epochz"
    with pytest.raises(ConfigError) as e:
        S.Sweep(root, {"ok": good, "bad": good.replace(method="fixed", fixed_targets=str(tmp_path / "x:stage_1"))})
    assert e.value.option == "fixed_targets"
    for bad in ("a/b", "../x", "", ".hidden", "con", "a b", "x" * 200):
        with pytest.raises(ConfigError) as e:
            S.Sweep(root, {bad: good})
        assert e.value.option == "name"
    with pytest.raises(ConfigError, match="already a run"):
        S.Sweep(root, {"Run": good, "run": good.replace(seed=1)})
    assert not root.exists() and trainers == []


def test_folder_with_another_run_fails_before_training(tmp_path, trainers):
    good = Config(method="hl", epochs=1, **QUICK)
    root = tmp_path / "sweep"
    (root / "second").mkdir(parents=True)
    other = good.replace(seed=9).fingerprint()
    (root / "second" / "config.json").write_text(json.dumps({"config": {}, "fingerprint": other}))
    sweep = S.Sweep(root, {"first": good, "second": good})
    assert sweep.status()["state"].tolist() == ["new", "conflict"]
    with pytest.raises(RunError, match="seed: 9 there, 0 here"):
        sweep.run(progress=False)
    assert trainers == [] and not (root / "first").exists()


def test_list_of_configs_gets_names_from_varied_options(tmp_path):
    base = Config(method="colam", epochs=2, stages=2, **QUICK)
    s = S.Sweep(tmp_path / "l", [base.replace(T=1.0), base.replace(T=2.0, seed=1)])
    assert s.names == ["T=1.0_seed=0", "T=2.0_seed=1"]
    assert S.Sweep(tmp_path / "l", [base]).names == ["run_000"]
    assert S.Sweep(tmp_path / "l", [base.replace(name="mine"), base.replace(seed=2)]).names == ["mine", "seed=2"]
    with pytest.raises(ConfigError, match="already a run"):
        S.Sweep(tmp_path / "l", [base.replace(name="x"), base.replace(name="x", seed=1)])
    res = s.results()  # nothing trained: one row per run, all NaN
    assert len(res) == 2 and not res["finished"].any() and res["test_acc"].isna().all()
    assert res["T"].tolist() == [1.0, 2.0] and res["state"].tolist() == ["new", "new"]


def test_errors_continue_records_a_failed_run_and_goes_on(tmp_path, monkeypatch):
    class Failing(SW.Trainer):
        def run(self):
            if self.out.name == "b":
                raise TrainingError("non-finite loss (simulated)")
            return super().run()

    monkeypatch.setattr(SW, "Trainer", Failing)
    good = Config(method="hl", epochs=1, **QUICK)
    sweep = S.Sweep(tmp_path / "s", {"a": good, "b": good.replace(seed=1), "c": good.replace(seed=2)})
    with pytest.raises(TrainingError):
        sweep.run(progress=False)
    assert sweep.status()["state"].tolist() == ["finished", "partial", "new"]
    res = sweep.run(progress=False, errors="continue")
    assert res["state"].tolist() == ["finished", "partial", "finished"]
    assert res["error"].isna().tolist() == [True, False, True]
    assert res["error"].iloc[1] == "non-finite loss (simulated)"
    assert sweep.errors == {"b": "non-finite loss (simulated)"}
    with pytest.raises(ValueError, match="errors"):
        sweep.run(progress=False, errors="ignore")


def test_expected_accuracy_partial_table_keeps_hard_weight(tmp_path):
    from colam_core import Trainer
    with Trainer(Config(method="colam", epochs=2, stages=2, hard_weight=0.2, **QUICK), out=tmp_path / "p") as t:
        t.run()
    df = S.expected_accuracy(tmp_path / "p", progress=False, max_runs=0)
    assert df["stage"].tolist() == [1] and not df["finished"].any() and df["test_acc"].isna().all()
    assert df["own_mass"].iloc[0] == pytest.approx(np.diag(load_run(tmp_path / "p").soft_labels(1)).mean())
    sub = S.Sweep.open(tmp_path / "p" / "expected").configs["stage_1"]
    assert sub.method == "fixed" and sub.hard_weight == 0.2 and sub.epochs == 2  # trains on what stage 2 did


def test_fixed_targets_from_an_earlier_run_of_the_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLAM_PROGRESS", "text")  # text bars also when stderr is not a terminal
    root = tmp_path / "chain"
    colam = Config(method="colam", epochs=2, stages=2, T=1.5, **QUICK)
    fixed = Config(method="fixed", fixed_targets=f"{root / 'colam'}:stage_1", T=1.5, epochs=1, **QUICK)
    with pytest.raises(ConfigError) as e:  # the producer must train first
        S.Sweep(root, {"fixed": fixed, "colam": colam})
    assert e.value.option == "fixed_targets" and "earlier run" in str(e.value)
    sweep = S.Sweep(root, {"colam": colam, "fixed": fixed})  # the labels do not exist yet: fine
    res = sweep.run(progress=True)
    assert res["finished"].all() and "sweep chain" in capsys.readouterr().err
    np.testing.assert_array_equal(load_soft_label_matrix(fixed.fixed_targets), load_run(root / "colam").soft_labels(1))
