"""Campaigns on a real Slurm (the session's one-node cluster, tests/slurmcluster.py) through submitit job arrays.

A sweep submitted to Slurm trains each entry exactly like a plain `colam train` of its configuration (bitwise on
CPU); `scontrol requeue` of a running task stops it with a checkpoint and the requeued task resumes to the same
end; an expected-accuracy entry waits in a second array for its parent's soft labels.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from colam_core.cli import main
from colam_core.sweeps import Campaign

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TIMING = ["seconds", "images_per_s"]
SUBMIT = ["--executor", "slurm", "--cpus-per-task", "1", "--time", "20"]


def plan(tmp_path, text):
    (tmp_path / "spec.yaml").write_text(text)
    root = tmp_path / "root"
    assert main(["sweep", "plan", str(tmp_path / "spec.yaml"), "--out", str(root)]) == 0
    return root


def plain_histories(root, names, out):
    """The same configurations trained by plain `colam train --config` in one fresh process (one thread)."""
    cfgs = json.loads((root / "sweep.json").read_text())["runs"]
    calls = []
    for n in names:
        (out / f"{n}.json").parent.mkdir(parents=True, exist_ok=True)
        (out / f"{n}.json").write_text(json.dumps(cfgs[n]))
        calls.append(["train", "--config", str(out / f"{n}.json"), "--out", str(out / n), "--quiet"])
    code = ("import json, sys; from colam_core.cli import main\n"
            f"sys.exit(max(main(a) for a in json.loads({json.dumps(json.dumps(calls))})))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True,
                   capture_output=True, timeout=900)
    return {n: pd.read_csv(out / n / "history.csv").drop(columns=TIMING) for n in names}


def history(root, name):
    return pd.read_csv(root / name / "history.csv").drop(columns=TIMING)


def test_a_digits_sweep_through_slurm_equals_plain_training(slurm, tmp_path, capsys):
    root = plan(tmp_path, "base: {dataset: digits, model: small_cnn, epochs: 2, stages: 2}\n"
                          "grid: {method: [hl, colam], seed: [0, 1, 2]}\n")
    assert main(["sweep", "submit", str(root), *SUBMIT, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "as slurm job array" in out and "6 done, 0 running, 0 pending, 0 failed" in out
    assert main(["sweep", "results", str(root)]) == 0
    table = Campaign(root).table()[1].set_index("label")
    assert table.loc["hl", "n"] == table.loc["colam", "n"] == 3
    names = Campaign(root).names
    plain = plain_histories(root, names, tmp_path / "plain")
    for n in names:
        pd.testing.assert_frame_equal(history(root, n), plain[n], check_exact=True, obj=n)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rows(path):
    try:
        return len(pd.read_csv(path))
    except (OSError, pd.errors.EmptyDataError):
        return 0


def test_scontrol_requeue_resumes_from_the_checkpoint(slurm, tmp_path):
    root = plan(tmp_path, "base: {dataset: digits, model: small_cnn, method: colam, epochs: 30, stages: 2}\n"
                          "runs: {long: {}}\n")
    assert main(["sweep", "submit", str(root), *SUBMIT]) == 0
    job = json.loads((root / "submissions.json").read_text())["jobs"]["long"]
    wait_for(lambda: rows(root / "long" / "history.csv") >= 2, 300, "the first epochs")
    slurm.scontrol("requeue", job)  # SIGTERM to the task, then Slurm queues it again
    wait_for(lambda: slurm.job_field(job, "JobState") == "PENDING", 120, "the requeue")
    done_before = rows(root / "long" / "history.csv")
    assert done_before < 30
    slurm.scontrol("update", f"JobId={job}", "StartTime=now")  # a requeued job otherwise waits ~2 minutes
    wait_for(lambda: Campaign(root).state("long")[0] == "done", 600, "the resumed run")
    assert slurm.job_field(job, "Restarts") == "1"
    log = "".join(p.read_text() for p in (root / ".submitit").rglob("*_log.out"))
    assert "long: stopped (15)" in log and "long: trained" in log  # stopped by the SIGTERM, then resumed
    plain = plain_histories(root, ["long"], tmp_path / "plain")
    pd.testing.assert_frame_equal(history(root, "long"), plain["long"], check_exact=True)


def test_an_expected_accuracy_entry_starts_after_its_parent_wrote_the_stage(slurm, tmp_path, capsys):
    root = plan(tmp_path, "base: {dataset: digits, model: small_cnn, method: colam, epochs: 4, stages: 2}\n"
                          "runs: {colam: {}}\nexpected: {parents: [colam]}\n")
    assert main(["sweep", "submit", str(root), *SUBMIT, "--wait"]) == 0
    out = capsys.readouterr().out
    jobs = json.loads((root / "submissions.json").read_text())["jobs"]
    assert f"after {jobs['colam']}" in out  # the second array depends on the parent's task
    parent_stage = (root / "colam" / "checkpoints" / "stage_1.pt").stat().st_mtime
    assert (root / "colam.stage_1" / "config.json").stat().st_mtime >= parent_stage
    table = Campaign(root).table()[1]
    assert table["stage"].tolist() == [1] and table["finished"].all()
    assert table["own_mass"].iloc[0] < 1.0
