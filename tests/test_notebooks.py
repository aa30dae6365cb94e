"""Every notebook runs headless with papermill in quick mode and shows what it must show."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"
pytestmark = pytest.mark.slow
MAX_BYTES = 3_000_000  # executed notebooks stay small: no embedded widget bundles


def execute(name, tmp_path, **params):
    out = tmp_path / name
    papermill.execute_notebook(str(NB / name), str(out), parameters=params, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)
    text = out.read_text()
    assert len(text.encode()) < MAX_BYTES, f"{name} executed to {len(text) / 1e6:.1f} MB"
    assert "application/vnd.jupyter.widget-view+json" not in text
    return json.loads(text), text


def outputs_of(nb):
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def has_plotly(nb, trace_type):
    for o in outputs_of(nb):
        fig = o.get("data", {}).get("application/vnd.plotly.v1+json")
        if fig and any(t.get("type") == trace_type for t in fig.get("data", [])):
            return True
    return False


def plotly_figures(nb):
    return [o["data"]["application/vnd.plotly.v1+json"] for o in outputs_of(nb)
            if "application/vnd.plotly.v1+json" in o.get("data", {})]


def markdown_text(nb):
    return "\n".join("".join(o["data"]["text/markdown"]) for o in outputs_of(nb)
                     if "text/markdown" in o.get("data", {}))


def printed(nb):
    """Everything the notebook's code cells printed (stdout), as one text."""
    return "".join("".join(o["text"]) for o in outputs_of(nb) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


def has_table(nb):
    return any("text/html" in o.get("data", {}) and "<table" in "".join(o["data"]["text/html"])
               for o in outputs_of(nb))


def test_01_quickstart(tmp_path):
    from colam_core import load_run
    nb, _ = execute("01_quickstart.ipynb", tmp_path, quick=True, out_root=str(tmp_path / "runs"))
    assert has_plotly(nb, "heatmap") and has_table(nb) and has_plotly(nb, "scatter")
    for name in ("HL", "LS", "COLAM"):
        run = load_run(tmp_path / "runs" / name)
        assert run.finished
    assert load_run(tmp_path / "runs" / "COLAM").soft_label_keys() == ["stage_1"]
    # the three methods' template planes, side by side on one range (issue 13: LS was described, never shown)
    planes = [f for f in plotly_figures(nb) if sum(t.get("name") == "★ class templates" for t in f["data"]) == 3]
    assert len(planes) == 1
    lay = planes[0]["layout"]
    assert lay["xaxis"]["range"] == lay["xaxis2"]["range"] == lay["xaxis3"]["range"] == lay["yaxis3"]["range"]
    assert "one seed cannot tell a difference" in markdown_text(nb)


# notebook 02 in quick mode: the shipped table2_cifar100 spec with these options for every entry (its quick_options),
# as `colam sweep plan --set` would plan it
QUICK_02 = dict(model="resnet20", epochs=4, stages=2, train_limit=1000, test_limit=500, eval_batch_size=250, seed=0)
QUICK_02_NAMES = ["resnet20_hl_s0", "resnet20_ls_s0", "resnet20_cp_s0", "resnet20_dl_s0", "resnet20_colam_s0"]
TINY_SPEC = """name: tiny
base: {dataset: digits, model: small_cnn, epochs: 2, stages: 2, train_limit: 300, test_limit: 100}
grid: {method: [hl, colam]}
"""


def _cifar100(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from datafiles import write_cifar100
    write_cifar100(tmp_path / "data", np.random.default_rng(0), reps=(10, 5))
    return tmp_path / "data"


def _plan_like_the_cli(root, *sets):
    from colam_core.cli import main
    args = [f"{k}={v}" for k, v in QUICK_02.items()] + list(sets)
    assert main(["sweep", "plan", "--preset", "table2_cifar100", "--out", str(root),
                 *[a for s in args for a in ("--set", s)]]) == 0


def test_02_trains_one_entry_of_the_table2_spec_on_a_cifar_format_directory(tmp_path):
    from colam_core import load_run
    from colam_core.sweeps import Campaign
    data = _cifar100(tmp_path)
    root = tmp_path / "t2"
    nb, text = execute("02_train_cifar100.ipynb", tmp_path, quick=True, data_root=str(data), sweep_root=str(root))
    camp = Campaign(root)
    assert camp.names == QUICK_02_NAMES and camp.plan["name"] == "table2_cifar100"
    # the notebook's plan is the one `colam sweep plan --preset table2_cifar100 --set ...` writes
    _plan_like_the_cli(tmp_path / "cli", f"data_root={data}")
    assert json.loads((root / "sweep.json").read_text())["runs"] == \
        json.loads((tmp_path / "cli" / "sweep.json").read_text())["runs"]
    run = load_run(root / "resnet20_colam_s0")
    assert run.finished and run.info.num_classes == 100 and run.info.coarse_labels is not None
    cfg = camp.sweep.configs["resnet20_colam_s0"]
    assert (cfg.preset, cfg.T, cfg.lr, cfg.weight_decay, cfg.num_stages) == ("paper", 1.5, 0.1, 1e-4, 2)  # spec, quick
    assert [n for n in camp.names if (root / n).exists()] == ["resnet20_colam_s0"]  # one entry trained, no other
    assert "ms per batch" in text  # the duration estimate was printed before training
    assert "resnet20_colam_s0: trained" in text and "test accuracy 0." in text
    assert has_plotly(nb, "heatmap") and "mean_share" in text
    assert f"1 of 5 entries of {root} are done" in text
    assert f"colam sweep submit {root.resolve()} --executor slurm" in text
    assert f"colam sweep run {root.resolve()} --worker" in text


def test_02_resumes_a_partial_entry_of_a_sweep_planned_by_the_cli(tmp_path):
    from colam_core import Trainer, load_run
    from colam_core.sweeps import Campaign
    data = _cifar100(tmp_path)
    root = tmp_path / "t2"
    _plan_like_the_cli(root, f"data_root={data}")
    name = "resnet20_colam_s0"
    with Trainer(Campaign(root).sweep.configs[name], out=root / name) as t:
        t.run_stage()  # one of two stages: the notebook must resume, not restart
    stage1 = (root / name / "checkpoints" / "stage_1.pt").stat().st_mtime_ns
    _, text = execute("02_train_cifar100.ipynb", tmp_path, quick=True, data_root=str(data), sweep_root=str(root))
    assert "planned before in" in text and "pending: 2/4 epochs (partial: resumes from its last checkpoint)" in text
    assert load_run(root / name).history["epoch"].tolist() == [1, 2, 3, 4]
    assert (root / name / "checkpoints" / "stage_1.pt").stat().st_mtime_ns == stage1  # stage 1 not retrained


def test_02_quick_without_cifar100_trains_on_digits_and_says_so(tmp_path, monkeypatch):
    from colam_core import load_run
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no CIFAR-100 in the download cache
    root = tmp_path / "t2"
    nb, text = execute("02_train_cifar100.ipynb", tmp_path, quick=True, sweep_root=str(root))
    run = load_run(root / "resnet20_colam_s0")
    assert run.finished and run.config["dataset"] == "digits" and run.info.num_classes == 10
    assert "cifar100 was not found here" in text and "trains on digits instead" in text
    assert "digits has no superclasses" in text and has_plotly(nb, "heatmap")


def test_02_shows_the_sweeps_table_once_every_entry_is_done(tmp_path):
    from colam_core.cli import main
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    root = tmp_path / "tiny"
    assert main(["sweep", "plan", str(spec), "--out", str(root)]) == 0
    assert main(["sweep", "run", str(root), "--index", "0", "--quiet"]) == 0  # hl, trained elsewhere
    nb, _ = execute("02_train_cifar100.ipynb", tmp_path, spec=str(spec), entry="colam", sweep_root=str(root))
    text = printed(nb)
    assert "colam: trained" in text and "planned before in" in text
    title = f"{root}: test accuracy and ECE both ways (%), mean ± std over seeds; n = finished runs"  # as the CLI
    table = text[text.index(title):]
    assert re.search(r"^\s*hl\s+1\s", table, re.M) and re.search(r"^\s*colam\s+1\s", table, re.M)
    assert "ECE softmax(z/T)" in table and "ECE softmax(z)" in table
    assert "entries of" not in table


BAD_02 = [(dict(T=1.5), "T"),                 # a parameter of the old notebook: the spec sets T now
          (dict(entry="colm"), "entry"), (dict(entry=7), "entry"), (dict(spec="table9_cifar"), "spec"),
          (dict(quick="yes"), "quick"), (dict(download="yes"), "download"), (dict(device="tpu"), "device"),
          (dict(sweep_root=""), "sweep_root")]


@pytest.mark.parametrize("params, needle", BAD_02, ids=[n + str(i) for i, (_, n) in enumerate(BAD_02)])
def test_bad_parameters_fail_in_the_validation_cell(tmp_path, params, needle):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute("02_train_cifar100.ipynb", tmp_path, **{"spec": str(spec), "sweep_root": str(tmp_path / "r"),
                                                        **params})
    assert e.value.ename == "ConfigError" and e.value.evalue.startswith(f"{needle}: invalid value")
    assert "allowed" in e.value.evalue and len(e.value.evalue.splitlines()) == 1  # one clear line
    assert e.value.exec_count == 3  # parameters (1), papermill's injected parameters (2), validation (3)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, root, params, option", [
    ("05_hyperparameters.ipynb", "sweep_root", dict(temprature=2), "temprature"),
    ("05_hyperparameters.ipynb", "sweep_root", dict(spec_temprature="digits_temperature"), "spec_temprature"),
    ("05_hyperparameters.ipynb", "sweep_root", dict(quick=True, spec_grid="digits_temperature"), "spec_grid"),
    ("05_hyperparameters.ipynb", "sweep_root", dict(quick=True, spec_expected="fig9"), "spec_expected"),
    ("05_hyperparameters.ipynb", "sweep_root", dict(quick=True, train="no"), "train"),
    ("05_hyperparameters.ipynb", "sweep_root", dict(quick="yes"), "quick"),
    ("01_quickstart.ipynb", "out_root", dict(seed=1e20), "seed"),
])
def test_every_parameter_is_checked_in_the_first_cell(tmp_path, name, root, params, option):
    """Issue 15: a misspelt name trained with the default, a bad value was found only after a sweep had trained,
    `-p seed 1e20` was a traceback. 05 plans its three specs in that cell, before anything trains or is written."""
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute(name, tmp_path, **{root: str(tmp_path / "runs")}, **params)
    assert e.value.ename == "ConfigError" and option in e.value.evalue and "allowed" in e.value.evalue
    assert e.value.exec_count == 3  # parameters (1), papermill's injected parameters (2), validation (3)
    assert not (tmp_path / "runs").exists()


