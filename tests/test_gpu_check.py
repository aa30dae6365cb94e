"""`make gpu-check` (benchmarks/gpu_check.py) on the CPU: it writes its data, then stops at step `cuda` with a clear
message; with `--device cpu` its later steps run here too (they prove nothing about CUDA, only that the script
works up to the GPU). No test here needs or uses a GPU."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def gpu_check(*args, timeout=900):
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    return res, json.loads(res.stdout.strip().splitlines()[-1])  # the last line is the JSON object


def test_make_gpu_check_runs_the_script():
    make = (ROOT / "Makefile").read_text()
    target = re.search(r"^gpu-check:.*\n\t(.+)$", make, re.M)
    assert target and target.group(1).strip() == "$(PY) -m benchmarks.gpu_check"
    assert re.search(r"^\.PHONY:.*\bgpu-check\b", make, re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_stops_at_the_cuda_step_naming_it(tmp_path):
    res, out = gpu_check("--train-images", 500, "--test-images", 100, "--json-out", tmp_path / "g.json")
    assert res.returncode == 2
    assert "FAILED at step 'cuda'" in res.stderr and "CUDA is not available" in res.stderr
    assert out == json.loads((tmp_path / "g.json").read_text())
    assert out["ok"] is False and out["failed_steps"] == ["cuda"] and out["proves_cuda"] is True
    steps = out["steps"]
    assert list(steps) == ["prepare", "cuda"]  # nothing after the step that needs CUDA ran
    assert steps["prepare"]["ok"] and steps["prepare"]["train_images"] == 500
    assert steps["prepare"]["layout"].startswith("cifar-10-batches-py")
    assert "CUDA is not available" in steps["cuda"]["error"] and "make gpu-check" in steps["cuda"]["error"]


def test_unknown_method_is_refused():
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--methods", "hl,nope"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "nope" in res.stderr


@pytest.mark.slow
def test_the_steps_after_cuda_run_on_the_cpu(tmp_path):
    res, out = gpu_check("--device", "cpu", "--quick", "--skip", "benchmark")  # tests/test_bench.py runs that
    assert res.returncode == 0, res.stderr[-3000:]
    assert out["ok"] and out["proves_cuda"] is False and out["failed_steps"] == []
    steps = out["steps"]
    assert "not a GPU check" in steps["cuda"]["skipped"] and steps["benchmark"] == {"skipped": "--skip"}
    fid = steps["fidelity"]
    assert set(fid) >= {"ok", "hl", "ls", "cp", "dl", "colam", "colam_online", "ols", "cskd", "lr", "fixed"}
    soft = fid["colam"]["soft_labels"]
    assert soft["max_abs_diff_same_precision"] <= out["tolerances"]["soft_labels_same_precision"]
    assert soft["max_abs_diff_float32"] <= out["tolerances"]["soft_labels_float32"]
    res_ = steps["resume"]
    for label in ("default", "deterministic"):  # bitwise on the CPU, with or without the option
        assert res_[label]["resumed"]["bitwise"] and res_[label]["noise_floor"]["bitwise"], label
        assert res_[label]["killed_with_last_checkpoint_at_epoch"] == 2
    assert "--device cpu" in steps["ddp"]["skipped"]
