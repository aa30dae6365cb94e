"""`make gpu-check`: prove the CUDA path on the first machine with a GPU, in one command and one JSON line.

    python -m benchmarks.gpu_check                # or: make gpu-check; under 8 minutes on one modern GPU
    python -m benchmarks.gpu_check --quick        # a smoke run: small data, few batches
    python -m benchmarks.gpu_check --skip ddp,benchmark --json-out gpu_check.json

Steps, in order (each named in the JSON line, and in the message of a failure):

- ``prepare``: CIFAR-10-shaped data written in the real on-disk layout (``cifar-10-batches-py``, bytes-keyed
  pickles), learnable (a colour pattern per class plus noise; pairs of classes look alike), and read back through
  ``colam_core.data``. Nothing is downloaded, ever.
- ``cuda``: torch sees a CUDA device. Without one the check stops here, exit status 2, naming the step.
- ``environment``: the GPUs, torch / CUDA / cuDNN versions, bf16 support, what the trainer's auto options pick.
- ``benchmark``: ``benchmarks.training`` on cuda in one run: the reference loop vs ours HL (AMP bf16 autocast and
  channels_last: the trainer's auto choices), ours HL in float32, with and without ``torch.compile`` (the
  compile-auto row and the break-even of a whole run), COLAM vs HL per epoch; ratios and absolute images/s.
- ``fidelity``: a short run of every method on cuda; COLAM's soft labels recomputed from its stage checkpoint on
  cuda (in the run's precision: within ``SAME_PRECISION_TOL``; in float32: within ``FLOAT32_TOL``, the bf16
  rounding) and compared with the saved ones, the CUDA equivalent of the CPU fidelity test.
- ``resume``: a COLAM run SIGKILLed mid-epoch and resumed (``--resume``) against an uninterrupted one. cuDNN and
  atomics are not bitwise by default, so two uninterrupted runs already differ (the noise floor, reported); the
  resumed run must agree within ``RESUME_TOL``. With ``--deterministic true`` both are expected bitwise equal.
- ``ddp``: a 2-rank nccl run under torchrun where 2 GPUs are visible (its soft labels recomputed on one GPU);
  otherwise the step says it was skipped and why.

A step that fails is recorded and the later steps still run (each says what it found); the exit status is 1 then.
The last line of stdout is the JSON object; progress and the benchmark's table go to stderr. ``--device cpu`` runs
the same steps on the CPU for the project's tests: it proves nothing about CUDA, and the JSON line says so.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import machine_summary, write_cifar10

ROOT = Path(__file__).resolve().parents[1]
SAME_PRECISION_TOL = 1e-3   # max |saved - recomputed| of a soft-label entry, the run's precision, same device
FLOAT32_TOL = 2e-2          # ... recomputed in float32 (a bf16 run's labels carry bf16's rounding of the logits)
RESUME_TOL = {"weights_rel_l2": 0.05, "test_acc": 0.03, "soft_labels": 0.02}  # killed + resumed vs uninterrupted
METHODS = ("hl", "ls", "cp", "dl", "colam", "colam_online", "ols", "cskd", "lr", "fixed")
EXIT_NO_CUDA, EXIT_FAILED = 2, 1


class StepFailed(Exception):
    """A check found something wrong; the message says what."""


# ----------------------------------------------------------------------------- shared pieces
def run_config(ctx, **kw):
    from colam_core import Config

    base = dict(dataset="cifar10", data_root=str(ctx.data), model=ctx.args.model, batch_size=ctx.args.batch_size,
                lr=0.05, device=ctx.device.type, eval_batch_size=1024, train_limit=ctx.args.train_images, seed=0)
    base.update(kw)
    return Config(**base)


def cli(ctx, *args, env=None, timeout=900) -> subprocess.CompletedProcess:
    """`python -m colam_core ...` in a fresh process (a kill must not take this one with it)."""
    return subprocess.run([sys.executable, "-m", "colam_core", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def cli_flags(cfg) -> list[str]:
    """The command-line flags that give `cfg` (every option that differs from the defaults)."""
    from colam_core import Config

    default, flags = Config(), []
    for k, v in cfg.to_dict().items():
        if k != "extra" and v != getattr(default, k):
            flags += ["--" + k.replace("_", "-"), ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    return flags


def recompute_soft_labels(run, stage: int, device: torch.device, precision: str = "run") -> np.ndarray:
    """softmax(class-mean logits / T) of the model saved at the end of `stage`, over all training images, on
    `device`, in the run's precision and layout ("run") or in float32 ("float32"). Default COLAM options only."""
    c = run.config
    assert c["peer_samples"] == "all" and c["average"] == "logits" and c["peer_filter"] == "all", c
    model = run.model(stage).to(device).eval()
    layout = bool(run.resolved.get("channels_last"))
    if layout:
        model = model.to(memory_format=torch.channels_last)
    amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(run.resolved.get("amp")) \
        if precision == "run" else None
    x, y = run.data("train")
    C = run.info.num_classes
    sums = torch.zeros(C, C, dtype=torch.float64, device=device)
    counts = torch.zeros(C, dtype=torch.float64, device=device)
    bs = int(c.get("eval_batch_size", 512))
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        for i in range(0, len(y), bs):
            xb = x[i:i + bs].to(device)
            xb = xb.contiguous(memory_format=torch.channels_last) if layout else xb
            z = model(xb).double()
            yb = y[i:i + bs].to(device)
            sums.index_add_(0, yb, z)
            counts += torch.bincount(yb, minlength=C).double()
    mean = sums / counts.clamp_min(1)[:, None]
    return torch.softmax(mean / float(c["T"]), 1).cpu().numpy()


