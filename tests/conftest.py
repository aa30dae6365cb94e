"""Shared fixtures: tiny trained runs, trained once per test session. The plugin tests/no_traceback.py fails any
test named in docs/RELIABILITY.md's tables whose output holds a Python traceback."""
import pytest

from colam_core import Config, Trainer, load_run

pytest_plugins = ["no_traceback"]

TINY = dict(dataset="synthetic", model="small_cnn", batch_size=32, lr=0.05, amp="off")  # float32: tests recompute


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Finished synthetic runs (4 classes, 8x8 images): ``colam`` (6 epochs, 3 stages: soft labels
    ``stage_1`` and ``stage_2``), ``hl`` and ``ls`` (4 epochs each). ``{name: Run}``; treat as read-only."""
    root = tmp_path_factory.mktemp("tiny_runs")
    configs = {
        "colam": Config(method="colam", epochs=6, stages=3, T=1.5, **TINY),
        "hl": Config(method="hl", epochs=4, **TINY),
        "ls": Config(method="ls", epochs=4, **TINY),
    }
    for name, cfg in configs.items():
        with Trainer(cfg, out=root / name) as trainer:
            trainer.run()
    return {name: load_run(root / name) for name in configs}


def erased_matrix(C: int, erased: int, taken_by: int):
    """A C x C soft-label matrix whose row ``erased`` puts more mass on ``taken_by`` than on itself."""
    import numpy as np
    s = np.full((C, C), 0.1 / C) + 0.9 * np.eye(C)
    s[erased] = 0.1 / C
    s[erased, erased], s[erased, taken_by] = 0.3, 0.6
    return s / s.sum(axis=1, keepdims=True)


@pytest.fixture(scope="session")
def erased_run(tiny_runs, tmp_path_factory):
    """A copy of ``tiny_runs["colam"]`` whose stage_2 labels erase class 2 (taken by class 3); stage_1 stays."""
    import shutil

    import numpy as np

    from colam_core.runs import SOFT_LABELS_FILE
    src = tiny_runs["colam"]
    dst = tmp_path_factory.mktemp("erased") / "colam_erased"
    shutil.copytree(src.path, dst)
    C = len(src.class_names)
    np.savez(dst / SOFT_LABELS_FILE, stage_1=src.soft_labels(1), stage_2=erased_matrix(C, 2, 3).astype(np.float32))
    return load_run(dst)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real one-node Slurm (munged, slurmctld, slurmd; tests/slurmcluster.py) started once per session and stopped
    at its end; clients (sbatch, submitit) find it through SLURM_CONF. Skipped, saying why, where it cannot run."""
    import os

    from slurmcluster import SlurmCluster, missing
    why = missing()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
