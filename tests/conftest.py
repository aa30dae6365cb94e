"""Shared fixtures: tiny trained runs, trained once per test session."""
import pytest

from colam_core import Config, Trainer, load_run

TINY = dict(dataset="synthetic", model="small_cnn", batch_size=32, lr=0.05)


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