def compare_soft_labels(run, stage: int, device: torch.device) -> dict:
    saved = run.soft_labels(stage)
    same = float(np.abs(saved - recompute_soft_labels(run, stage, device, "run")).max())
    fp32 = float(np.abs(saved - recompute_soft_labels(run, stage, device, "float32")).max())
    out = {"stage": stage, "max_abs_diff_same_precision": same, "max_abs_diff_float32": fp32,
           "own_class_mass_mean": float(np.diag(saved).mean())}
    if same > SAME_PRECISION_TOL or fp32 > FLOAT32_TOL:
        raise StepFailed(f"soft labels of stage {stage} differ from a recomputation: {same:.2e} in the run's "
                         f"precision (tolerance {SAME_PRECISION_TOL}), {fp32:.2e} in float32 (tolerance "
                         f"{FLOAT32_TOL}); {out}")
    return out


def final_state(path: Path) -> dict:
    return torch.load(path / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")


def compare_runs(a: Path, b: Path) -> dict:
    """How far run b's final weights, test accuracy and soft labels are from run a's."""
    from colam_core import load_run

    wa, wb = final_state(a)["model"], final_state(b)["model"]
    floats = [k for k in wa if wa[k].is_floating_point()]
    va = torch.cat([wa[k].double().flatten() for k in floats])
    vb = torch.cat([wb[k].double().flatten() for k in floats])
    ra, rb = load_run(a), load_run(b)
    soft = [float(np.abs(ra.soft_labels(k) - rb.soft_labels(k)).max()) for k in ra.soft_label_keys()]
    return {"bitwise": all(torch.equal(wa[k], wb[k]) for k in wa),
            "weights_max_abs": float((va - vb).abs().max()),
            "weights_rel_l2": float((va - vb).norm() / va.norm().clamp_min(1e-30)),
            "test_acc": [ra.summary["test_acc"], rb.summary["test_acc"]],
            "test_acc_diff": abs(ra.summary["test_acc"] - rb.summary["test_acc"]),
            "soft_labels_max_abs": max(soft) if soft else 0.0}


# ----------------------------------------------------------------------------- the steps
def step_prepare(ctx) -> dict:
    import pickle

    from colam_core.data import load_dataset

    n, m = ctx.args.train_images, ctx.args.test_images
    write_cifar10(ctx.data, n, m, seed=0)
    data = load_dataset("cifar10", data_root=str(ctx.data), device="cpu")
    with open(ctx.data / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")
    info = data.info
    if info.num_train != n or info.num_test != m or info.num_classes != 10:
        raise StepFailed(f"read back {info.num_train} / {info.num_test} images in {info.num_classes} classes, "
                         f"wrote {n} / {m} in 10")
    if not np.array_equal(first[b"data"][0].reshape(3, 32, 32), data.uint8_tensor("train")[0].numpy()):
        raise StepFailed("the first training image read back differs from the one written (plane order?)")
    return {"root": str(ctx.data), "layout": "cifar-10-batches-py (data_batch_1..5, test_batch, batches.meta)",
            "train_images": n, "test_images": m, "classes": info.class_names}


def step_cuda(ctx) -> dict:
    if ctx.device.type == "cpu":
        return {"skipped": "--device cpu: the steps run on the CPU (a test of this script, not a GPU check)"}
    if not torch.cuda.is_available():
        raise StepFailed(
            f"CUDA is not available: torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'}) "
            f"sees {torch.cuda.device_count()} CUDA devices (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); run make gpu-check on a machine with an NVIDIA "
            "GPU, its driver and a CUDA build of torch")
    torch.zeros(1, device="cuda").add_(1).item()  # a kernel runs
    return {"devices": torch.cuda.device_count()}


def step_environment(ctx) -> dict:
    from colam_core.training.auto import dtype_name, resolve_amp, resolve_compile

    dev = ctx.device
    amp, amp_why = resolve_amp("auto", dev)
    out = {"machine": machine_summary(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "amp_auto": dtype_name(amp), "amp_auto_reason": amp_why,
           "compile_auto_cifar_160_epochs": resolve_compile(None, dev, 50_000 * 160)[1]}
    if dev.type == "cuda":
        out["gpus"] = [{"name": torch.cuda.get_device_name(i),
                        "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                        "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2 ** 30, 1)}
                       for i in range(torch.cuda.device_count())]
        out["cudnn"] = torch.backends.cudnn.version()
        out["bf16_supported"] = torch.cuda.is_bf16_supported()
    return out


def step_benchmark(ctx) -> dict:
    from benchmarks.report import check_targets, render
    from benchmarks.training import parse_args, run_sections

    if ctx.args.quick:
        argv = ["--quick", "--model", ctx.args.model]
    else:
        argv = ["--model", ctx.args.model, "--batches", "50", "--warmup", "5", "--rounds", "3",
                "--ref-workers", str(max(2, min(8, (os.cpu_count() or 2) - 2))), "--eval-batch-size", "1024",
                "--colam-images", "10000"]
    args = parse_args([*argv, "--device", str(ctx.device), "--skip", "memory"])
    args.device = ctx.device
    res = run_sections(args, ctx.log)
    res["targets"] = check_targets(res)
    ctx.log(render(res))
    thr, col = res.get("throughput", {}), res.get("colam", {})
    keys = ("reference", "ours_hl", "ours_hl_fp32", "ours_hl_compiled", "ours_colam_online")
    return {"images_per_s": {k: thr[k]["images_per_s"] for k in keys if k in thr},
            "warmup_s": {k: thr[k]["warmup_s"] for k in keys if k in thr},
            "settings": thr.get("settings"),
            "ours_hl_vs_reference": thr.get("ours_hl_vs_reference"),
            "ours_hl_vs_ours_hl_fp32": thr.get("ours_hl_vs_ours_hl_fp32"),
            "ours_hl_compiled_vs_ours_hl": thr.get("ours_hl_compiled_vs_ours_hl"),
            "compile_break_even_images": thr.get("compile_break_even_images"),
            "compile_auto": thr.get("ours_hl_compile_auto"),
            "ours_hl_compile_auto_vs_reference": thr.get("ours_hl_compile_auto_vs_reference"),
            "ceiling_fraction": thr.get("ceiling_fraction"),
            "colam_eval_ratio_at_interval": col.get("eval_ratio_at_interval"),
            "colam_online_ratio": col.get("online_ratio"),
            "targets": {k: v["met"] for k, v in res["targets"].items()}, "result": res}


def step_fidelity(ctx) -> dict:
    from colam_core import Trainer, load_run

    out, epochs = {}, ctx.args.epochs
    for name in ctx.args.methods:
        method, kw = name, {}
        if name == "colam_online":
            method, kw = "colam", {"update": "online"}
        if name == "fixed":
            kw = {"fixed_targets": f"{ctx.work / 'fid_colam'}:stage_1"}
        stages = 2 if method in ("colam", "lr") else 1
        cfg = run_config(ctx, method=method, stages=stages, epochs=epochs // 2 if method == "lr" else epochs, **kw)
        path = ctx.work / f"fid_{name}"
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with Trainer(cfg, out=path) as t:
            s = t.run()
        row = {"test_acc": s["test_acc"], "test_ece": s.get("test_ece"), "test_ece_T1": s.get("test_ece_T1"),
               "images_per_s": s.get("mean_images_per_s"), "seconds": s.get("train_seconds")}
        if ctx.device.type == "cuda":
            row["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if not (np.isfinite(s["test_acc"]) and s["test_acc"] > 0.2):  # 10 learnable classes: chance is 0.1
            raise StepFailed(f"method {name}: test accuracy {s['test_acc']:.3f} after {epochs} epochs (chance 0.1)")
        if name == "colam":
            row["soft_labels"] = compare_soft_labels(load_run(path), 1, ctx.device)
        out[name] = row
        ctx.log(f"  {name}: {row}")
    return out


def step_resume(ctx) -> dict:
    from colam_core import Trainer

    bs = ctx.args.batch_size
    epochs, nb = ctx.args.epochs, ctx.args.train_images // bs + bool(ctx.args.train_images % bs)
    kill_at = 2 * nb + nb // 2 if epochs >= 3 else nb // 2  # the batch step that SIGKILLs: mid-epoch 3
    out = {"kill_at_batch_step": kill_at, "tolerance": RESUME_TOL}
    for label, det in (("default", False), ("deterministic", True)):
        cfg = run_config(ctx, method="colam", stages=2, epochs=epochs, deterministic=det)
        full, twin, cut = (ctx.work / f"res_{label}_{k}" for k in ("full", "twin", "cut"))
        if det:  # a fresh process: cuBLAS reads its workspace setting when it starts
            for p in (full, twin):
                r = cli(ctx, "train", *cli_flags(cfg), "--out", p, "--quiet")
                if r.returncode != 0:
                    raise StepFailed(f"deterministic run failed ({r.returncode}): {r.stderr[-1500:]}")
        else:
            for p in (full, twin):
                with Trainer(cfg, out=p) as t:
                    t.run()
        r = cli(ctx, "train", *cli_flags(cfg), "--out", cut, "--quiet", env={"COLAM_FAULT": f"batch:{kill_at}"})
        killed_after = final_state(cut)["epoch"] if (cut / "checkpoints" / "last.pt").exists() else None
        if r.returncode == 0 or (cut / "summary.json").exists():
            raise StepFailed(f"{label}: the run meant to be killed at batch step {kill_at} finished")
        r = cli(ctx, "train", "--resume", cut, "--quiet")
        if r.returncode != 0:
            raise StepFailed(f"{label}: resume failed ({r.returncode}): {r.stderr[-1500:]}")
        row = {"killed_with_last_checkpoint_at_epoch": killed_after, "noise_floor": compare_runs(full, twin),
               "resumed": compare_runs(full, cut), "images_per_s": _images_per_s(full)}
        out[label] = row
        ctx.log(f"  resume {label}: {row}")
    d = out["deterministic"]
    out["deterministic_cost"] = (out["default"]["images_per_s"] / d["images_per_s"]  # > 1: deterministic is slower
                                 if d["images_per_s"] and out["default"]["images_per_s"] else None)
    res = out["default"]["resumed"]
    bad = [k for k, key in (("weights_rel_l2", "weights_rel_l2"), ("test_acc", "test_acc_diff"),
                            ("soft_labels", "soft_labels_max_abs")) if res[key] > RESUME_TOL[k]]
    if bad:
        raise StepFailed(f"resumed run outside the tolerance {RESUME_TOL} in {bad}: {res}")
    if not d["resumed"]["bitwise"] or not d["noise_floor"]["bitwise"]:
        raise StepFailed(f"--deterministic true: not bitwise (twin runs {d['noise_floor']['bitwise']}, killed and "
                         f"resumed {d['resumed']['bitwise']}): {d}")
    return out


def _images_per_s(path: Path):
    from colam_core import load_run
    return load_run(path).summary.get("mean_images_per_s")


def step_ddp(ctx) -> dict:
    from colam_core import load_run

    n = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    if n < 2:
        why = ("--device cpu (tests/test_ddp.py covers 2 gloo ranks)" if ctx.device.type == "cpu" else
               f"{n} GPU visible: a 2-rank nccl run needs 2 (torchrun --nproc_per_node=2 -m colam_core train ...)")
        return {"skipped": why}
    cfg = run_config(ctx, method="colam", stages=2, epochs=ctx.args.epochs)
    path = ctx.work / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "colam_core",
           "train", *cli_flags(cfg), "--out", str(path), "--quiet"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise StepFailed(f"torchrun with 2 ranks failed ({r.returncode}): {r.stderr[-2000:]}")
    run = load_run(path)
    dist = run.resolved.get("distributed")
    if dist != {"world_size": 2, "backend": "nccl"}:
        raise StepFailed(f"config.json says distributed = {dist}, expected 2 ranks of nccl")
    return {"distributed": dist, "test_acc": run.summary["test_acc"],
            "images_per_s": run.summary.get("mean_images_per_s"),
            "soft_labels": compare_soft_labels(run, 1, ctx.device)}


STEPS = (("prepare", step_prepare), ("cuda", step_cuda), ("environment", step_environment),
         ("benchmark", step_benchmark), ("fidelity", step_fidelity), ("resume", step_resume), ("ddp", step_ddp))


# ----------------------------------------------------------------------------- main
class Context:
    def __init__(self, args, work: Path):
        self.args, self.work, self.data = args, work, work / "data"
        self.device = torch.device(args.device)

    @staticmethod
    def log(msg) -> None:
        print(msg, file=sys.stderr, flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: run the same steps on the CPU (the project's tests; proves nothing about CUDA)")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--train-images", type=int, default=10_000)
    p.add_argument("--test-images", type=int, default=2_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4, help="of each short training run (even: 2 COLAM stages)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list for the fidelity step")
    p.add_argument("--skip", default="", help="comma list of steps to skip: " + ", ".join(n for n, _ in STEPS[2:]))
    p.add_argument("--quick", action="store_true", help="small data and few batches (a smoke run)")
    p.add_argument("--json-out", default=None, help="also write the JSON object to this file")
    p.add_argument("--keep", action="store_true", help="keep the working folder (data and run directories)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_images, args.test_images = min(args.train_images, 640), min(args.test_images, 200)
        args.model = "small_cnn" if args.model == "resnet20" else args.model
        args.batch_size = min(args.batch_size, 32)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    work = Path(tempfile.mkdtemp(prefix="colam_gpu_check_"))
    ctx = Context(args, work)
    t0 = time.perf_counter()
    result = {"check": "gpu-check", "device": args.device, "proves_cuda": args.device == "cuda",
              "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv),
              "tolerances": {"soft_labels_same_precision": SAME_PRECISION_TOL, "soft_labels_float32": FLOAT32_TOL,
                             "resume": RESUME_TOL},
              "steps": {}, "failed_steps": []}
    status = 0
    try:
        for name, fn in STEPS:
            if name in skip:
                result["steps"][name] = {"skipped": "--skip"}
                continue
            ctx.log(f"gpu-check: step {name} ...")
            t = time.perf_counter()
            try:
                row = fn(ctx)
                ok = True
            except Exception as e:  # noqa: BLE001 - every failure is reported under its step's name
                row, ok = {"error": f"{type(e).__name__}: {e}"}, False
            result["steps"][name] = {"ok": ok, "seconds": round(time.perf_counter() - t, 2), **row}
            if not ok:
                result["failed_steps"].append(name)
                ctx.log(f"gpu-check: FAILED at step '{name}': {row['error']}")
                if name in ("prepare", "cuda"):  # nothing after them can run
                    status = EXIT_NO_CUDA if name == "cuda" else EXIT_FAILED
                    break
                status = EXIT_FAILED
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["ok"] = status == 0
    result["seconds"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(result, separators=(",", ":"), default=str)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    if status:
        ctx.log(f"gpu-check: failed steps: {', '.join(result['failed_steps'])} (details in the JSON line)")
    return status


if __name__ == "__main__":
    sys.exit(main())
