"""Notebook parameter validation and the pre-run duration estimate."""
import pytest
import torch

from colam_core import Config, Trainer
from colam_core.config import ConfigError
from colam_core.training import describe_estimate, estimate_duration
from colam_core.params import (check_classes, check_int, check_list, check_notebook_parameters, check_path,
                               check_positive, notebook_config, quick_values)


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


PARAMETERS_CELL = '''# Parameters (papermill -p NAME VALUE)
T = 1.5
temperatures = [0.5, 1.0]
intervals = [3, 6]
quick = False
'''


def _namespace(injected: str | None):
    cells = ["", PARAMETERS_CELL] + ([f"# Parameters\n{injected}\n"] if injected is not None else [])
    ns = {"In": cells + ["from colam_core.params import check_notebook_parameters"], "T": 1.5}
    exec(compile(injected or "", "<injected>", "exec"), {}, ns)
    return ns


def test_a_misspelt_papermill_parameter_is_refused_with_the_nearest_name():
    """Issue 15: `-p temprature 2` only got papermill's warning and trained with the default T."""
    with pytest.raises(ConfigError) as e:
        check_notebook_parameters(_namespace("temprature = 2"))
    assert e.value.option == "temprature" and "did you mean 'temperatures'" in str(e.value)
    assert "a parameter of this notebook: T, intervals, quick, temperatures" in str(e.value)
    assert check_notebook_parameters(_namespace("T = 2\nquick = True")) == {"T", "quick"}
    assert check_notebook_parameters(_namespace(None)) == set()  # not under papermill: nothing to check
    assert check_notebook_parameters({}) == set()


def test_quick_mode_keeps_the_lists_the_user_passed():
    """Issue 15: notebook 05's quick mode silently replaced the user's intervals, peers and temperatures."""
    assert quick_values({"peers"}, True, intervals=([3], [2, 4]), peers=([5], [1])) == [[2, 4], [5]]
    assert quick_values({"peers"}, False, intervals=([3], [2, 4]), peers=([5], [1])) == [[3], [5]]
    with pytest.raises(ConfigError, match="quick"):
        quick_values(set(), "yes", intervals=([3], [2]))


@pytest.mark.parametrize("call, option, allowed", [
    pytest.param(lambda: check_list("intervals", 3, check_int), "intervals", "a non-empty list", id="intervals-int"),
    pytest.param(lambda: check_list("intervals", [], check_int), "intervals", "a non-empty list", id="intervals-empty"),
    pytest.param(lambda: check_list("intervals", [3, 0], lambda n, v: check_int(n, v, 1)), "intervals[1]",
                 "a whole number >= 1", id="intervals-zero"),
    pytest.param(lambda: check_list("temperatures", [1.0, -1], check_positive), "temperatures[1]",
                 "a finite number > 0", id="temperatures-negative"),
    pytest.param(lambda: check_list("temperatures", [float("nan")], check_positive), "temperatures[0]",
                 "a finite number > 0", id="temperatures-nan"),
    pytest.param(lambda: check_int("per_class", 0, 1), "per_class", "a whole number >= 1", id="per-class-zero"),
    pytest.param(lambda: check_int("per_class", True, 1), "per_class", "a whole number", id="per-class-bool"),
    pytest.param(lambda: check_int("per_class", 2.5, 1), "per_class", "a whole number", id="per-class-fraction"),
    pytest.param(lambda: notebook_config(dict(seed=1e20)), "seed", "an integer from 0 to 4294967295",
                 id="seed-1e20"),
])
def test_notebook_parameter_checks(call, option, allowed):
    with pytest.raises(ConfigError) as e:
        call()
    assert e.value.option == option and allowed in str(e.value)


def test_grid_builders_refuse_a_single_value_for_a_list():
    """Issue 15: notebook 05 `-p intervals 3` was a TypeError deep in the grid builder."""
    from colam_core import sweeps
    base = Config(method="colam", epochs=4, dataset="synthetic")
    for bad in (3, "3", None):
        with pytest.raises(ConfigError, match="intervals: invalid value .*a non-empty list"):
            sweeps.interval_peers_grid(base, bad, [1])
    with pytest.raises(ConfigError, match="T: invalid value 2.0; allowed: a non-empty list"):
        sweeps.temperature_sweep(base, 2.0)
