"""Campaigns: YAML sweep specs planned into ROOT/sweep.json, workers that share a sweep, status and results.

The Slurm side (job arrays, requeue) is tests/test_slurm.py; here everything runs in this process or in `colam sweep`
subprocesses, on digits with 2 epochs.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from colam_core import Config
from colam_core.cli import main
from colam_core.sweeps import Campaign, Sweep, load_spec, presets

sys.path.insert(0, str(Path(__file__).parent))
import datafiles  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = """\
base: {dataset: digits, model: small_cnn, epochs: 4, stages: 2}
grid: {method: [hl, colam], seed: [0, 1, 2]}
"""
SMALL = "base: {dataset: digits, model: small_cnn, epochs: 2, stages: 2}\n"


def write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def colam(*args, env=None, **kw):
    """`colam ...` in a subprocess (one thread, as the whole suite)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "colam_core", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, **kw)


def plan(tmp_path, text):
    root = tmp_path / "root"
    assert main(["sweep", "plan", str(write(tmp_path, text)), "--out", str(root)]) == 0
    return root


# ----------------------------------------------------------------------------- plan
def test_minimal_spec_plans_as_written(tmp_path, capsys):
    root = tmp_path / "root"
    spec = write(tmp_path, MINIMAL)
    assert main(["sweep", "plan", str(spec), "--out", str(root)]) == 0
    out = capsys.readouterr().out
    assert "6 runs" in out and "24 epochs" in out
    sweep = Sweep.open(root)
    assert sweep.names == ["hl_s0", "hl_s1", "hl_s2", "colam_s0", "colam_s1", "colam_s2"]
    for name, cfg in sweep.configs.items():
        method, seed = name.split("_s")
        want = Config(dataset="digits", model="small_cnn", epochs=4, stages=2, method=method, seed=int(seed))
        assert cfg.fingerprint() == want.fingerprint()
    assert not any(p.is_dir() for p in root.iterdir())  # planning trains nothing
    # planning the same spec again changes nothing; another spec is refused unless --replace
    before = (root / "sweep.json").read_text()
    assert main(["sweep", "plan", str(spec), "--out", str(root)]) == 0
    other = write(tmp_path, MINIMAL.replace("seed: [0, 1, 2]", "seed: [0]"), "other.yaml")
    assert main(["sweep", "plan", str(other), "--out", str(root)]) == 2
    assert "different plan" in capsys.readouterr().err
    assert json.loads((root / "sweep.json").read_text())["runs"] == json.loads(before)["runs"]
    assert main(["sweep", "plan", str(other), "--out", str(root), "--replace"]) == 0
    assert Sweep.open(root).names == ["hl_s0", "colam_s0"]


