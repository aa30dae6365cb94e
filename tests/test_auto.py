"""The auto system options: bf16 autocast on the CPU only where it has AMX, torch.compile only past the break-even,
what config.json records about both, a resumed run keeps its start's choices, and the deterministic option."""
import json
import time

import pytest
import torch

from colam_core import Config, Trainer, load_run
from colam_core.config import parse_value
from colam_core.errors import ConfigError
from colam_core.training import auto

CPU = torch.device("cpu")
QUICK = dict(dataset="synthetic", model="small_cnn", epochs=2, batch_size=32, lr=0.05)


@pytest.fixture
def cpu_has(monkeypatch):
    """cpu_has("amx_bf16") makes the detection see exactly these CPU flags."""
    def set_flags(*flags):
        monkeypatch.setattr(auto, "cpu_flags", lambda: frozenset(flags))
    return set_flags


def resolved(path):
    return json.loads((path / "config.json").read_text())


def test_detection_reads_this_cpu():
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    assert auto.has_amx_bf16() == (" amx_bf16" in text)


def test_amp_auto_is_bf16_on_the_cpu_only_with_amx(cpu_has):
    cpu_has("avx2", "avx512f", "amx_tile", "amx_bf16")
    dtype, why = auto.resolve_amp("auto", CPU)
    assert dtype == torch.bfloat16 and "amx_bf16" in why
    cpu_has("avx2", "avx512f", "avx512_bf16")  # AVX-512 bf16 but no AMX (the AMD EPYC where bf16 ran 6x slower)
    dtype, why = auto.resolve_amp("auto", CPU)
    assert dtype is None and "no amx_bf16" in why
    assert auto.resolve_amp("bf16", CPU)[0] == torch.bfloat16 and auto.resolve_amp("off", CPU)[0] is None
    assert auto.resolve_amp("auto", CPU, started="off") == (None, "auto: off, kept from the run's start")


@pytest.mark.parametrize("amx", [True, False])
def test_config_json_says_what_auto_picked_and_why(tmp_path, cpu_has, amx):
    cpu_has(*(["amx_bf16"] if amx else []))
    with Trainer(Config(method="hl", **QUICK), out=tmp_path / "r") as t:
        t.run()
        assert t.amp == (torch.bfloat16 if amx else None)
    c = resolved(tmp_path / "r")
    assert c["amp"] == ("bfloat16" if amx else "off") and c["config"]["amp"] == "auto"
    assert ("this CPU has amx_bf16" if amx else "this CPU has no amx_bf16") in c["choices"]["amp"]
    # a short run never compiles, and says why
    assert c["compile"] is False and c["config"]["compile"] is None
    assert c["choices"]["compile"].startswith("auto: off (") and c["choices"]["estimated_images"] == 256 * 2
    assert c["deterministic"] is False


def test_compile_auto_compiles_past_the_break_even_only():
    need = auto.COMPILE_MARGIN * auto.COMPILE_BREAK_EVEN_IMAGES["cpu"]
    assert auto.resolve_compile(None, CPU, need - 1)[0] is False
    on, why = auto.resolve_compile(None, CPU, need)
    assert on == auto.compile_supported(CPU)[0] and why.startswith("auto: ")
    assert auto.resolve_compile(True, CPU, 10) == (True, "on") and auto.resolve_compile(False, CPU, 10**9)[0] is False
    assert auto.resolve_compile(None, CPU, 10**9, started=False)[0] is False  # a resumed run keeps its choice
    assert auto.resolve_compile(None, torch.device("mps"), 10**9)[0] is False
    # a 160-epoch CIFAR run compiles on the CPU; the 12-epoch digits demo does not
    assert auto.resolve_compile(None, CPU, 50_000 * 160)[0] == auto.compile_supported(CPU)[0]
    assert auto.resolve_compile(None, CPU, 1_437 * 12)[0] is False


def test_compile_option_spellings():
    assert Config().compile is None and Config(compile="auto").compile is None
    assert parse_value("compile", "auto") is None and parse_value("compile", "true") is True
    with pytest.raises(ConfigError, match="true, false or auto"):
        Config(compile="sometimes").validate()
    with pytest.raises(ConfigError, match="deterministic"):
        Config(deterministic="yes").validate()


def test_a_resumed_run_keeps_the_precision_it_started_with(tmp_path, cpu_has):
    cpu_has()  # started where bf16 does not pay
    cfg = Config(method="hl", **dict(QUICK, epochs=4))
    with Trainer(cfg, out=tmp_path / "r") as t:
        t.subscribe(lambda ev: ev.kind == "batch" and ev.epoch == 2 and t.request_stop())
        t.run()
        assert not t.done and t.amp is None
    cpu_has("amx_bf16")  # resumed on a machine where auto would pick bf16
    with Trainer(cfg, out=tmp_path / "r") as t:
        assert t.amp is None and t.compile is False
        assert "kept from the run's start" in t.choices.reasons["amp"]
        assert "kept from the run's start" in t.choices.reasons["compile"]
        t.run()
    assert resolved(tmp_path / "r")["amp"] == "off"


def test_a_run_whose_fingerprint_holds_compile_still_resumes(tmp_path):
    """Runs written before compile had an auto mode (fingerprint and configuration: compile false, no resolved
    compile) resume with the new default, and keep training uncompiled."""
    cfg = Config(method="hl", **dict(QUICK, epochs=4))
    with Trainer(cfg, out=tmp_path / "r") as t:
        t.subscribe(lambda ev: ev.kind == "batch" and ev.epoch == 2 and t.request_stop())
        t.run()
    path = tmp_path / "r" / "config.json"
    c = json.loads(path.read_text())
    c["fingerprint"]["compile"] = c["config"]["compile"] = False
    del c["compile"]
    path.write_text(json.dumps(c))
    with Trainer(cfg, out=tmp_path / "r") as t:
        assert t.epoch == 1 and t.compile is False and "kept from the run's start" in t.choices.reasons["compile"]
        t.run()
    assert load_run(tmp_path / "r").summary is not None


def test_deterministic_is_recorded_undone_and_changes_nothing_on_the_cpu(tmp_path):
    assert not torch.are_deterministic_algorithms_enabled()
    with Trainer(Config(method="colam", stages=2, deterministic=True, **QUICK), out=tmp_path / "det") as t:
        assert torch.are_deterministic_algorithms_enabled()
        t.run()
    assert not torch.are_deterministic_algorithms_enabled()  # process-wide: restored by close()
    assert resolved(tmp_path / "det")["deterministic"] is True
    with Trainer(Config(method="colam", stages=2, **QUICK), out=tmp_path / "plain") as t:
        t.run()
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["model"] for n in ("det", "plain"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the CPU paths are deterministic without it


def test_bf16_digits_run_reaches_the_float32_accuracy(tmp_path):
    """bf16 autocast (what auto picks on AMX CPUs) on a short digits run: the float32 accuracy within noise
    (the digits test set has 360 images: 0.03 is about 11 of them)."""
    acc, secs = {}, {}
    for amp in ("off", "bf16"):
        t0 = time.perf_counter()
        with Trainer(Config(method="hl", epochs=6, amp=amp), out=tmp_path / amp) as t:
            acc[amp] = t.run()["test_acc"]
        secs[amp] = time.perf_counter() - t0
    print(f"digits, 6 epochs: float32 {acc['off']:.4f} in {secs['off']:.1f} s, bf16 {acc['bf16']:.4f} in "
          f"{secs['bf16']:.1f} s (amx_bf16: {auto.has_amx_bf16()})")
    assert acc["off"] >= 0.9 and abs(acc["bf16"] - acc["off"]) <= 0.03
