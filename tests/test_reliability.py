"""Reliability: faults (SIGKILL anywhere, disk full, corrupt checkpoints, NaN, locks, stops), bad input
(the table in docs/RELIABILITY.md), and security (no code from files, no network).

Every subprocess has a timeout. Tiny runs: dataset "synthetic" (4 classes, 256 train images of 1x8x8).
"""
from __future__ import annotations

import ast
import errno
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from colam_core import Config, Trainer, load_run
from colam_core.cli import main
from colam_core.config import ConfigError, validate_params
from colam_core.runs import RunError
from colam_core.training import TrainingError

from datafiles import _dump, write_cifar10, write_fashion, write_folder  # noqa: E402 (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(dataset="synthetic", model="small_cnn", epochs=4, batch_size=32, lr=0.05, device="cpu")
CLI_QUICK = ["--dataset", "synthetic", "--model", "small_cnn", "--batch-size", "32", "--device", "cpu", "--quiet"]
TIMING = {"seconds", "images_per_s"}


# ----------------------------------------------------------------------------- helpers
def cli(*args, env=None, timeout=180):
    """Run the CLI in a fresh interpreter, bounded by `timeout`."""
    return subprocess.run([sys.executable, "-m", "colam_core", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def last_state(d: Path) -> dict:
    return torch.load(Path(d) / "checkpoints" / "last.pt", weights_only=True)


def deep_equal(a, b, path="") -> None:
    """Assert a == b, tensors bitwise."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            deep_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            deep_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_same_training(a: Path, b: Path) -> None:
    """Two run directories hold bitwise the same training (timings aside)."""
    sa, sb = last_state(a), last_state(b)
    for k in ("epoch", "batch", "model", "optimizer", "method", "soft_labels", "fingerprint"):
        deep_equal(sa[k], sb[k], k)
    ra, rb = load_run(a), load_run(b)
    cols = [c for c in ra.history.columns if c not in TIMING]
    pd.testing.assert_frame_equal(ra.history[cols], rb.history[cols])
    assert ra.soft_label_keys() == rb.soft_label_keys()
    for k in ra.soft_label_keys():
        np.testing.assert_array_equal(ra.soft_labels(k), rb.soft_labels(k))
    assert ra.stage_checkpoints() == rb.stage_checkpoints()
    for k in ra.stage_checkpoints():
        deep_equal(ra.model(k).state_dict(), rb.model(k).state_dict(), f"stage_{k}")
    assert {k: v for k, v in ra.summary.items() if "seconds" not in k and "images" not in k} == \
        {k: v for k, v in rb.summary.items() if "seconds" not in k and "images" not in k}


def wait_for(pred, timeout=120.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def history_rows(d: Path) -> int:
    p = d / "history.csv"
    return len(pd.read_csv(p)) if p.exists() else 0


# ============================================================================= faults
@pytest.mark.slow
def test_random_sigkills_resume_bitwise(tmp_path):
    """SIGKILL at seeded random points (mid-batch, mid-checkpoint write, mid soft-label pass, between the stage
    files and last.pt, and at random wall-clock times), several times; resuming always succeeds and ends
    bitwise equal to an uninterrupted run."""
    args = [*CLI_QUICK, "--method", "colam", "--epochs", "8", "--stages", "4"]
    full = cli("train", *args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    last = cut / "checkpoints" / "last.pt"
    rng = random.Random(20220607)
    # 8 batches per epoch; soft-label passes at the ends of epochs 2, 4 and 6; counts restart in every process
    # the named points first (each must fire); then kills at random wall-clock times, which may land after the
    # run has finished on a fast machine (a finished run is what such a kill leaves, and that ends the plan)
    plan = [f"batch:{rng.randint(2, 7)}", f"checkpoint:{rng.randint(1, 2)}", "eval_pass:1",
            "stage_files:1", f"batch:{rng.randint(9, 24)}", "checkpoint:3", "eval_pass:1", "timer", "timer"]
    kills = []
    for step in plan:
        env = dict(os.environ)
        env.pop("COLAM_FAULT", None)
        if step == "timer":  # a random moment after this process has written a checkpoint of its own
            t0 = time.time()
            p = subprocess.Popen([sys.executable, "-m", "colam_core", "train", *args, "--out", str(cut)], cwd=ROOT,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                wait_for(lambda p=p, t0=t0: p.poll() is not None or (last.exists() and last.stat().st_mtime > t0),
                         what="a checkpoint from the new process")
                time.sleep(rng.uniform(0.0, 0.3))
                p.send_signal(signal.SIGKILL)
                _, err = p.communicate(timeout=60)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(30)
            rc = p.returncode
        else:
            env["COLAM_FAULT"] = step
            res = cli("train", *args, "--out", cut, env=env)
            rc, err = res.returncode, res.stderr
        assert rc in (-signal.SIGKILL, 0), err
        assert "Traceback" not in err
        if rc == 0 or (step == "timer" and (cut / "summary.json").exists()):
            break  # finished before the kill: the rest of the plan has nothing left to interrupt
        kills.append(step)
        if step.startswith("checkpoint"):  # killed halfway through a temporary file
            assert list(cut.rglob(".*.pt.*.tmp")), "the checkpoint fault point did not fire mid-write"
        if (cut / "config.json").exists():  # whatever the kill left is readable
            run = load_run(cut)
            assert len(run.history) <= 8 and run.summary is None
    assert [k for k in kills if k != "timer"] == [k for k in plan if k != "timer"], kills  # every named point fired
    res = cli("train", "--resume", cut)
    assert res.returncode == 0, res.stderr
    assert not list(cut.rglob("*.tmp"))  # stale temporary files were cleaned up
    assert_same_training(tmp_path / "full", cut)


NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file being synced")


@NEEDS_PROC
@pytest.mark.parametrize("target", ["last.pt", "history.csv", "stage_1.pt", "soft_labels.npz"])
def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target):
    cfg = Config(method="colam", stages=2, **QUICK)
    with Trainer(cfg, out=tmp_path / "full") as t:
        t.run()
    out = tmp_path / "r"
    real_fsync = os.fsync
    armed = []

    def fsync(fd):
        if armed and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{target}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with Trainer(cfg, out=out) as t:
        t.subscribe(lambda ev: armed.append(1) if ev.kind == "epoch" and ev.epoch == 1 else None)
        with pytest.raises(TrainingError) as e:
            t.run()
    msg = str(e.value)
    assert target in msg and "No space left on device" in msg and "last.pt is intact" in msg and "--resume" in msg
    st = last_state(out)
    assert st["epoch"] == 1 and st["batch"] == 0  # the checkpoint from before the failed write
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: resume
    with Trainer(cfg, out=out) as t:
        t.run()
    assert_same_training(tmp_path / "full", out)


@NEEDS_PROC
def test_disk_full_through_the_cli_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    code = main(["train", *CLI_QUICK, "--method", "hl", "--epochs", "1", "--stages", "1", "--out", str(tmp_path / "r")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "could not write" in line and "config.json: No space left on device" in line
    assert "nothing was trained" in line and not (tmp_path / "r").exists()
    # the disk fills up after the configuration was written: the first checkpoint fails
    monkeypatch.undo()
    real_fsync = os.fsync

    def fsync_pt(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp") and ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync_pt)
    code = main(["train", *CLI_QUICK, "--method", "hl", "--epochs", "1", "--stages", "1", "--out", str(tmp_path / "s")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "last.pt: No space left on device" in line and "no checkpoint had been written yet" in line
    assert not (tmp_path / "s" / "checkpoints" / "last.pt").exists() and not list((tmp_path / "s").rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_last_pt_names_the_stage_checkpoint_to_resume_from(tmp_path, capsys, damage):
    cfg = Config(method="colam", stages=2, **QUICK)
    with Trainer(cfg, out=tmp_path / "full") as t:
        t.run()
    cut = tmp_path / "cut"
    with Trainer(cfg, out=cut) as t:
        t.run_stage()
        t.subscribe(lambda ev: t.request_stop() if ev.kind == "batch" and ev.batch == 4 else None)
        assert t.run_stage() is None
    last = cut / "checkpoints" / "last.pt"
    raw = last.read_bytes()
    last.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"\x00not a checkpoint" * 50, "empty": b""}[damage])
    before = files(cut)
    code = main(["train", "--resume", str(cut)])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and "last.pt" in line and "stage_1.pt" in line and f"--resume {cut} --from-stage 1" in line
    assert files(cut) == before  # nothing was overwritten
    with pytest.raises(RunError, match="stage_1.pt"):
        load_run(cut).model()
    # the named way out works, and ends bitwise equal to an uninterrupted run
    assert main(["train", "--resume", str(cut), "--from-stage", "1", "--quiet"]) == 0
    assert_same_training(tmp_path / "full", cut)


def test_nonfinite_loss_names_epoch_and_batch_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = Config(method="ls", **dict(QUICK, epochs=3))
    with Trainer(cfg, out=tmp_path / "r") as t:
        orig = t.method.loss

        def loss(logits, y, idx, ctx):
            value, z, yy = orig(logits, y, idx, ctx)
            return (value * float("nan") if (ctx.epoch, ctx.batch) == (2, 2) else value), z, yy
        t.method.loss = loss
        with pytest.raises(TrainingError) as e:
            t.run()
    assert "stage 1, epoch 2, batch 3" in str(e.value) and "last.pt is kept" in str(e.value)
    st = last_state(tmp_path / "r")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())
    assert len(load_run(tmp_path / "r").history) == 1


def test_nonfinite_loss_before_a_stop_is_not_checkpointed(tmp_path):
    """A stop request right after a NaN batch must not save the diverged weights as last.pt."""
    cfg = Config(method="hl", **dict(QUICK, epochs=2))
    with Trainer(cfg, out=tmp_path / "r") as t:
        orig = t.method.loss

        def loss(logits, y, idx, ctx):
            value, z, yy = orig(logits, y, idx, ctx)
            if (ctx.epoch, ctx.batch) == (2, 1):
                t.request_stop()
                value = value * float("inf")
            return value, z, yy
        t.method.loss = loss
        with pytest.raises(TrainingError, match="epoch 2, batch 2"):
            t.run()
    assert last_state(tmp_path / "r")["epoch"] == 1


def test_huge_learning_rate_stops_the_cli_with_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", *CLI_QUICK, "--method", "hl", "--epochs", "3", "--stages", "1", "--lr", "1e6",
                 "--out", str(out)])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and re.search(r"non-finite loss at stage 1, epoch \d, batch \d+", line) and "--lr" in line
    m = re.search(r"epoch (\d)", line)
    kept = out / "checkpoints" / "last.pt"
    assert kept.exists() == (int(m.group(1)) > 1)  # the last good checkpoint is the epoch before the bad one
    assert not kept.exists() or last_state(out)["epoch"] == int(m.group(1)) - 1
    assert load_run(out).summary is None


def test_nonfinite_loss_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path):
    """The message used to promise 'the last good checkpoint last.pt is kept' when there was none."""
    with Trainer(Config(method="hl", **dict(QUICK, epochs=2)), out=tmp_path / "r") as t:
        orig = t.method.loss
        t.method.loss = lambda logits, y, idx, ctx: (lambda v, z, yy: (v * float("nan"), z, yy))(
            *orig(logits, y, idx, ctx))
        with pytest.raises(TrainingError) as e:
            t.run()
    assert "no checkpoint had been written yet" in str(e.value) and "is kept" not in str(e.value)
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()


@NEEDS_PROC
def test_disk_full_at_start_in_an_existing_empty_folder_leaves_it_empty(tmp_path, monkeypatch, capsys):
    """A full disk at start named no file and left a .lock and an empty checkpoints/ in the user's folder."""
    out = tmp_path / "mine"
    out.mkdir()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    code = main(["train", *CLI_QUICK, "--method", "hl", "--epochs", "1", "--stages", "1", "--out", str(out)])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "config.json: No space left" in line and "nothing was trained" in line
    assert list(out.iterdir()) == []


def test_an_invalid_fault_hook_spoils_only_training(tmp_path):
    """COLAM_FAULT=bogus used to be a traceback at import, even for `list`."""
    env = dict(os.environ, COLAM_FAULT="bogus")
    assert cli("list", env=env).returncode == 0
    res = cli("train", *CLI_QUICK, "--epochs", "1", "--stages", "1", "--out", tmp_path / "r", env=env)
    line = one_line_error(res.stderr)
    assert res.returncode == 2 and "COLAM_FAULT='bogus' is invalid; allowed: POINT or POINT:N" in line
    assert not (tmp_path / "r").exists()


def test_ctrl_c_while_the_cli_imports_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first seconds (importing torch) used to print a traceback."""
    import colam_core.__main__ as entry

    class Interrupted:
        def find_spec(self, name, path=None, target=None):
            if name == "colam_core.cli":
                raise KeyboardInterrupt
    monkeypatch.delitem(sys.modules, "colam_core.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    assert entry.run() == 130
    assert one_line_error(capsys.readouterr().err) == "error: interrupted while starting; nothing was written"


def test_second_process_is_refused_by_the_lock_and_ctrl_c_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "r"
    args = ["train", *CLI_QUICK, "--method", "hl", "--epochs", "200", "--stages", "1", "--out", str(out)]
    a = subprocess.Popen([sys.executable, "-m", "colam_core", *args], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: history_rows(out) >= 1, what="the first process to train an epoch")
        before = (out / "config.json").read_bytes()
        b = cli(*args, timeout=120)
        line = one_line_error(b.stderr)
        assert b.returncode == 2 and "in use by another training process" in line and f"pid {a.pid}" in line
        assert (out / "config.json").read_bytes() == before and a.poll() is None
        a.send_signal(signal.SIGINT)
        stdout, stderr = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait(30)
    assert a.returncode == 130, stderr
    assert f"resume with: python -m colam_core train --resume {out}" in stdout and "Traceback" not in stderr
    # the lock died with its holder: the run continues in a new process
    st = last_state(out)
    assert 1 <= st["epoch"] < 200 and load_run(out).summary is None


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2], ids=lambda s: s.name)
def test_ctrl_c_mid_stage_exits_130_and_the_printed_command_resumes_bitwise(tmp_path, sig):
    """Ctrl-C, and what a scheduler sends before a kill, preemption or time limit (SIGTERM, SIGUSR2)."""
    args = [*CLI_QUICK, "--method", "colam", "--epochs", "8", "--stages", "2", "--batch-size", "16"]
    full = cli("train", *args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    cut = tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-m", "colam_core", "train", *args, "--out", str(cut)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: history_rows(cut) >= 1, what="an epoch")
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    assert p.returncode == 130 and "Traceback" not in stderr, stderr
    m = re.search(r"resume with: (python -m colam_core train --resume \S+)", stdout)
    assert m, stdout
    st = last_state(cut)
    assert st["epoch"] < 4 or (st["epoch"] == 4 and st["batch"] == 0)  # stopped within stage 1
    cmd = m.group(1).split()
    res = subprocess.run([sys.executable, *cmd[1:], "--quiet"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert_same_training(tmp_path / "full", cut)


def test_stop_from_another_thread_leaves_a_resumable_run(tmp_path):
    """The widget's Stop button: request_stop() from another thread, mid-stage."""
    cfg = Config(method="colam", stages=2, **dict(QUICK, batch_size=16))
    with Trainer(cfg, out=tmp_path / "full") as t:
        t.run()
    reached, stopped = threading.Event(), threading.Event()
    events = []
    with Trainer(cfg, out=tmp_path / "cut") as t:
        def listener(ev):
            events.append(ev)
            if ev.kind == "batch" and (ev.epoch, ev.batch) == (2, 5):
                reached.set()
                assert stopped.wait(30)  # the click lands while this batch finishes
        t.subscribe(listener)
        clicker = threading.Thread(target=lambda: (reached.wait(60), t.request_stop(), stopped.set()))
        clicker.start()
        assert t.run() is None and not t.done
        clicker.join(30)
    stop = [e for e in events if e.kind == "stopped"]
    assert [(e.stage, e.epoch, e.batch) for e in stop] == [(1, 2, 5)]
    st = last_state(tmp_path / "cut")
    assert (st["epoch"], st["batch"]) == (1, 5)
    with Trainer(cfg, out=tmp_path / "cut") as t:
        assert t.run() is not None
    assert_same_training(tmp_path / "full", tmp_path / "cut")


def test_stop_requested_during_the_stage_end_is_honoured_by_run(tmp_path):
    cfg = Config(method="colam", stages=2, **QUICK)
    with Trainer(cfg, out=tmp_path / "r") as t:
        t.subscribe(lambda ev: t.request_stop() if ev.kind == "stage" and ev.stage == 1 else None)
        assert t.run() is None
        assert t.epoch == 2 and not t.done
    assert last_state(tmp_path / "r")["epoch"] == 2


def test_online_update_resumes_mid_way_through_a_stage_last_epoch(tmp_path):
    """update=online accumulates during the stage's last epoch: a stop inside it must keep the partial sums."""
    cfg = Config(method="colam", stages=2, update="online", **QUICK)
    with Trainer(cfg, out=tmp_path / "full") as t:
        t.run()
    with Trainer(cfg, out=tmp_path / "cut") as t:
        t.subscribe(lambda ev: t.request_stop() if ev.kind == "batch" and (ev.epoch, ev.batch) == (2, 4) else None)
        while not t.done:
            t.run_stage()
    assert_same_training(tmp_path / "full", tmp_path / "cut")


def test_resume_rewrites_files_that_ran_ahead_of_the_checkpoint(tmp_path):
    """A kill between the stage files and last.pt leaves soft labels of a stage last.pt has not reached."""
    cfg = Config(method="colam", stages=2, **QUICK)
    out = tmp_path / "r"
    with Trainer(cfg, out=out) as t:
        t.run_stage()
    last = out / "checkpoints" / "last.pt"
    ahead = torch.load(out / "checkpoints" / "stage_1.pt", weights_only=True)["resume"]
    assert ahead["epoch"] == 2
    st = last_state(out)
    st.update(epoch=1, history=st["history"][:1], soft_labels={})
    torch.save(st, last)  # as if killed after writing the stage-1 files but before last.pt
    with Trainer(cfg, out=out) as t:
        assert t.epoch == 1
        run = load_run(out)
        assert len(run.history) == 1 and run.soft_label_keys() == []


# ============================================================================= data loss (issue 15, cases 1-7)
def _train(cfg, out, stages=None):
    with Trainer(cfg, out=out) as t:
        if stages is None:
            t.run()
        for _ in range(stages or 0):
            t.run_stage()
    return out


def test_missing_last_pt_resumes_from_the_newest_stage_checkpoint(tmp_path, capsys):
    """1. With checkpoint_every_epoch off, a kill after a stage end leaves stage_K.pt but no last.pt: resume goes on
    from the end of stage K (saying so) instead of retraining from epoch 1 and deleting the results."""
    cfg = Config(method="colam", stages=2, checkpoint_every_epoch=False, **QUICK)
    full = _train(cfg, tmp_path / "full")
    cut = _train(cfg, tmp_path / "cut", stages=1)  # as if killed after stage 1: its files, no last.pt
    assert not (cut / "checkpoints" / "last.pt").exists() and len(load_run(cut).history) == 2
    soft = load_run(cut).soft_labels(1)
    with Trainer(cfg, out=cut) as t:
        assert t.epoch == 2 and len(t.history) == 2
        np.testing.assert_array_equal(load_run(cut).soft_labels(1), soft)
        assert len(load_run(cut).history) == 2
        t.run()
    note = capsys.readouterr().err
    assert "last.pt is missing; resuming from the end of stage 1" in note and "stage_1.pt" in note
    assert_same_training(full, cut)


def test_finished_run_without_last_pt_is_never_retrained(tmp_path, capsys, finished_run):
    """1. A finished run whose last.pt was removed: `--resume` restores it from the final stage checkpoint and
    trains nothing (it used to retrain and rewrite every file)."""
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "checkpoints" / "last.pt").unlink()
    epochs = []
    with Trainer(Config(method="colam", stages=2, **QUICK), out=run) as t:
        t.subscribe(lambda ev: epochs.append(ev) if ev.kind == "epoch" else None)
        assert t.done and t.epoch == 4
        t.run()
    assert epochs == [] and "resuming from the end of stage 2" in capsys.readouterr().err
    assert_same_training(finished_run, run)  # last.pt is back; nothing was retrained or lost
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_missing_checkpoints_refuse_with_the_command_to_use(tmp_path, capsys, finished_run):
    """1. Without last.pt and without a stage checkpoint to resume from, resume refuses (nothing changed) and
    names the command that trains the run again; that command works (and --force keeps a copy)."""
    run = _copy_run(finished_run, tmp_path / "run")
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    before = files(run)
    assert main(["train", "--resume", str(run)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "last.pt is missing and no stage checkpoint" in line and "it is finished" in line
    assert f"--resume {run} --from-stage 0 --force" in line and files(run) == before
    assert main(["train", "--resume", str(run), "--from-stage", "0", "--force", "--quiet"]) == 0
    kept = [p for p in run.iterdir() if p.name.startswith("replaced_")]
    assert len(kept) == 1 and (kept[0] / "summary.json").read_bytes() == before["summary.json"]
    assert_same_training(finished_run, run)


def test_deleted_checkpoints_of_an_unfinished_run_refuse(tmp_path, capsys):
    """1. Two epochs in history.csv and every checkpoint gone: resume refuses (it used to retrain silently)."""
    cfg = Config(method="colam", stages=2, **QUICK)
    out = _train(cfg, tmp_path / "r", stages=1)
    for p in (out / "checkpoints").iterdir():
        p.unlink()
    before = files(out)
    with pytest.raises(RunError, match=r"history.csv holds 2 epochs; nothing was changed: .* --from-stage 0`$"):
        Trainer(cfg, out=out)
    assert files(out) == before


@pytest.mark.parametrize("case", ["plain-folder", "symlinked-checkpoints", "fails-at-data-load"])
def test_out_into_a_folder_that_is_not_a_run_changes_nothing(tmp_path, capsys, case):
    """2. --out into a folder of the user's own files is refused before anything is written (it used to overwrite
    same-named files and delete hidden *.tmp files, also when training then failed, and through a symlinked
    checkpoints/); a folder that held nothing is left as it was when training fails to start."""
    d = tmp_path / "d"
    d.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.pt").write_bytes(b"mine")
    extra = []
    if case == "plain-folder":
        (d / "checkpoints").mkdir()
        (d / "history.csv").write_text("mine\n")
        (d / ".draft.tmp").write_text("x")
    elif case == "symlinked-checkpoints":
        (d / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    else:
        extra = ["--train-limit", "3"]  # fails while loading the data
    before = {p.name: p.read_bytes() if p.is_file() else None for p in d.iterdir()}
    code = main(["train", *CLI_QUICK, "--epochs", "2", "--stages", "2", "--out", str(d), *extra])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and ("train_limit=3" in line if extra else "training did not write" in line), line
    assert {p.name: p.read_bytes() if p.is_file() else None for p in d.iterdir()} == before
    assert [p.name for p in elsewhere.iterdir()] == ["mine.pt"]


def test_symlinked_checkpoints_of_a_run_are_refused(tmp_path, capsys, finished_run):
    """2, 3. A run whose checkpoints/ is a link: resume refuses to write through it."""
    run = _copy_run(finished_run, tmp_path / "run")
    (run / "summary.json").unlink()
    target = tmp_path / "elsewhere"
    (run / "checkpoints").rename(target)
    (run / "checkpoints").symlink_to(target, target_is_directory=True)
    before = files(target)
    assert main(["train", "--resume", str(run)]) == 2
    assert "checkpoints is a symbolic link" in one_line_error(capsys.readouterr().err)
    assert files(target) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_lock_file_is_never_opened_through_a_link(tmp_path, capsys, finished_run, link):
    """3. A .lock that links to another file (another user's, on a shared runs folder) is refused; the file it
    points to is left alone (it used to be truncated and overwritten with the pid)."""
    run = _copy_run(finished_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's notes\n")
    (run / ".lock").unlink(missing_ok=True)
    (os.symlink if link == "symlink" else os.link)(victim, run / ".lock")
    assert main(["train", "--resume", str(run)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert ".lock" in line and ("symbolic link" if link == "symlink" else "hard link") in line
    assert victim.read_text() == "someone else's notes\n"


def test_a_closed_trainer_refuses_to_train(tmp_path):
    """4. After close() the trainer holds no lock: it refuses to train (it used to train and write beside the
    process that took the lock, pushing a finished run back)."""
    cfg = Config(method="colam", stages=2, **QUICK)
    out = tmp_path / "r"
    t = Trainer(cfg, out=out)
    t.run_stage()
    t.close()
    with Trainer(cfg, out=out) as other:  # the lock is free: another trainer finishes the run
        other.run()
    before = files(out)
    for go in (t.run_stage, t.run):
        with pytest.raises(RunError, match="was closed and no longer holds the lock"):
            go()
    assert files(out) == before and load_run(out).summary is not None


def test_the_run_is_checked_under_the_lock(tmp_path, monkeypatch):
    """5. A process that stalls between checking the folder and locking it (slow file system, Ctrl-Z) must not
    overwrite the run another process finished meanwhile: the check happens under the lock."""
    from colam_core import runs
    other = _train(Config(method="hl", **dict(QUICK, epochs=2)), tmp_path / "other")
    out = tmp_path / "r"
    real_lock = runs.RunDir.lock

    def stalled_lock(self):  # meanwhile another process trained a different configuration in the folder
        import shutil
        shutil.copytree(other, self.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))
        return real_lock(self)
    monkeypatch.setattr(runs.RunDir, "lock", stalled_lock)
    with pytest.raises(RunError, match="already holds a different run"):
        Trainer(Config(method="hl", **dict(QUICK, epochs=2, lr=0.1)), out=out)
    monkeypatch.undo()
    assert files(out) == files(other)


def test_from_stage_on_a_finished_run_needs_force_and_keeps_a_copy(tmp_path, capsys, finished_run):
    """6. --from-stage K on a healthy finished run used to rewrite last.pt, truncate the history and delete the
    summary; it now needs --force, and then keeps a copy of every file it replaces."""
    run = _copy_run(finished_run, tmp_path / "run")
    before = files(run)
    assert main(["train", "--resume", str(run), "--from-stage", "1"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "would replace the results" in line and "it is finished" in line and "--force" in line
    assert files(run) == before
    assert main(["train", "--resume", str(run), "--from-stage", "1", "--force", "--quiet"]) == 0
    assert "a copy of the files it replaces is kept in" in capsys.readouterr().err
    kept = next(p for p in run.iterdir() if p.name.startswith("replaced_"))
    assert files(kept) == {k: v for k, v in before.items() if k in (
        "history.csv", "soft_labels.npz", "summary.json", "checkpoints/last.pt", "checkpoints/stage_2.pt")}
    assert_same_training(finished_run, run)  # training is deterministic: the rerun reaches the same result
    with pytest.raises(ConfigError, match="--from-stage K"):
        _config_from_cli(["train", "--resume", str(run), "--force"])


def _config_from_cli(argv):
    from colam_core.cli import _config_from_args, build_parser
    return _config_from_args(build_parser().parse_args(argv))


@pytest.mark.parametrize("case", ["loop", "outside", "twice"])
def test_imagefolder_refuses_symlink_loops_and_files_outside_the_split(tmp_path, capsys, case):
    """7. `train/cat/loop -> ..` turned 8 images into many and labelled dog images as cat, silently."""
    root = tmp_path / "data"
    write_folder(root)
    cat = root / "train" / "cat"
    if case == "loop":
        (cat / "loop").symlink_to("..", target_is_directory=True)
    elif case == "outside":
        (tmp_path / "stray.png").write_bytes((root / "val" / "dog" / "img0.png").read_bytes())
        (cat / "stray.png").symlink_to(tmp_path / "stray.png")
    else:
        (cat / "dogs").symlink_to(root / "train" / "dog", target_is_directory=True)
    code = main(["train", "--dataset", "imagefolder", "--data-root", str(root), "--image-size", "32", "--epochs", "1",
                 "--stages", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and {"loop": "a folder above it (a loop", "outside": "outside",
                          "twice": "are the same image file"}[case] in line, line
    assert not (tmp_path / "r").exists()


# ============================================================================= bad input
BAD_CLI = [
    pytest.param(["--lr", "0"], "--lr 0.0", id="lr-zero"),
    pytest.param(["--lr", "nan"], "--lr nan", id="lr-nan"),
    pytest.param(["--momentum", "1"], "--momentum 1.0", id="momentum-one"),
    pytest.param(["--milestones", "0.75,0.5"], "--milestones (0.75, 0.5)", id="milestones-decreasing"),
    pytest.param(["--milestones", "a,b"], "--milestones 'a,b'", id="milestones-text"),
    pytest.param(["--method", "lr", "--stages", "3"], "--stages 3", id="lr-stages"),
    pytest.param(["--warmup-epochs", "12"], "--warmup-epochs 12", id="warmup-too-long"),
    pytest.param(["--device", "cuda"], "--device 'cuda'", id="cuda-missing",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(["--method", "fixed"], "--fixed-targets None", id="fixed-without-targets"),
    pytest.param(["--method", "fixed", "--fixed-targets", "/nonexistent/labels.npz"], "--fixed-targets",
                 id="fixed-targets-missing"),
    pytest.param(["--image-size", "16"], "--image-size 16", id="image-size-fixed-dataset"),
    pytest.param(["--seed", "-1"], "--seed -1", id="seed-negative"),
    pytest.param(["--preset", "fast"], "--preset 'fast'", id="preset-unknown"),
    pytest.param(["--train-limit", "1"], "--train-limit 1", id="train-limit-one"),
    pytest.param(["--eval-batch-size", "0"], "--eval-batch-size 0", id="eval-batch-zero"),
    pytest.param(["--name", "a/b"], "--name 'a/b'", id="name-with-slash"),
    pytest.param(["--from-stage", "1"], "--from-stage 1", id="from-stage-without-resume"),
    pytest.param(["--gamma", "0"], "--gamma 0.0", id="gamma-zero"),
    pytest.param(["--average", "median"], "--average 'median'", id="average-unknown"),
    pytest.param(["--update", "later"], "--update 'later'", id="update-unknown"),
    pytest.param(["--T", "1_5"], "--T '1_5'", id="T-underscore"),
    pytest.param(["--T", "١.٥"], "--T '١.٥'", id="T-arabic-indic"),
    pytest.param(["--T", ""], "--T ''", id="T-empty"),
    pytest.param(["--epochs", "١٢"], "--epochs '١٢'", id="epochs-arabic-indic"),
    pytest.param(["--epochs", "1e1"], "--epochs '1e1'", id="epochs-exponent"),
    pytest.param(["--weight-decay", "1e308"], "--weight-decay 1e+308", id="weight-decay-huge"),
    pytest.param(["--weight-decay", "-0.1"], "--weight-decay -0.1", id="weight-decay-negative"),
    pytest.param(["--seed", "18446744073709551616"], "--seed 18446744073709551616", id="seed-2-64"),
    pytest.param(["--image-size", "20000"], "--image-size 20000", id="image-size-huge"),
    pytest.param(["--image-size", "4"], "--image-size 4", id="image-size-tiny"),
    pytest.param(["--num-workers", "100000"], "--num-workers 100000", id="num-workers-huge"),
    pytest.param(["--amp", "fp16", "--device", "cpu"], "--amp 'fp16'", id="amp-fp16-on-cpu"),
    pytest.param(["--amp", "fp8"], "--amp 'fp8'", id="amp-unknown"),
    pytest.param(["--out", ""], "--out ''", id="out-empty"),
    pytest.param(["--resume", "/nonexistent/run", "--out", "/elsewhere"], "--out '/elsewhere'",
                 id="resume-out-elsewhere"),
    pytest.param(["--force"], "--force True", id="force-without-from-stage"),
    pytest.param(["--resume", "/nonexistent/run", "--from-stage", "-1"], "--from-stage -1", id="from-stage-negative"),
    pytest.param(["--stages", "0"], "--stages 0", id="stages-zero"),
    pytest.param(["--peer-filter", "best"], "--peer-filter 'best'", id="peer-filter-unknown"),
    pytest.param(["--own-floor", "1"], "--own-floor 1.0", id="own-floor-one"),
    pytest.param(["--method", "ls", "--peer-filter", "correct"], "--peer-filter 'correct'", id="peer-filter-not-colam"),
    pytest.param(["--ls-eps", "1.5"], "--ls-eps 1.5", id="ls-eps-too-big"),
    pytest.param(["--dl-alpha", "-1"], "--dl-alpha -1.0", id="dl-alpha-negative"),
    pytest.param(["--cskd-T", "0"], "--cskd-T 0.0", id="cskd-T-zero"),
    pytest.param(["--method", "cskd", "--batch-size", "1"], "--batch-size 1", id="cskd-batch-one"),
    pytest.param(["--schedule", "step"], "--schedule 'step'", id="schedule-unknown"),
    pytest.param(["--augment", "mixup"], "--augment 'mixup'", id="augment-unknown"),
    pytest.param(["--optimizer", "adam"], "--optimizer 'adam'", id="optimizer-unknown"),
    pytest.param(["--stage1-T", "-1"], "--stage1-T -1.0", id="stage1-T-negative"),
    pytest.param(["--channels-last", "sometimes"], "--channels-last 'sometimes'", id="channels-last-text"),
    pytest.param(["--test-limit", "0"], "--test-limit 0", id="test-limit-zero"),
    pytest.param(["--device", "tpu"], "--device 'tpu'", id="device-unknown"),
]


@pytest.mark.parametrize("args, needle", BAD_CLI)
def test_bad_cli_value(tmp_path, capsys, args, needle):
    out = tmp_path / "r"
    code = main(["train", "--dataset", "synthetic", "--epochs", "4", "--stages", "2", "--out", str(out), *args])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and needle in line and "allowed" in line
    assert not out.exists()  # refused before anything was written


SOFT_LABEL_MATRICES = {
    "negative": (np.array([[1.5, -0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "row 0 has min -0.5"),
    "all-zero-row": (np.diag([1.0, 1.0, 1.0, 0.0]), "row 3 has min 0 and sum 0"),
    "unnormalised": (np.eye(4) * 3, "row 0 has min 0 and sum 3"),
    "complex": (np.eye(4, dtype=complex), "got a complex128 array"),
    "bool": (np.eye(4, dtype=bool), "got a bool array"),
    "string": (np.array([["a"] * 4] * 4), "got a <U1 array"),
    "nan": (np.full((4, 4), np.nan), "row 0 has min nan"),
    "not-square": (np.full((4, 3), 1 / 3), "got shape (4, 3)"),
    "one-class": (np.ones((1, 1)), "got shape (1, 1)"),
    "wrong-class-count": (np.eye(3), "a 4 x 4 matrix for this dataset"),
}


@pytest.mark.parametrize("case", list(SOFT_LABEL_MATRICES))
def test_bad_fixed_targets_matrix(tmp_path, capsys, case):
    """Soft labels a user hands to --method fixed must be probabilities: negative rows used to train to accuracy 0,
    a string matrix was a traceback."""
    m, needle = SOFT_LABEL_MATRICES[case]
    f = tmp_path / "labels.npy"
    np.save(f, m)
    code = main(["train", *CLI_QUICK, "--method", "fixed", "--fixed-targets", str(f), "--epochs", "1", "--stages",
                 "1", "--out", str(tmp_path / "r")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and "--fixed-targets" in line and needle in line, line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [
    pytest.param(None, id="missing"),
    pytest.param("{not json", id="not-json"),
    pytest.param("[1, 2]", id="not-an-object"),
    pytest.param('{"temperature": 2}', id="unknown-key"),
])
def test_bad_config_file(tmp_path, capsys, content):
    cfg = tmp_path / "opts.json"
    if content is not None:
        cfg.write_text(content)
    code = main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and "allowed" in line and ("temperature" in line if content and "temp" in content else
                                                "--config" in line)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("case", ["dev-zero", "fifo", "too-big", "nested", "not-utf8", "directory"])
def test_config_file_that_is_not_a_small_json_file(tmp_path, capsys, case):
    """--config /dev/zero used to eat memory until MemoryError; a FIFO would hang; a deeply nested file raised
    RecursionError. Only a regular file of at most 1 MiB is read."""
    f = tmp_path / "opts.json"
    if case == "dev-zero":
        f = Path("/dev/zero")
    elif case == "fifo":
        os.mkfifo(f)
    elif case == "too-big":
        f.write_text('{"T": 1.5, "extra": {"pad": "' + "x" * (2 << 20) + '"}}')
    elif case == "nested":
        f.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "not-utf8":
        f.write_bytes(b'{"T": "\xff\xfe"}')
    else:
        f.mkdir()
    code = main(["train", "--config", str(f), "--out", str(tmp_path / "r")])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and "--config" in line and "allowed: a readable JSON file of options" in line, line
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    with Trainer(Config(method="colam", stages=2, **QUICK), out=out) as t:
        t.run()
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


RUN_DIR_CASES = ["resume-with-options", "out-is-a-file", "corrupt-config-json", "from-stage-missing",
                 "show-unknown-directory", "show-corrupt-soft-labels", "config-json-not-training",
                 "resume-with-config", "show-history-binary", "show-history-empty", "show-history-ragged",
                 "show-history-not-numeric", "show-history-fifo", "show-summary-not-json", "show-summary-a-list",
                 "show-config-lacks-method", "show-config-lacks-num-stages", "show-soft-labels-nan",
                 "show-soft-labels-bool", "show-soft-labels-wrong-shape", "resume-summary-is-a-link",
                 "resume-config-is-a-link", "from-stage-zero-of-a-finished-run", "resume-last-pt-is-a-fifo"]


@pytest.mark.parametrize("case", RUN_DIR_CASES)
def test_bad_run_directory(tmp_path, capsys, finished_run, case):
    run = _copy_run(finished_run, tmp_path / "run")
    opts = tmp_path / "opts.json"
    opts.write_text('{"T": 3}')
    argv, needle = {
        "resume-with-options": (["train", "--resume", str(run), "--epochs", "8"], "do not pass options (--epochs)"),
        "out-is-a-file": (["train", "--dataset", "synthetic", "--epochs", "1", "--stages", "1",
                           "--out", str(run / "history.csv")], "is a file, not a run directory"),
        "corrupt-config-json": (["train", "--resume", str(run)], "config.json of this run directory is damaged"),
        "from-stage-missing": (["train", "--resume", str(run), "--from-stage", "9"],
                               "stage_9.pt does not exist; stages with a checkpoint: 1, 2"),
        "show-unknown-directory": (["show", str(tmp_path / "nope")], "is not a run directory"),
        "show-corrupt-soft-labels": (["show", str(run)], "soft_labels.npz"),
        "config-json-not-training": (["train", "--resume", str(run)], "was not written by training"),
        "resume-with-config": (["train", "--resume", str(run), "--config", str(opts)],
                               "do not pass options (--config)"),
        "show-history-binary": (["show", str(run)], "history.csv"),
        "show-history-empty": (["show", str(run)], "history.csv: EmptyDataError"),
        "show-history-ragged": (["show", str(run)], "history.csv: ParserError"),
        "show-history-not-numeric": (["show", str(run)], "has no numeric column 'epoch'"),
        "show-history-fifo": (["show", str(run)], "history.csv is not a regular file"),
        "show-summary-not-json": (["show", str(run)], "summary.json of this run directory is damaged"),
        "show-summary-a-list": (["show", str(run)], "summary.json holds a list"),
        "show-config-lacks-method": (["show", str(run)], "lacks config.method"),
        "show-config-lacks-num-stages": (["show", str(run)], "lacks num_stages"),
        "show-soft-labels-nan": (["show", str(run)], "with values that are not finite"),
        "show-soft-labels-bool": (["show", str(run)], "stage_1 is a bool array"),
        "show-soft-labels-wrong-shape": (["show", str(run)], "expected a finite numeric 4 x 4 matrix"),
        "resume-summary-is-a-link": (["train", "--resume", str(run)], "summary.json is a symbolic link"),
        "resume-config-is-a-link": (["train", "--resume", str(run)], "config.json is a symbolic link"),
        "from-stage-zero-of-a-finished-run": (["train", "--resume", str(run), "--from-stage", "0"],
                                              "would replace the results"),
        "resume-last-pt-is-a-fifo": (["train", "--resume", str(run)], "last.pt is not a file"),
    }[case]
    if case == "corrupt-config-json":
        (run / "config.json").write_text('{"config": {"method": ')
    if case == "show-corrupt-soft-labels":
        (run / "soft_labels.npz").write_bytes(b"PK\x03\x04 broken zip")
    if case == "config-json-not-training":
        (run / "config.json").write_text('{"hello": 1}')
    _damage_run(run, case, tmp_path)
    before = files(run)
    code = main(argv)
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and needle in line, line
    assert files(run) == before


def _damage_run(run: Path, case: str, tmp_path: Path) -> None:
    """Damage a copied run directory the way `case` names (test_bad_run_directory)."""
    import json
    hist, summary, cfg, soft = (run / n for n in ("history.csv", "summary.json", "config.json", "soft_labels.npz"))
    resolved = json.loads(cfg.read_text()) if case.startswith("show-config") else None
    if case == "show-history-binary":
        hist.write_bytes(bytes(range(256)) * 4)
    elif case == "show-history-empty":
        hist.write_bytes(b"")
    elif case == "show-history-ragged":
        hist.write_text("epoch,stage\n1,1\n2,1,7,8\n")
    elif case == "show-history-not-numeric":
        hist.write_text("epoch,stage,test_acc\none,1,0.5\n")
    elif case == "show-history-fifo":
        hist.unlink()
        os.mkfifo(hist)
    elif case == "show-summary-not-json":
        summary.write_text("{not json")
    elif case == "show-summary-a-list":
        summary.write_text("[1, 2]")
    elif case == "show-config-lacks-method":
        del resolved["config"]["method"]
        cfg.write_text(json.dumps(resolved))
    elif case == "show-config-lacks-num-stages":
        del resolved["num_stages"]
        cfg.write_text(json.dumps(resolved))
    elif case.startswith("show-soft-labels-"):
        m = {"nan": np.full((4, 4), np.nan), "bool": np.eye(4, dtype=bool), "wrong-shape": np.eye(3)}[case[17:]]
        np.savez(soft, stage_1=m)
    elif case in ("resume-summary-is-a-link", "resume-config-is-a-link"):
        p = summary if "summary" in case else cfg
        p.rename(tmp_path / p.name)
        p.symlink_to(tmp_path / p.name)
    elif case == "resume-last-pt-is-a-fifo":
        summary.unlink()
        (run / "checkpoints" / "last.pt").unlink()
        os.mkfifo(run / "checkpoints" / "last.pt")


def test_show_reads_a_config_json_with_keys_it_does_not_know(tmp_path, capsys, finished_run):
    """A config.json from a newer version (an extra key in its dataset description) used to be a traceback."""
    import json
    run = _copy_run(finished_run, tmp_path / "run")
    resolved = json.loads((run / "config.json").read_text())
    resolved["dataset"]["license"] = "CC-BY"
    (run / "config.json").write_text(json.dumps(resolved))
    assert main(["show", str(run)]) == 0
    assert "colam on synthetic" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["resume", "load_run", "from-stage"])
def test_checkpoint_from_another_model(tmp_path, capsys, finished_run, where):
    other = tmp_path / "other"
    with Trainer(Config(method="colam", stages=2, **dict(QUICK, model="resnet20", train_limit=8, test_limit=8)),
                 out=other) as t:
        t.run_stage()
    run = _copy_run(finished_run, tmp_path / "run")
    if where == "resume":
        (run / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
        (run / "summary.json").unlink()
        before = files(run)
        code = main(["train", "--resume", str(run)])
        line = one_line_error(capsys.readouterr().err)
        assert code == 2 and "belongs to another configuration (model: 'resnet20' in the checkpoint" in line
        assert files(run) == before
    elif where == "from-stage":  # the foreign file is named, not last.pt
        (run / "checkpoints" / "stage_1.pt").write_bytes((other / "checkpoints" / "stage_1.pt").read_bytes())
        before = files(run)
        assert main(["train", "--resume", str(run), "--from-stage", "1", "--force"]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert "stage_1.pt belongs to another configuration (model: 'resnet20'" in line and "last.pt" not in line
        assert files(run) == before
    else:
        (run / "checkpoints" / "stage_1.pt").write_bytes((other / "checkpoints" / "stage_1.pt").read_bytes())
        with pytest.raises(RunError, match="does not fit model 'small_cnn'.*another model"):
            load_run(run).model(1)


DATA_CASES = ["cifar-truncated", "cifar-wrong-shape", "cifar-label-out-of-range", "cifar-malicious",
              "fashion-truncated", "imagefolder-empty-class", "imagefolder-not-an-image", "train-limit-below-classes",
              "fashion-no-test-images", "fashion-no-train-images", "imagefolder-one-class",
              "imagefolder-decompression-bomb", "imagefolder-class-folder-outside", "imagefolder-only-val-class"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_files_through_the_cli(tmp_path, capsys, monkeypatch, case):
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    out = tmp_path / "r"
    extra = []
    if case == "train-limit-below-classes":
        dataset, extra = "synthetic", ["--train-limit", "3"]
        needle = "train_limit=3 is smaller than the number of classes present (4)"
    elif case.startswith("cifar"):
        write_cifar10(root, rng)
        d = root / "cifar-10-batches-py"
        dataset = "cifar10"
        if case == "cifar-truncated":
            p = d / "data_batch_3"
            p.write_bytes(p.read_bytes()[:300])
            needle = "data_batch_3"
        elif case == "cifar-wrong-shape":
            obj = _reload(d / "data_batch_2")
            obj[b"data"] = obj[b"data"][:, :3000]
            _dump(d / "data_batch_2", obj)
            needle = "data_batch_2': data is a uint8 array of shape (4, 3000), expected a uint8 array of shape (n, 3072)"
        elif case == "cifar-label-out-of-range":
            obj = _reload(d / "test_batch")
            obj[b"labels"][0] = 10
            _dump(d / "test_batch", obj)
            needle = "labels contains 10, outside the allowed range 0..9"
        elif case == "cifar-malicious":
            _dump(d / "batches.meta", _Evil(str(tmp_path / "pwned")))
            needle = "refusing to load"
    elif case == "fashion-truncated":
        write_fashion(root, rng, gz=False)
        p = root / "train-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:-10])
        dataset, needle = "fashion_mnist", "train-images-idx3-ubyte' is truncated"
    elif case.startswith("fashion-no-"):  # found only after the whole training, or a traceback
        split = case.split("-")[2]
        write_fashion(root, rng, gz=False, **{f"n_{split}": 0})
        dataset, needle = "fashion_mnist", f"the {'training' if split == 'train' else 'test'} split holds 0 images"
    else:
        write_folder(root, classes=("cat",) if case == "imagefolder-one-class" else ("cat", "dog"))
        dataset = "imagefolder"
        extra = ["--image-size", "32"]
        if case == "imagefolder-one-class":
            needle = "has 1 class folder(s) ['cat']; classification needs at least 2"
        elif case == "imagefolder-decompression-bomb":
            monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 100)  # the 40x36 test images: over twice the limit
            extra += ["--num-workers", "0"]
            needle = "DecompressionBombError"
        elif case == "imagefolder-class-folder-outside":
            (tmp_path / "birds").mkdir()
            (root / "train" / "bird").symlink_to(tmp_path / "birds", target_is_directory=True)
            (root / "val" / "bird").mkdir()
            needle = "outside"
        elif case == "imagefolder-only-val-class":
            (root / "val" / "bird").mkdir()
            needle = "['bird'] exist in"
        elif case == "imagefolder-empty-class":
            (root / "train" / "bird").mkdir()
            (root / "val" / "bird").mkdir()
            needle = "bird'] contain no image files (allowed extensions"
        else:
            (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really an image")
            extra += ["--num-workers", "2"]  # the error comes back from a DataLoader worker
            needle = "cannot decode image file"
    code = main(["train", "--dataset", dataset, *(["--data-root", str(root)] if root.exists() else []),
                 "--epochs", "1", "--stages", "1",
                 "--batch-size", "4", "--device", "cpu", "--quiet", "--out", str(out), *extra])
    line = one_line_error(capsys.readouterr().err)
    assert code == 2 and needle in line, line
    assert not (tmp_path / "pwned").exists()
    if case not in ("imagefolder-not-an-image", "imagefolder-decompression-bomb"):  # found while loading
        assert not out.exists()


def _reload(path):
    import pickle
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


NOTEBOOK_BAD = [
    pytest.param({"T": "abc"}, "T", "a number", id="T-text"),
    pytest.param({"T": -1}, "T", "a finite number > 0", id="T-negative"),
    pytest.param({"epochs": 12.5}, "epochs", "an integer", id="epochs-fraction"),
    pytest.param({"tempreature": 1.5}, "tempreature", "did you mean 'T'", id="unknown-name"),
    pytest.param({"peer_samples": "ten"}, "peer_samples", "'all' or an integer", id="peer-samples-text"),
    pytest.param({"milestones": [0.75, 0.5]}, "milestones", "increasing fractions", id="milestones-decreasing"),
    pytest.param({"method": "colam++"}, "method", "colam", id="method-unknown"),
    pytest.param({"dataset": "cifar10", "data_root": "/nonexistent/dir"}, "data_root", "--download",
                 id="data-root-missing"),
    pytest.param({"download": "maybe"}, "download", "true or false", id="download-text"),
    pytest.param({"batch_size": True}, "batch_size", "an integer >= 1", id="batch-size-bool"),
    pytest.param({"epochs": 10, "stages": 4}, "epochs", "a multiple of stages=4", id="epochs-not-multiple"),
    pytest.param({"hard_weight": "1.5"}, "hard_weight", "<= 1", id="hard-weight-too-big"),
    pytest.param({"T": "1_5"}, "T", "a number (digits 0-9", id="T-underscore-text"),
    pytest.param({"seed": 1e20}, "seed", "an integer from 0 to 4294967295", id="seed-1e20"),
    pytest.param({"amp": "fp16", "device": "cpu"}, "amp", "auto, off or bf16", id="amp-fp16-cpu"),
    pytest.param({"image_size": "20000", "dataset": "imagefolder"}, "image_size", "from 8 to 4096",
                 id="image-size-huge"),
]


@pytest.mark.parametrize("params, option, allowed", NOTEBOOK_BAD)
def test_validate_params_rejects(params, option, allowed):
    with pytest.raises(ConfigError) as e:
        validate_params(params)
    assert e.value.option == option and allowed in str(e.value) and "\n" not in str(e.value)


def test_validate_params_accepts_papermill_values():
    cfg = validate_params({"T": "1.5", "peer_samples": "all", "milestones": "0.5,0.75", "epochs": 12.0, "stages": 4,
                           "data_root": "none", "channels_last": "auto", "download": "false", "lr": 1,
                           "dataset": "synthetic", "schedule": "multistep"})
    assert (cfg.T, cfg.peer_samples, cfg.milestones, cfg.epochs, cfg.data_root, cfg.channels_last, cfg.download,
            cfg.lr) == (1.5, "all", (0.5, 0.75), 12, None, None, False, 1.0)
    assert validate_params({"peer_samples": 10.0}).peer_samples == 10
    assert validate_params({"peer_samples": "10"}).peer_samples == 10
    assert validate_params({}) == Config().validate()


API_BAD = ["unknown-key", "string-number", "load-run-missing", "soft-labels-missing-stage", "model-missing-stage",
           "config-not-a-dict", "from-stage-negative", "from-stage-text", "trainer-out-holds-files"]


@pytest.mark.parametrize("case", API_BAD)
def test_python_api_bad_input(tmp_path, finished_run, case):
    if case == "unknown-key":
        with pytest.raises(ConfigError, match="temperature: invalid value 2; allowed: known options"):
            Trainer({"temperature": 2}, out=tmp_path / "r")
        assert not (tmp_path / "r").exists()
    elif case == "string-number":
        with pytest.raises(ConfigError, match=r"T: invalid value '1\.5'; allowed: a finite number > 0"):
            Trainer(Config(T="1.5", **QUICK), out=tmp_path / "r")
    elif case == "load-run-missing":
        with pytest.raises(RunError, match="is not a run directory"):
            load_run(tmp_path / "nope")
    elif case == "soft-labels-missing-stage":
        with pytest.raises(KeyError, match="no soft labels 'stage_9'; available: stage_1"):
            load_run(finished_run).soft_labels(9)
    elif case == "model-missing-stage":
        with pytest.raises(KeyError, match=r"no checkpoint for stage 9; available: \[1, 2\]"):
            load_run(finished_run).model(9)
    elif case in ("from-stage-negative", "from-stage-text"):
        with pytest.raises(ConfigError, match="from_stage: invalid value .*; allowed: a stage number K >= 0"):
            Trainer(Config(**QUICK), out=tmp_path / "r", from_stage=-1 if case.endswith("negative") else "2")
        assert not (tmp_path / "r").exists()
    elif case == "trainer-out-holds-files":
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "summary.json").write_text("my own")
        with pytest.raises(RunError, match=r"holds files that training did not write \(summary.json\)"):
            Trainer(Config(**QUICK), out=tmp_path / "notes")
        assert [p.name for p in (tmp_path / "notes").iterdir()] == ["summary.json"]
    else:
        with pytest.raises(ConfigError, match="params"):
            validate_params([("T", 1.5)])


def test_bad_input_table_lists_150_rows_and_every_test_exists():
    """docs/RELIABILITY.md keeps the bad-input table; every test it names must exist in tests/."""
    text = (ROOT / "docs" / "RELIABILITY.md").read_text()
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|") and not set(ln) <= set("|-: ")]
    header, rows = rows[0], rows[1:]
    assert "test" in header.lower()
    assert len(rows) >= 150, len(rows)
    assert [int(c.strip("| ").split(" |")[0]) for c in rows] == list(range(1, len(rows) + 1)), "rows are numbered"
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    inputs = [c[2] for c in cells]
    assert len(set(inputs)) == len(inputs), "every row is a distinct bad input"
    defined: dict[str, set[str]] = {}
    literals: dict[str, str] = {}
    for f in (ROOT / "tests").glob("test_*.py"):
        src = f.read_text()
        defined[f.name] = {n.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef)}
        literals[f.name] = src
    for c in cells:
        refs = re.findall(r"`tests/(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`", c[-1])
        assert refs, f"row without a test: {c}"
        for fname, func, param in refs:
            assert func in defined.get(fname, set()), f"{fname}::{func} does not exist"
            if param:
                assert re.search(rf"""["']{re.escape(param)}["']""", literals[fname]), f"{fname}::{func}[{param}]"


# ============================================================================= security
class _Evil:
    """Unpickling this runs code that writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_malicious_checkpoints_are_refused_and_run_nothing(tmp_path, capsys, finished_run):
    marker = tmp_path / "pwned"
    evil = {"model": _Evil(marker), "epoch": 1}
    control = tmp_path / "control.pt"
    torch.save(evil, control)
    torch.load(control, weights_only=False)  # the payload is live: unrestricted loading runs it
    assert marker.exists()
    marker.unlink()

    run = _copy_run(finished_run, tmp_path / "run")
    torch.save(evil, run / "checkpoints" / "last.pt")
    (run / "summary.json").unlink()
    before = files(run)
    with pytest.raises(RunError, match="asks to run code on loading, which is refused"):
        Trainer(Config(method="colam", stages=2, **QUICK), out=run)
    assert main(["train", "--resume", str(run)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "last.pt" in line and "refused" in line and "--from-stage 2" in line
    with pytest.raises(RunError, match="refused"):
        load_run(run).model()
    assert files(run) == before

    torch.save(evil, run / "checkpoints" / "stage_1.pt")
    with pytest.raises(RunError, match="stage_1.pt: it is not a plain tensor checkpoint"):
        load_run(run).model(1)
    assert not marker.exists()


def test_soft_labels_with_an_object_array_are_refused(tmp_path, capsys, finished_run):
    marker = tmp_path / "pwned"
    run = _copy_run(finished_run, tmp_path / "run")
    np.savez(run / "soft_labels.npz", stage_1=np.array([_Evil(marker)], dtype=object))
    with np.load(run / "soft_labels.npz", allow_pickle=True) as z:  # control: the payload is live
        z["stage_1"]
    assert marker.exists()
    marker.unlink()

    with pytest.raises(RunError, match="pickled objects are refused"):
        load_run(run).soft_labels(1)
    from colam_core import analysis
    with pytest.raises(RunError):
        analysis.soft_labels_by_stage(load_run(run))
    with pytest.raises(ConfigError, match="fixed_targets"):
        Config(method="fixed", fixed_targets=f"{run}:stage_1", **QUICK).validate()
    assert main(["show", str(run)]) == 2
    assert "soft_labels.npz" in one_line_error(capsys.readouterr().err)
    assert not marker.exists()


def test_nothing_reaches_the_network(tmp_path, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access: {args}")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    out = tmp_path / "r"
    assert main(["train", *CLI_QUICK, "--method", "colam", "--epochs", "2", "--stages", "2", "--out", str(out)]) == 0
    assert main(["show", str(out)]) == 0
    from colam_core import analysis
    run = load_run(out)
    run.model(1)
    run.soft_labels(1)
    analysis.calibration_for_run(run)
    analysis.template_distances_for_run(run)
    analysis.adt_adc_for_run(run)
    feats = analysis.penultimate_features(run.model(), run.data("test")[0])
    analysis.embed(feats, method="pca")
    analysis.soft_labels_by_stage(run)
    assert calls == []

    # the guard is live: a download the user asked for does try the network (and fails cleanly offline)
    from colam_core.data import DataError, load_dataset
    with pytest.raises(DataError, match="downloading cifar10"):
        load_dataset("cifar10", data_root=str(tmp_path / "empty"), download=True)
    assert calls
