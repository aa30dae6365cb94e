"""Notebook parameter validation and the pre-run duration estimate."""
import pytest
import torch

from colam_core import Config, Trainer
from colam_core.config import ConfigError
from colam_core.training import describe_estimate, estimate_duration
from colam_core.params import check_classes, check_path, notebook_config


def test_notebook_config_validates_like_the_cli():
    cfg = notebook_config(dict(dataset="digits", method="colam", T=1.5, epochs=12, stages=4))
    assert cfg.T == 1.5
    with pytest.raises(ConfigError) as e:
        notebook_config(dict(T=-1))
    assert e.value.option == "T" and "allowed" in str(e.value)
    with pytest.raises(ConfigError) as e:
        notebook_config(dict(method="foo"))
    assert e.value.option == "method" and "colam" in str(e.value)
    with pytest.raises(ConfigError) as e:
        notebook_config(dict(temperature=2))
    assert e.value.option == "temperature"
    with pytest.raises(ConfigError) as e:
        notebook_config(dict(), quick="yes")
    assert e.value.option == "quick"


def test_quick_overrides_apply_after_validating_the_users_values():
    cfg = notebook_config(dict(epochs=160, stages=4), quick=True, quick_overrides=dict(epochs=2, stages=2))
    assert (cfg.epochs, cfg.stages) == (2, 2)
    with pytest.raises(ConfigError, match="epochs"):
        notebook_config(dict(epochs=10, stages=4), quick=True, quick_overrides=dict(epochs=2, stages=2))


def test_peer_samples_from_a_string():
    assert notebook_config(dict(peer_samples="10")).peer_samples == 10
    assert notebook_config(dict(peer_samples="all")).peer_samples == "all"


def test_small_checks(tmp_path):
    assert check_classes("classes", [1, 2, 3], 10) == [1, 2, 3]
    for bad in ([1, 1, 2], [1, 2], [1, 2, 30], "1,2,3", [True, 1, 2]):
        with pytest.raises(ConfigError, match="classes"):
            check_classes("classes", bad, 10)
    with pytest.raises(ConfigError, match="run directory"):
        check_path("run_dir", tmp_path, run_dir=True)


def test_estimate_does_not_touch_the_run(tmp_path):
    cfg = Config(dataset="synthetic", epochs=2, stages=1, batch_size=32)
    with Trainer(cfg, out=tmp_path / "r") as t:
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        est = estimate_duration(t, batches=2, warmup=1)
        after = t.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert est["batches_per_epoch"] == 8 and est["remaining_epochs"] == 2 and est["seconds_per_batch"] > 0
        text = describe_estimate(dict(est, remaining_seconds=7200.0))
        assert "quick True" in text and "2 h 0 min" in text
