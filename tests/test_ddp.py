"""Data-parallel training: sharding arithmetic, and 2 CPU processes (gloo) on loopback launched by torchrun.

The slow tests launch `python -m torch.distributed.run --nproc_per_node=2 --master_addr 127.0.0.1 --master_port P`
in a new session with a timeout (the whole process group is killed when it runs out). This file doubles as the
worker script: `torchrun ... tests/test_ddp.py --worker OUT`.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "images_per_s"}
# float32 (amp auto is bf16 on CPUs with AMX): the tests compare with float32 computations of one process
BASE = dict(dataset="synthetic", model="small_cnn", epochs=4, batch_size=32, lr=0.05, device="cpu", amp="off")


# ----------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, timeout=400, env_extra=None):
    """Launch 2 processes on loopback; (returncode, stdout, stderr). Kills the whole session on timeout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    if not env_extra or "COLAM_FAULT" not in env_extra:
        env.pop("COLAM_FAULT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), *map(str, args)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
        raise AssertionError(f"torchrun timed out after {timeout} s:\n{err[-4000:]}") from None
    return p.returncode, out, err


def class_mean_soft_labels(model, x, y, C, T, peers=None, average="logits"):
    """The single-process COLAM update over the whole (peer) training set, in float64."""
    if peers is not None:
        x, y = x[peers], y[peers]
    with torch.no_grad():
        z = model(x).double()
    vals = z if average == "logits" else F.softmax(z / T, 1)
    mean = torch.stack([vals[y == c].mean(0) for c in range(C)])
    soft = F.softmax(mean / T, 1) if average == "logits" else mean
    return (soft / soft.sum(1, keepdim=True)).numpy()


# ============================================================================= arithmetic (fast)
def test_shard_positions_partition_every_batch():
    from colam_core.distributed import shard_positions, shard_range
    for world in range(1, 6):
        for n in range(0, 41):
            parts = [shard_positions(n, r, world) for r in range(world)]
            assert torch.equal(torch.cat(parts), torch.arange(n))  # disjoint, complete, in order
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
            for r, p in enumerate(parts):
                assert torch.equal(p, torch.arange(*shard_range(n, r, world)))
            if n % 2 == 0:  # CS-KD batches: [originals, partners]
                k = n // 2
                pp = [shard_positions(n, r, world, paired=True) for r in range(world)]
                assert sorted(torch.cat(pp).tolist()) == list(range(n))
                for p in pp:
                    h = len(p) // 2
                    assert torch.equal(p[h:], p[:h] + k)


def test_sharded_train_batches_are_the_whole_batch_cut_into_pieces():
    """Every rank's share, augmentation included, is exactly its slice of the single-process batch."""
    from colam_core.data import load_dataset, make_pair_batch_sampler
    from colam_core.distributed import shard_positions
    data = load_dataset("synthetic", seed=0)
    for sampler in (None, make_pair_batch_sampler(data.train_labels)):
        paired = sampler is not None
        whole = list(data.train_batches(24, 3, 7, augment="crop_flip", batch_sampler=sampler, start_batch=2))
        for world in (2, 3):
            shards = [list(data.train_batches(24, 3, 7, augment="crop_flip", batch_sampler=sampler, start_batch=2,
                                              shard=(r, world))) for r in range(world)]
            for b, (x, y, idx) in enumerate(whole):
                for r in range(world):
                    pos = shard_positions(len(idx), r, world, paired)
                    xs, ys, ids = shards[r][b]
                    assert torch.equal(ids, idx[pos]) and torch.equal(ys, y[pos]) and torch.equal(xs, x[pos])


def test_sharded_eval_covers_every_sample_exactly_once():
    from colam_core.data import load_dataset
    from colam_core.distributed import Dist, ShardedData
    data = load_dataset("synthetic", seed=0)
    peers = torch.tensor([3, 9, 10, 40, 41, 100, 255])
    for world in (2, 3, 5):
        for split, indices, want in (("train", None, torch.arange(256)), ("test", None, torch.arange(128)),
                                     ("train", peers, peers)):
            got = [idx for r in range(world)
                   for _, _, idx in ShardedData(data, Dist(rank=r, world_size=world)).eval_batches(split, 50, indices)]
            assert torch.equal(torch.cat(got), want)


def _data_parallel(world_size: int):
    """A DataParallel strategy as rank 0 of `world_size` processes (no process group: only its arithmetic)."""
    from colam_core.distributed import Dist
    from colam_core.training.strategy import DataParallel
    return DataParallel(Dist(rank=0, world_size=world_size), torch.device("cpu"))


def test_ddp_loss_scale_gives_the_global_mean_gradient():
    N, bs, W = 250, 32, 3
    strategy = _data_parallel(W)
    from colam_core.distributed import shard_range
    for b in (0, 7):  # a full batch and the short last one (250 = 7 * 32 + 26)
        n = min(bs, N - b * bs)
        per_sample = torch.rand(n, dtype=torch.float64)
        ddp_avg = sum(strategy.scale_loss(per_sample[slice(*shard_range(n, r, W))].mean(), b,
                                          len(range(*shard_range(n, r, W))), N, bs) for r in range(W)) / W
        assert float(ddp_avg) == pytest.approx(float(per_sample.mean()), rel=1e-12)


def test_a_batch_smaller_than_the_process_count_is_refused():
    from colam_core.config import ConfigError
    strategy = _data_parallel(4)
    with pytest.raises(ConfigError, match=r"leaves a batch of 1 for 4 processes \(e\.g\. --batch-size"):
        strategy.check_batches(257, 32)
    strategy.check_batches(256, 32)


def test_single_process_has_no_process_group():
    from colam_core.distributed import setup
    d, dev = setup(torch.device("cpu"))
    assert not d.enabled and d.is_main and dev == torch.device("cpu")
    assert d.run(lambda: 41 + 1) == 42 and d.gather_cat(torch.ones(2)).tolist() == [1, 1]


# ============================================================================= 2 processes (slow)
@pytest.mark.slow
def test_torchrun_cli_trains_like_one_process_and_resumes_after_a_kill(tmp_path):
    from colam_core import load_run
    from colam_core.analysis import expected_calibration_error
    args = ["-m", "colam_core", "train", "--dataset", "synthetic", "--method", "colam", "--epochs", "4", "--stages",
            "2", "--batch-size", "32", "--device", "cpu", "--amp", "off", "--quiet"]
    full = tmp_path / "full"
    rc, out, err = torchrun(*args, "--out", full)
    assert rc == 0, err[-4000:]
    assert out.count("done:") == 1  # rank 0 speaks, rank 1 is silent
    # the run directory is complete and loadable
    names = {p.relative_to(full).as_posix() for p in full.rglob("*") if p.is_file()}
    assert {"config.json", "history.csv", "soft_labels.npz", "summary.json", "checkpoints/last.pt",
            "checkpoints/stage_1.pt", "checkpoints/stage_2.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    run = load_run(full)
    assert run.resolved["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert len(run.history) == 4 and run.soft_label_keys() == ["stage_1"]
    # the all-reduced soft labels are the single-process computation over the whole training set
    x, y = run.data("train")
    want = class_mean_soft_labels(run.model(1), x, y, 4, 1.5)
    np.testing.assert_allclose(run.soft_labels(1), want, rtol=1e-5, atol=1e-7)
    # test metrics from sharded evaluation equal one process evaluating everything
    xt, yt = run.data("test")
    with torch.no_grad():
        z = run.model()(xt).double()
    assert run.history["test_acc"].iloc[-1] == pytest.approx(float((z.argmax(1) == yt).double().mean()), abs=1e-12)
    assert run.history["test_loss"].iloc[-1] == pytest.approx(float(F.cross_entropy(z / 1.5, yt)), rel=1e-5)
    ece = expected_calibration_error(F.softmax(z / 1.5, 1).numpy(), yt.numpy())
    assert run.summary["test_ece"] == pytest.approx(ece, abs=1e-6)

    # every rank SIGKILLs itself mid-epoch 3 (batch 19 of 32 steps); torchrun reports the failure
    cut = tmp_path / "cut"
    rc, _, err = torchrun(*args, "--out", cut, env_extra={"COLAM_FAULT": "batch:19"})
    assert rc != 0
    assert json.loads((cut / "config.json").read_text())["distributed"]["world_size"] == 2
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    # resume under DDP: every rank loads last.pt; the result is bitwise that of the uninterrupted run
    rc, out, err = torchrun("-m", "colam_core", "train", "--resume", cut, "--quiet")
    assert rc == 0, err[-4000:]
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    np.testing.assert_array_equal(load_run(full).soft_labels(1), load_run(cut).soft_labels(1))
    cols = [c for c in load_run(full).history.columns if c not in TIMING]
    assert load_run(full).history[cols].equals(load_run(cut).history[cols])


@pytest.mark.slow
def test_every_rank_holds_the_same_state_for_every_stateful_method(tmp_path):
    from colam_core import Config, load_run
    from colam_core.methods import build_method
    rc, out, err = torchrun("tests/test_ddp.py", "--worker", tmp_path, timeout=600)
    assert rc == 0, err[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["locked"] and not r1["locked"]  # only rank 0 holds the run directory's lock (and writes)
    for name, cfg_kw in WORKER_CASES.items():
        a, b = r0[name], r1[name]
        for k in a["model"]:  # DDP keeps the replicas identical
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)
        if a["soft"] is not None or b["soft"] is not None:
            assert torch.equal(a["soft"], b["soft"]), name  # all-reduced: identical on every rank
            np.testing.assert_allclose(a["soft"].sum(1).numpy(), 1, rtol=1e-5)
        if "teacher" in a:
            assert all(torch.equal(a["teacher"][k], b["teacher"][k]) for k in a["teacher"]), name
        run = load_run(tmp_path / name)
        x, y = run.data("train")
        cfg = Config(**{**BASE, **cfg_kw})
        if name.startswith("colam") and cfg.update == "eval":  # same weights -> same labels as one process
            peers = build_method(cfg, 4, y, "cpu").peer_indices(1)
            want = class_mean_soft_labels(run.model(1), x, y, 4, cfg.T, peers, cfg.average)
            np.testing.assert_allclose(a["soft"].numpy(), want, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(run.soft_labels(1), want, rtol=1e-5, atol=1e-7)
        if name == "lr":  # the frozen teacher of generation 2 is the generation-1 model rank 0 checkpointed
            want = run.model(1).state_dict()
            assert all(torch.equal(a["teacher"][k], want[k]) for k in want), name
            with torch.no_grad():  # its displayed class means: each rank measured its share, then summed
                p = F.softmax(run.model(1)(x).float(), 1)
            means = torch.stack([p[y == c].mean(0) for c in range(4)])
            torch.testing.assert_close(a["soft"], means, rtol=1e-5, atol=1e-6)
    # a stop asked on rank 0 only (the widget) is agreed: both ranks stop at the same batch, resume from last.pt
    for r in (r0, r1):
        assert r["stop"]["returned_none"] and r["stop"]["stopped"] == [(2, 10)]
        assert r["stop"]["resumed_at"] == (1, 10)
    for k in r0["stop"]["model"]:
        assert torch.equal(r0["stop"]["model"][k], r0["stop_full"][k]), k


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_cleanly_and_resumes(tmp_path):
    """A terminal's Ctrl-C reaches torchrun and both workers (and torchrun forwards it once more)."""
    import time

    from colam_core import load_run
    out = tmp_path / "r"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("COLAM_FAULT", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "colam_core", "train", "--dataset", "synthetic", "--method",
           "colam", "--epochs", "12", "--stages", "2", "--batch-size", "16", "--device", "cpu", "--quiet", "--out",
           str(out)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (out / "history.csv").exists() and p.poll() is None:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate(timeout=60)
    assert stdout.count("stopped; resume with: torchrun --nproc_per_node=2 -m colam_core train --resume") == 1, \
        stdout + stderr[-3000:]
    assert 'File "' + str(ROOT / "colam_core") not in stderr  # no worker died inside colam_core
    st = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert st["epoch"] < 12 and load_run(out).summary is None
    rc, _, err = torchrun("-m", "colam_core", "train", "--resume", out, "--quiet")
    assert rc == 0, err[-4000:]
    run = load_run(out)
    assert len(run.history) == 12 and run.history["epoch"].tolist() == list(range(1, 13)) and run.summary


# ----------------------------------------------------------------------------- the worker (run by torchrun)
WORKER_CASES = {
    "colam": dict(method="colam", stages=2),
    "colam_peers": dict(method="colam", stages=2, peer_samples=10),
    "colam_probs": dict(method="colam", stages=2, average="probs"),
    "colam_online": dict(method="colam", stages=2, update="online"),
    "ols": dict(method="ols"),
    "lr": dict(method="lr", stages=2, epochs=2),
    "cskd": dict(method="cskd"),
}


def _worker(out: Path) -> None:
    import torch.distributed as dist

    from colam_core import Config, Trainer
    dist.init_process_group("gloo")  # the caller's process group: the trainers use it and leave it open
    rank = dist.get_rank()
    results = {}
    for name, kw in WORKER_CASES.items():
        with Trainer(Config(**{**BASE, **kw}), out=out / name) as t:
            t.run()
            soft = t.soft_labels
            results[name] = {"model": t.model.state_dict(), "soft": None if soft is None else torch.as_tensor(soft)}
            if name == "lr":
                results[name]["teacher"] = {k: v.cpu() for k, v in t.method.teacher_model.state_dict().items()}
            results["locked"] = t.run_dir.locked
    cfg = Config(**{**BASE, "batch_size": 16}, method="colam", stages=2)
    stop = {"stopped": []}
    with Trainer(cfg, out=out / "stop") as t:
        if rank == 0:
            t.subscribe(lambda ev: t.request_stop() if ev.kind == "batch" and (ev.epoch, ev.batch) == (2, 3) else None)
        t.subscribe(lambda ev: stop["stopped"].append((ev.epoch, ev.batch)) if ev.kind == "stopped" else None)
        stop["returned_none"] = t.run() is None
    with Trainer(cfg, out=out / "stop") as t:
        stop["resumed_at"] = (t.epoch, t.batch)
        t.run()
        stop["model"] = t.model.state_dict()
    results["stop"] = stop
    with Trainer(cfg, out=out / "stop_full") as t:
        t.run()
        results["stop_full"] = t.model.state_dict()
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: torchrun --nproc_per_node=2 tests/test_ddp.py --worker OUT")
