"""The benchmark runs end to end in a tiny setting and ends with one JSON line holding every figure.

A smoke test only: nothing here is timed or compared against a target (see docs/BENCHMARKS.md for a real run).
The benchmark lives in benchmarks/training.py; `python -m colam_core.bench` is a launcher for it.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_colam_core_bench_launcher_finds_the_benchmark_in_the_checkout():
    res = subprocess.run([sys.executable, "-m", "colam_core.bench", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.startswith("usage: python -m benchmarks.training")  # benchmarks/training.py's parser
    assert "--quick" in res.stdout and "--rounds" in res.stdout


@pytest.mark.slow
def test_bench_quick_run_prints_table_and_final_json_line(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "colam_core.bench", "--quick", "--device", "cpu",
                          "--model", "small_cnn", "--json-out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    result = json.loads(lines[-1])  # the final line is the JSON object
    assert json.loads(out.read_text()) == result
    table = "\n".join(lines[:-1])
    for heading in ("reference", "ours HL", "COLAM vs HL per epoch", "Soft-label state", "Peak resident memory",
                    "Targets"):
        assert heading in table

    assert {"model", "device", "batch_size", "machine", "command", "throughput", "colam", "soft_labels", "memory",
            "targets", "seconds"} <= result.keys()
    assert result["device"] == "cpu" and result["model"] == "small_cnn"
    assert {"cpu", "torch", "torch_threads"} <= result["machine"].keys()

    thr = result["throughput"]
    for variant in ("reference", "ours_hl", "ours_colam_online"):
        v = thr[variant]
        assert v["images_per_s_median"] > 0 and v["warmup_s"] >= 0 and 0 < v["ceiling_fraction"]
    assert thr["ours_hl_vs_reference"] > 0 and thr["ours_colam_online_vs_ours_hl"] > 0
    assert thr["matmul_flops_fp32"] > 0 and thr["model_flops_per_image"] > 0 and thr["ceiling_fraction"] > 0
    # the compile-auto row: what compile=auto picks for a 160-epoch run of this data, and that variant's figures
    auto = thr["ours_hl_compile_auto"]
    assert auto["epochs"] == 160 and auto["images"] == 160 * 512 and auto["reason"].startswith("auto: ")
    assert auto["variant"] == ("ours_hl_compiled" if auto["compiles"] else "ours_hl")
    if auto["measured"]:
        assert auto["images_per_s"] == thr[auto["variant"]]["images_per_s"]
        assert thr["ours_hl_compile_auto_vs_reference"] == thr[auto["variant"] + "_vs_reference"]
    assert "compile auto" in table and thr["settings"]["amp_reason"].startswith(("auto", "off", "bf16", "fp16"))
    if thr["settings"]["amp"] != "off":  # the autocast the trainer chose, against float32 in the same rounds
        assert thr["ours_hl_fp32"]["images_per_s"] > 0 and thr["ours_hl_vs_ours_hl_fp32"] > 0

    col = result["colam"]
    for key in ("update_cost_epochs", "eval_direct_ratio", "eval_predicted_ratio", "eval_ratio_at_interval",
                "online_ratio"):
        assert col[key] > 0, key
    assert col["update_interval_epochs"] == 40 and col["updates_in_window"] >= 1
    assert len(col["update_seconds"]) == col["epochs"] - 1  # an update at every stage end but the last

    soft = {row["classes"]: row for row in result["soft_labels"]}
    assert sorted(soft) == [10, 100, 1000]
    assert soft[1000]["state_bytes"] == 100 * soft[100]["state_bytes"]  # C x C, whatever the number of samples
    assert all(row["accumulate_seconds"] and row["finish_seconds"] > 0 and row["ns_per_peer"] > 0
               for row in soft.values())

    mem = result["memory"]
    assert mem["peak_rss_bytes"] > 0 and mem["update_pass_images"] == mem["train_images"] > 0

    assert all({"value", "target", "met"} <= t.keys() for t in result["targets"].values())