BAD_SPECS = {
    "unknown option": (SMALL.replace("stages: 2", "stages: 2, lr_rate: 0.1") + "grid: {method: [hl]}\n",
                       "base", "lr_rate"),
    "bad value in one cell": (SMALL + "grid: {method: [colam], T: [1.5, -1]}\n", "colam_T-1.0", "T"),
    "bad value in a variant": (SMALL + "grid: {method: [hl, {label: ls2, method: ls, ls_eps: 2}]}\n", "ls2",
                               "ls_eps"),
    "dependency on a missing entry": (SMALL + "grid: {method: [hl]}\nruns: {fx: {method: fixed, fixed_targets: "
                                      "'@colam:stage_1'}}\n", "fx", "fixed_targets"),
    "dependency on a stage never learned": (SMALL + "runs: {colam: {method: colam}, fx: {method: fixed, "
                                            "fixed_targets: '@colam:stage_2'}}\n", "fx", "fixed_targets"),
    "duplicate name": (SMALL + "grid: {method: [hl], seed: [0, 0]}\n", "hl_s0", "name"),
    "a run named like a grid entry": (SMALL + "grid: {method: [hl]}\nruns: {HL: {method: ls}}\n", "HL", "name"),
    "interval that does not divide": (SMALL + "grid: {interval: [3]}\n", "t3", "interval"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_fails_at_plan_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    text, entry, option = BAD_SPECS[case]
    root = tmp_path / "root"
    assert main(["sweep", "plan", str(write(tmp_path, text)), "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"entry {entry!r}" in err and f"option {option} " in err, err
    assert not root.exists()


TRANSFER_SETS = ("cub200", "dogs120", "indoor67", "caltech256")  # the folders table4_transfer.yaml names


def test_shipped_specs_plan_and_say_where_the_paper_is_silent(tmp_path, capsys):
    rng = np.random.default_rng(0)
    datafiles.write_cifar10(tmp_path / "c10", rng)
    datafiles.write_cifar100(tmp_path / "c100", rng)
    datafiles.write_folder(tmp_path / "img")
    datafiles.write_fashion(tmp_path / "fm", rng, gz=False)
    for name in TRANSFER_SETS:
        datafiles.write_folder(tmp_path / "t4" / name)
    roots = {"cifar10": "c10", "cifar100": "c100", "imagefolder": "img", "fashion_mnist": "fm",
             "table4_transfer": "t4"}  # Table 4: one image folder per data set, under one data_root
    runs = {}
    assert main(["sweep", "list"]) == 0
    listed = capsys.readouterr().out
    assert "table4_transfer" in presets() and "Paper Table 4: transfer learning" in listed
    for name, path in presets().items():
        assert name in listed
        spec, _ = load_spec(preset=name)
        ds = spec["base"]["dataset"]
        root = roots.get(name) or roots.get(ds)
        sets = ["--set", f"data_root={tmp_path / root}"] if root else []
        assert main(["sweep", "plan", "--preset", name, "--out", str(tmp_path / name), *sets]) == 0, name
        camp = Campaign(tmp_path / name)
        runs[name] = (len(camp), len(camp.depends))
        if name.startswith(("table", "fig", "resnet56")):
            assert "our choice" in path.read_text(), f"{name} must name its choices where the paper is silent"
    assert runs["table1_cifar10"] == runs["table2_cifar100"] == (60, 0)  # 5 methods x 4 models x 3 seeds
    assert runs["table4_transfer"] == (60, 0)                             # 4 data sets x 5 methods x 3 seeds
    assert runs["fig4a_interval_peers"] == (30, 0)                        # 6 intervals x 5 peer counts
    assert runs["fig1b_expected_cifar100"] == (11, 9)                     # parent, hard, 9 expected runs
    t1 = Campaign(tmp_path / "table1_cifar10").sweep.configs
    assert t1["densenet_bc_100_hl_s0"].epochs == 240 and t1["wrn40_4_colam_s2"].epochs == 160  # the paper recipe
    assert t1["wrn40_4_colam_s0"].num_stages == 4 and t1["wrn40_4_ls_s0"].num_stages == 1
    fig4a = Campaign(tmp_path / "fig4a_interval_peers").sweep.configs
    assert {c.model for c in fig4a.values()} == {"preact_resnet18"}
    assert sorted({c.stage_epochs for c in fig4a.values()}) == [2, 5, 10, 20, 40, 80]
    # Table 4: the paper's transfer setting (the transfer preset), each data set its own folder under data_root
    t4 = Campaign(tmp_path / "table4_transfer")
    c = t4.sweep.configs["indoor67_colam_s2"]
    assert (c.dataset, c.data_root, c.model, c.pretrained) == ("imagefolder", str(tmp_path / "t4" / "indoor67"),
                                                               "resnet101", True)
    assert (c.epochs, c.lr, c.batch_size, c.momentum, c.weight_decay, c.preset) == (40, 0.01, 64, 0.9, 1e-4, "transfer")
    assert (c.num_stages, c.T, c.seed) == (4, 1.5, 2) and t4.sweep.configs["cub200_dl_s0"].num_stages == 1
    assert {n.split("_")[0] for n in t4.names} == set(TRANSFER_SETS)
    table = t4.table()[1]  # one row per data set and method, never averaged across data sets
    assert len(table) == 20 and set(table["data"]) == set(TRANSFER_SETS)


def test_table4_plans_offline_with_a_weights_file_and_trains_an_entry(tmp_path, capsys):
    """A resnet101 state dict the test writes stands in for torchvision's ImageNet weights (no download); tiny image
    folders for the four data sets; one entry trained at 32 pixels for a few epochs."""
    import torch
    import torchvision
    for name in TRANSFER_SETS:
        datafiles.write_folder(tmp_path / "data" / name)
    weights = tmp_path / "resnet101.pth"
    # zero_init_residual: every residual block starts as an identity, as trained ones roughly are; 101 layers of plain
    # random weights give eval-mode logits that overflow, and COLAM's update rightly stops on them
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet101(weights=None, zero_init_residual=True).state_dict(), weights)
    root = tmp_path / "t4"
    # data_root is what the entries' "{data_root}/NAME" folders are filled from: without it the plan is refused
    assert main(["sweep", "plan", "--preset", "table4_transfer", "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entry 'cub200'" in err and "option data_root" in err and "--set data_root" in err
    assert main(["sweep", "plan", "--preset", "table4_transfer", "--out", str(root), "--set", f"data_root={tmp_path}/data",
                 "--set", "pretrained=/no/such/weights.pth"]) == 2
    assert "option pretrained" in capsys.readouterr().err and not root.exists()
    smoke = ["image_size=32", "epochs=4", "batch_size=4", "num_workers=0", "device=cpu"]
    assert main(["sweep", "plan", "--preset", "table4_transfer", "--out", str(root), "--set", f"data_root={tmp_path}/data",
                 "--set", f"pretrained={weights}", *[a for s in smoke for a in ("--set", s)]]) == 0
    camp = Campaign(root)
    assert len(camp) == 60 and camp.sweep.configs["caltech256_colam_s1"].pretrained == str(weights)
    assert main(["sweep", "run", str(root), "--index", "12", "--quiet"]) == 0  # cub200_colam_s0: 4 stages of 1 epoch
    assert "cub200_colam_s0: trained" in capsys.readouterr().out
    run = camp.sweep.run_dir("cub200_colam_s0")
    assert json.loads((run / "summary.json").read_text())["epochs"] == 4
    assert json.loads((run / "config.json").read_text())["config"]["pretrained"] == str(weights)
    assert main(["sweep", "results", str(root)]) == 0
    out = capsys.readouterr().out
    assert "data" in out.splitlines()[1] and any(line.split()[:3] == ["cub200", "colam", "1"]
                                                 for line in out.splitlines())


def test_set_overrides_every_entry_and_fills_templates(tmp_path, capsys):
    """`--set` is an option for every entry: over the base, the variants that set it, and a grid axis of it (which
    becomes that one value, named so); `{data_root}` in a spec value is filled from it."""
    text = SMALL + ("grid:\n  model: [small_cnn, resnet20]\n  method: [hl, {label: colam, method: colam, T: 1.5}]\n"
                    "  seed: [0, 1]\n")
    root = tmp_path / "root"
    spec = write(tmp_path, text)
    assert main(["sweep", "plan", str(spec), "--out", str(root), "--set", "model=small_cnn", "--set", "seed=1",
                 "--set", "T=2.0"]) == 0
    camp = Campaign(root)
    assert camp.names == ["small_cnn_hl_s1", "small_cnn_colam_s1"] and camp.plan["overrides"]["T"] == 2.0
    assert all(c.T == 2.0 and c.seed == 1 for c in camp.sweep.configs.values())
    # templates: a variant's data_root under the base's, which --set gives
    folders = SMALL + ("grid:\n  data: [{label: a, data_root: '{data_root}/a'}, {label: b, data_root: '{data_root}/b'}]\n"
                       "  method: [hl, {label: colam, method: colam}]\n")
    spec = write(tmp_path, folders, "folders.yaml")
    assert main(["sweep", "plan", str(spec), "--out", str(tmp_path / "f")]) == 2
    assert "option data_root = '{data_root}/a'" in capsys.readouterr().err
    assert main(["sweep", "plan", str(spec), "--out", str(tmp_path / "f"), "--set", "data_root=/d"]) == 0
    f = Campaign(tmp_path / "f")
    assert {n: c.data_root for n, c in f.sweep.configs.items()} == {"a_hl": "/d/a", "a_colam": "/d/a", "b_hl": "/d/b",
                                                                    "b_colam": "/d/b"}
    res = f.sweep.results()
    assert res.set_index("name").loc["b_colam", ["data", "label"]].tolist() == ["b", "colam"]  # both variants' labels
    assert main(["sweep", "plan", "--preset", "digits_interval_peers", "--out", str(tmp_path / "i"),
                 "--set", "stages=2"]) == 2
    assert "option stages" in capsys.readouterr().err


# ----------------------------------------------------------------------------- what the notebooks call
def test_notebook_sweep_plans_once_reopens_and_reports(tmp_path):
    from colam_core import sweeps
    from colam_core.errors import ConfigError, RunError
    spec = write(tmp_path, SMALL + "grid: {method: [hl, colam]}\n")
    root = tmp_path / "root"
    planned = sweeps.notebook_sweep(str(spec), root)
    assert not root.exists() and "to be planned in" in planned.describe()  # nothing written before open()
    assert planned.entry(1) == planned.entry("colam") == "colam"
    with pytest.raises(ConfigError, match="entry: .*did you mean 'colam'.*index 0..1"):
        planned.entry("colm")
    camp = planned.open()
    assert (root / "sweep.json").is_file() and camp.names == ["hl", "colam"]
    again = sweeps.notebook_sweep(str(spec), root)  # the same parameters reopen the plan
    assert again.planned and "planned before in" in again.describe()
    with pytest.raises(RunError, match="different plan .*device"):
        sweeps.notebook_sweep(str(spec), root, device="cpu")  # planned with device auto: refused, nothing written
    report = sweeps.sweep_report(camp)
    assert report.startswith(f"0 of 2 entries of {root} are done") and f"colam sweep run {root.resolve()} --worker" in report
    assert sweeps.train_entry(camp, "hl", progress=False) == "hl: trained"
    assert sweeps.train_entry(camp, "hl", progress=False) == "hl: done"
    assert "done: 2/2 epochs" in sweeps.describe_entry(camp, "hl", estimate=False)
    assert "test accuracy 0." in sweeps.describe_entry(camp, "hl", estimate=False)
    assert "ms per batch" in sweeps.describe_entry(camp, "colam")  # the estimate, on a copy
    assert not (root / "colam").exists()
    assert sweeps.train_sweep(camp, progress=False) == f"{root}: 1 entries trained here, 0 failed"
    assert sweeps.sweep_report(camp) == sweeps.sweep_results(camp).text
    assert sweeps.sweep_report(camp, table=False) == f"all 2 entries of {root} are done"
    with pytest.raises(ConfigError, match="spec: .*did you mean 'digits_methods'"):
        sweeps.notebook_sweep("digits_method", tmp_path / "x")
    with pytest.raises(ConfigError, match="spec_grid: .*results table is 'grid'"):
        sweeps.notebook_sweep("digits_temperature", tmp_path / "x", parameter="spec_grid", table="grid")


def test_a_failed_entry_raises_with_its_error_line(tmp_path):
    from colam_core import sweeps
    from colam_core.errors import RunError
    camp = sweeps.notebook_sweep(str(write(tmp_path, SMALL + "grid: {method: [hl]}\n")), tmp_path / "root").open()
    (tmp_path / "root" / "hl").mkdir()
    (tmp_path / "root" / "hl" / "config.json").write_text(json.dumps({"config": {}, "fingerprint": {"method": "cp"}}))
    with pytest.raises(RunError, match="hl: failed .*another configuration|hl: failed"):
        sweeps.train_entry(camp, "hl", progress=False)


# ----------------------------------------------------------------------------- run, status, results
def test_index_status_results_and_a_failed_entry(tmp_path, capsys):
    root = plan(tmp_path, SMALL + "grid: {method: [hl, ls]}\npaper: [{label: hl, test_acc: 50.0}]\n")
    # entry 1's folder now holds another run: its attempt fails, and status keeps the error line
    (root / "ls").mkdir()
    (root / "ls" / "config.json").write_text(json.dumps({"config": {}, "fingerprint": {"method": "cp"}}))
    assert main(["sweep", "run", str(root), "--index", "1", "--quiet"]) == 1
    assert main(["sweep", "run", str(root), "--index", "0", "--quiet"]) == 0
    assert main(["sweep", "run", str(root), "--index", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "hl: trained" in out and "hl: done" in out
    assert main(["sweep", "status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2 entries: 1 done, 0 running, 0 pending, 1 failed" in out
    assert "another configuration" in out.splitlines()[-1]
    csv, md = tmp_path / "t.csv", tmp_path / "t.md"
    assert main(["sweep", "results", str(root), "--csv", str(csv), "--markdown", str(md)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(csv)
    hl = table.set_index("label").loc["hl"]
    assert hl["n"] == 1 and hl["paper"] == 50.0 and hl["diff"] == pytest.approx(hl["mean"] - 50.0)
    summary = json.loads((root / "hl" / "summary.json").read_text())
    assert hl["mean"] == pytest.approx(100 * summary["test_acc"])
    # calibration both ways, labelled, with summary.json's numbers (in %), in the CSV, the Markdown and the print
    ece, ece1 = 100 * summary["test_ece"], 100 * summary["test_ece_T1"]
    assert hl["ECE softmax(z/T) mean"] == pytest.approx(ece) and hl["ECE softmax(z) mean"] == pytest.approx(ece1)
    assert "test_ece" not in table.columns and "test_ece_T1" not in table.columns
    text = md.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| label |"))
    cells = dict(zip(header.strip("|").split(" | "), next(line for line in text.splitlines()
                                                        if line.startswith("| hl |")).strip("|").split(" | ")))
    assert {k.strip(): v.strip() for k, v in cells.items()}["ECE softmax(z/T)"] == f"{ece:.2f}"
    assert {k.strip(): v.strip() for k, v in cells.items()}["ECE softmax(z)"] == f"{ece1:.2f}"
    assert "ECE softmax(z/T)" in printed and "ECE softmax(z)" in printed and f"{ece1:.2f}" in printed
    assert main(["sweep", "run", str(root), "--index", "7"]) == 2


def fake_results(old=False):
    """Results of a finished interval x peers x T grid, two seeds a cell, without training (``old``: runs written
    before summary.json had test_ece_T1, so their results have NaN there)."""
    rows = []
    for i, (t, k, T) in enumerate([(1, 1, 1.0), (1, "all", 1.0), (2, 1, 1.5), (2, "all", 1.5)]):
        for seed in (0, 1):
            rows.append({"name": f"r{i}_s{seed}", "dataset": "digits", "model": "small_cnn", "method": "colam",
                         "label": "colam", "seed": seed, "interval": t, "peer_samples": k, "T": T,
                         "test_acc": 0.5 + 0.1 * i + 0.01 * seed, "test_ece": 0.10 + 0.01 * i + 0.002 * seed,
                         "test_ece_T1": np.nan if old else 0.05 + 0.01 * i + 0.002 * seed})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("old", [False, True], ids=["new runs", "runs without test_ece_T1"])
def test_results_tables_show_ece_both_ways_labelled(tmp_path, capsys, monkeypatch, old):
    root = plan(tmp_path, SMALL + "grid: {method: [colam]}\npaper: [{interval: 1, peer_samples: 1, test_acc: 50}]\n")
    res = fake_results(old)
    monkeypatch.setattr(Campaign, "results", lambda self: res)
    capsys.readouterr()
    for kind in ("grid", "temperature", "methods"):
        csv, md = tmp_path / f"{kind}.csv", tmp_path / f"{kind}.md"
        assert main(["sweep", "results", str(root), "--table", kind, "--csv", str(csv), "--markdown", str(md)]) == 0
        printed, text, long = capsys.readouterr().out, md.read_text(), pd.read_csv(csv)
        for label in ("ECE softmax(z/T)", "ECE softmax(z)"):
            assert label in printed and label in text and f"{label} mean" in long.columns, (kind, label)
        assert "ECE softmax(z/T): of softmax(z / T)" in printed and "ECE softmax(z): of softmax(z)" in text
        key = {"grid": ["interval", "peer_samples"], "temperature": ["T"], "methods": ["label"]}[kind]
        want = res.assign(**{c: res[c].astype(str) for c in key}).groupby(key)
        got = long.assign(**{c: long[c].astype(str) for c in key}).set_index(key)
        for m, label in (("test_ece", "ECE softmax(z/T)"), ("test_ece_T1", "ECE softmax(z)")):
            mean = (100 * want[m].mean()).reindex(got.index)
            np.testing.assert_allclose(got[f"{label} mean"].to_numpy(float), mean.to_numpy(float), equal_nan=True)
            if old and m == "test_ece_T1":
                assert got[label].isna().all() or (got[label].astype(str) == "-").all()
        if kind == "grid":  # one grid per ECE below the accuracy grid, same rows and columns
            assert "ECE softmax(z/T) (%): update interval t" in printed and "ECE softmax(z) (%): update interval t" in text
            cell = f"{100 * res['test_ece'][:2].mean():.2f} ± {100 * res['test_ece'][:2].std():.2f}"
            assert cell in text.split("ECE softmax(z/T) (%)")[1].split("ECE softmax(z) (%)")[0]
            assert ("| 1 | - | - |" if old else "| 1 | 5.10 ± 0.14 | 6.10 ± 0.14 |") in text.split("ECE softmax(z) (%)")[1]


def test_two_workers_train_every_run_once_and_children_wait_for_their_parent(tmp_path):
    root = plan(tmp_path, SMALL + "grid: {method: [hl, colam], seed: [0, 1]}\nexpected: {parents: [colam_s0]}\n")
    names = Campaign(root).names
    assert names[-1] == "colam_s0.stage_1"
    workers = [subprocess.Popen([sys.executable, "-m", "colam_core", "sweep", "run", str(root), "--worker", "--quiet",
                                 "--poll", "0.5"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    trained = [line.split(":")[0] for _, err in logs for line in err.splitlines() if line.endswith(": trained")]
    assert sorted(trained) == sorted(names), logs  # every run exactly once
    assert not any("in use" in err or "failed" in err for _, err in logs)
    sweep = Sweep.open(root)
    assert all(sweep.state(n) == "finished" for n in names)
    for n in names:
        assert len(pd.read_csv(root / n / "history.csv")) == 2
    child_started = (root / "colam_s0.stage_1" / "config.json").stat().st_mtime
    assert child_started >= (root / "colam_s0" / "checkpoints" / "stage_1.pt").stat().st_mtime
    table = Campaign(root).table("expected")[1]
    assert table["stage"].tolist() == [1] and table["finished"].all()


def test_a_killed_worker_leaves_its_entry_free_and_resumable(tmp_path, capsys):
    root = plan(tmp_path, SMALL + "grid: {method: [colam]}\n")
    killed = colam("sweep", "run", root, "--index", "0", "--quiet", env={"COLAM_FAULT": "batch:3"})
    assert killed.returncode == -9
    assert main(["sweep", "status", str(root)]) == 0
    assert "0 running, 1 pending" in capsys.readouterr().out  # the kernel released the claim with the process
    assert main(["sweep", "run", str(root), "--worker", "--quiet"]) == 0
    assert "colam: trained" in capsys.readouterr().err
    assert len(pd.read_csv(root / "colam" / "history.csv")) == 2


def test_local_executor_drains_the_sweep(tmp_path, capsys):
    root = plan(tmp_path, SMALL + "grid: {method: [hl, colam]}\n")
    assert main(["sweep", "submit", str(root), "--executor", "local", "--max-parallel", "2", "--cpus-per-task", "1",
                 "--time", "10", "--wait"]) == 0
    out = capsys.readouterr().out
    assert "2 done, 0 running, 0 pending, 0 failed" in out
    assert main(["sweep", "submit", str(root), "--executor", "local"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
