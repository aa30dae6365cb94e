"""Tracking: `log="tensorboard"` / `log="mlflow"` mirror a run, read back with each tool's own reader (local files
under tmp_path only; nothing reaches the network)."""
import numpy as np
import pandas as pd
import pytest

from colam_core import Config, ConfigError, Trainer
from colam_core.tracking import soft_label_image

TINY = dict(dataset="synthetic", model="small_cnn", batch_size=32, method="colam", epochs=2, stages=2)


@pytest.fixture(autouse=True)
def _no_mlflow_environment(monkeypatch, tmp_path):
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # whatever a tool writes in the working folder stays in tmp_path


def _train(out, **kw):
    with Trainer(Config(**{**TINY, **kw}), out=out) as trainer:
        return trainer.run()


def _accumulator(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    return acc.Reload()


# ----------------------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files_hold_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    summary = _train(out, log="tensorboard")
    acc = _accumulator(out)
    history = pd.read_csv(out / "history.csv")
    test_acc = acc.Scalars("test_acc")
    assert [e.step for e in test_acc] == [1, 2]
    assert np.allclose([e.value for e in test_acc], history["test_acc"])
    assert {"train_loss", "lr", "soft_labels/own_mass_mean", "final/test_acc", "final/test_ece"} <= set(
        acc.Tags()["scalars"])
    assert acc.Scalars("final/test_ece")[0].value == pytest.approx(summary["test_ece"])
    assert acc.Scalars("final/test_ece_T1")[0].value == pytest.approx(summary["test_ece_T1"])  # both ways
    assert [e.step for e in acc.Images("soft_labels")] == [1]  # one update: the end of stage 1
    assert "config" in " ".join(acc.Tags()["tensors"])  # config.json as text
    plugins = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_tensorboard_resume_continues_without_duplicates(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    cfg = Config(**{**TINY, "epochs": 4}, log="tensorboard")
    with Trainer(cfg, out=out) as trainer:
        trainer.run_stage()  # epochs 1-2, then the process "ends"
    with Trainer(cfg, out=out) as trainer:
        assert trainer.epoch == 2
        trainer.run()
    assert [e.step for e in _accumulator(out).Scalars("test_acc")] == [1, 2, 3, 4]


def test_a_sweep_writes_one_tensorboard_run_per_entry(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from colam_core.sweeps import Sweep
    base = Config(**{**TINY, "epochs": 1, "stages": 1}, log="tensorboard")
    Sweep(tmp_path / "sweep", {"a": base, "b": base.replace(T=2.0)}).run(progress=False)
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "sweep")).Reload()
    assert sorted(mux.Runs()) == ["a/tensorboard", "b/tensorboard"]  # `tensorboard --logdir ROOT` shows both
    assert all(len(mux.Scalars(run, "test_acc")) == 1 for run in mux.Runs())


def test_a_failing_tracker_warns_and_training_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from colam_core.tracking import TensorBoardTracker

    def broken(self, metrics, step):
        raise OSError("disk full")

    monkeypatch.setattr(TensorBoardTracker, "log_metrics", broken)
    with pytest.warns(RuntimeWarning, match="tensorboard.*disk full.*is complete"):
        summary = _train(tmp_path / "r", log="tensorboard")
    assert summary is not None and (tmp_path / "r" / "summary.json").exists()


# ----------------------------------------------------------------------------- MLflow
def test_mlflow_local_store_reads_back_with_mlflows_client(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    out = tmp_path / "runs" / "demo"
    summary = _train(out, log="mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")  # the default store
    exp = client.get_experiment_by_name("runs")  # named after the folder holding the run directory
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "demo" and run.info.status == "FINISHED"
    assert run.data.tags["colam.run_dir"] == str(out.resolve()) and run.data.tags["colam.format"] == "2"
    assert run.data.params["T"] == "1.5" and run.data.params["method"] == "colam"
    history = pd.read_csv(out / "history.csv")
    test_acc = client.get_metric_history(run.info.run_id, "test_acc")
    assert sorted(m.step for m in test_acc) == [1, 2]
    assert np.allclose([m.value for m in sorted(test_acc, key=lambda m: m.step)], history["test_acc"])
    assert run.data.metrics["final/test_ece"] == pytest.approx(summary["test_ece"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"soft_labels", "summary.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "soft_labels")] == ["soft_labels/stage_1.png"]


def test_mlflow_tracking_uri_resume_and_stop(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    out = tmp_path / "r"
    cfg = Config(**{**TINY, "epochs": 4}, log="mlflow", tracking_uri=uri)
    with Trainer(cfg, out=out) as trainer:
        trainer.run_stage()
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    assert run.info.status == "KILLED"  # closed before the end: resumable
    with Trainer(cfg, out=out) as trainer:
        trainer.run()
    (again,) = client.search_runs([run.info.experiment_id])  # the resumed run logs into the same MLflow run
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc")) == [1, 2, 3, 4]
    assert not (tmp_path / "mlflow.db").exists()  # the given URI, not the default store
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())  # beside the given SQLite file
    assert not (tmp_path / "mlruns").exists()


def test_an_mlflow_store_that_cannot_open_fails_before_training(tmp_path):
    pytest.importorskip("mlflow")
    with pytest.raises(ConfigError) as e:
        Trainer(Config(**TINY, log="mlflow", tracking_uri="nosuchscheme://x"), out=tmp_path / "r")
    assert e.value.option == "tracking_uri"
    assert not (tmp_path / "r").exists()  # the folder this call created is removed


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("kw, option", [
    (dict(log="wandb"), "log"),
    (dict(log="tensorboard,tensorboard"), "log"),
    (dict(log=3), "log"),
    (dict(tracking_uri="sqlite:///x.db"), "tracking_uri"),  # without --log mlflow
])
def test_bad_tracking_options(kw, option):
    with pytest.raises(ConfigError) as e:
        Config(**kw).validate()
    assert e.value.option == option


def test_a_tracker_that_is_not_installed_names_the_extra(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"colam-workbench\[mlflow\]"):
        Config(log="mlflow").validate()


def test_tracking_options_stay_outside_the_fingerprint():
    assert Config(log="tensorboard").fingerprint() == Config().fingerprint()
    assert Config(log="none").trackers == () and Config(log="TensorBoard, mlflow").trackers == ("tensorboard",
                                                                                               "mlflow")


def test_final_metrics_report_calibration_both_ways_and_skip_what_an_old_summary_lacks():
    from colam_core.tracking import final_metrics
    assert final_metrics({"test_acc": 0.9, "test_ece": 0.05, "test_ece_T1": 0.03}) == {
        "final/test_acc": 0.9, "final/test_ece": 0.05, "final/test_ece_T1": 0.03}
    assert final_metrics({"test_acc": 0.9, "test_ece": 0.05}) == {"final/test_acc": 0.9, "final/test_ece": 0.05}


def test_soft_label_image():
    img = soft_label_image(np.eye(10) * 0.9 + 0.01)
    assert img.dtype == np.uint8 and img.shape == (250, 250, 3)
    assert img[0, 0].sum() > img[0, 30].sum()  # the diagonal is brighter
    assert (img[:25, :25] == img[0, 0]).all()  # a cell is a 25 x 25 square