def test_02_missing_data_gives_the_data_error(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute("02_train_cifar100.ipynb", tmp_path, quick=True, data_root=str(tmp_path / "nothing"),
                sweep_root=str(tmp_path / "r"))
    assert e.value.ename in ("DataError", "ConfigError") and e.value.exec_count == 3
    assert "data_root" in e.value.evalue and "download" in e.value.evalue and str(tmp_path / "nothing") in e.value.evalue
    assert not (tmp_path / "r").exists()


def test_03_teaching(tmp_path):
    nb, text = execute("03_label_smoothing_vs_colam.ipynb", tmp_path, dataset="digits", quick=True,
                       out_root=str(tmp_path / "runs"))
    assert "d(a,c) / d(a,b)" in text and "test accuracy" in text and "calibration error" in text
    assert has_plotly(nb, "heatmap") and has_plotly(nb, "scatter")
    prose = markdown_text(nb)
    # quick mode trains two seeds; every claim says how many seeds stand behind it, HL included
    assert "Over 2 seeds" in prose and "**HL**" in prose and "Erased classes" in prose and "a = **" in prose
    assert "As the paper claims" not in prose
    heat = [f for f in plotly_figures(nb) if f["data"][0]["type"] == "heatmap" and len(f["data"]) == 2]
    assert len(heat) == 3 and len({(f["data"][0]["zmin"], f["data"][0]["zmax"]) for f in heat}) == 1  # one scale
    planes = [f for f in plotly_figures(nb) if "xaxis3" in f["layout"] and "templates" in str(f["data"])]
    assert len(planes) == 1 and planes[0]["layout"]["xaxis"]["range"] == planes[0]["layout"]["xaxis3"]["range"]


def test_04_representations(tmp_path):
    from colam_core import Config, Trainer
    with Trainer(Config(dataset="synthetic", epochs=2, stages=2, batch_size=32), out=tmp_path / "r") as t:
        t.run()
    nb, text = execute("04_representations.ipynb", tmp_path, run_dir=str(tmp_path / "r"), classes=[0, 1, 3])
    assert has_plotly(nb, "scatter") and has_plotly(nb, "heatmap") and has_table(nb)
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute("04_representations.ipynb", tmp_path, run_dir=str(tmp_path / "r"), classes=[0, 1, 9])
    assert "classes" in e.value.evalue


def test_05_hyperparameters(tmp_path):
    """Quick mode: the three CPU specs (Fig. 4a, 4b, 1b in miniature), each planned in sweep_root/<spec> and trained
    as `colam sweep run ROOT --worker`; the figures are drawn from them."""
    from colam_core.sweeps import Campaign
    root = tmp_path / "runs"
    nb, text = execute("05_hyperparameters.ipynb", tmp_path, quick=True, sweep_root=str(root))
    sizes = {"digits_interval_peers": 9, "digits_temperature": 10, "digits_expected": 5}
    for spec, n in sizes.items():
        camp = Campaign(root / spec)
        assert camp.plan["name"] == spec and len(camp) == n
        assert (camp.status()["state"] == "done").all(), spec
        assert f"all {n} entries of {root / spec} are done" in text or f"{root / spec}: test accuracy" in text
    titles = [f["layout"].get("title", {}).get("text") for f in plotly_figures(nb)]
    assert has_plotly(nb, "heatmap") and "test accuracy" in titles  # Fig. 4a: interval x peers
    assert has_plotly(nb, "scatter") and "test accuracy and ECE both ways (%) per temperature T" in text  # Fig. 4b
    assert has_table(nb) and "own_mass_stage_1" in text and "parent_test_acc" in text  # Fig. 1b's table
    expected = Campaign(root / "digits_expected").table("expected")[1]
    assert expected["stage"].tolist() == [0, 1, 2, 3] and expected["finished"].all()


def test_06_does_colam_work_here_quick(tmp_path):
    """Quick mode trains the evidence grid on a digits subset and writes the report; every number in the verdict
    is one the notebook computed (checked against the tables it computed from the run directories)."""
    from colam_core.sweeps import Sweep
    from colam_core.sweeps import evidence as E
    report = tmp_path / "RESULTS.md"
    nb, text = execute("06_does_colam_work_here.ipynb", tmp_path, quick=True, fmnist_seeds=0,
                       out_root=str(tmp_path / "ev"), results_md=str(report), command="pytest")
    md = report.read_text()
    assert md.startswith("# Does COLAM work") and "with `pytest`" in md and "## digits" in md
    sweep = Sweep.open(tmp_path / "ev" / "digits")
    table = E.evidence_table(E.evidence_rows(sweep))
    assert set(table["setting"]) == {"HL", "COLAM (short)", "COLAM (long)", "COLAM+correct (short)",
                                     "COLAM+correct (long)"}
    assert E.verdict(table, "digits") in md and E.verdict(table, "digits") in text
    hl = float(table.loc[table["label"] == "HL", "acc_mean"].iloc[0])
    assert f"HL reached {hl:.3f}" in md
    correct = table[table["label"] == "COLAM+correct"]
    assert (correct["erased_per_run"] == 0).all()  # the provable property, in the report's own numbers
