"""Benchmark: our training loop against the loop a researcher writes by hand, and against the machine.

    python -m benchmarks.training                   # the default run: a few minutes on 2 CPU cores
    python -m benchmarks.training --device cuda --batches 100 --rounds 5
    python -m colam_core.bench ...                  # the same, from a source checkout (a launcher)

In ONE run, on one device, with one model (ResNet-20 on 3x32x32 CIFAR-100-shaped data by
default) and one batch size, it measures steady-state training images/s of

1. ``reference``: the loop of PyTorch's official examples: a torchvision CIFAR dataset returning PIL
   images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
   with worker processes, NCHW float32, ``loss.item()`` / accuracy per batch, plain SGD;
2. ``ours HL``: :class:`colam_core.Trainer` with hard labels (in-memory uint8 data on the device,
   batched crop/flip, channels_last, the autocast `amp=auto` picks: bf16 on CUDA and on CPUs with AMX), in
   float32 too where that autocast is on, and with ``torch.compile``: its steady state, and the compile time of
   a whole short run (every graph shape; two fresh processes, cold caches) for the break-even; the
   compile-auto row is the variant ``compile=auto`` picks for a 160-epoch run of this data;
3. COLAM with the faithful eval-pass update and with the online variant, in 1-epoch stages (an update
   at every stage end inside the measured window, its time counted), against HL on the same data,
   plus the cost of one update relative to one epoch and the per-epoch ratio this implies at the
   paper's update interval (40 epochs);
4. the ceiling: achieved training FLOP/s (model FLOPs per image x 3 x images/s) over the FLOP/s of a
   large matmul in the training dtype, measured in the same run;
5. the soft-label state and update alone for C = 10, 100, 1000 classes;
6. the peak resident memory of a CIFAR-100-sized run (50,000 images) in a subprocess.

The data are random uint8 images written as a CIFAR-100 pickle directory in a temporary folder and
read back by both loops (ours through :mod:`colam_core.data`). The timed variants run interleaved,
round by round (the order rotates every round), so that load from other processes hits all of them
alike; every ratio is the median of the per-round ratios. Warm-up (first batch: oneDNN / cuDNN
set-up, compilation) is reported separately from the steady state.

The output is a table, then one final line holding a JSON object with every figure. The instruments
(the synthetic data, the reference loop, the timed windows, the meters) are in ``benchmarks.harness``, the
table and the targets in ``benchmarks.report``; this file holds the sections and the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.harness import (CLEAN_FOREIGN, METER, ReferenceLoop, TrainerWindows, machine_summary, matmul_flops,
                                median, paired_ratio, rotate, summarize, sync, write_cifar100)
from benchmarks.report import check_targets, render
from colam_core.training.auto import dtype_name

ROOT = Path(__file__).resolve().parents[1]  # the source checkout: the memory probe runs from here
PAPER_UPDATE_INTERVAL = 40  # epochs per stage in the paper (160 epochs, 4 stages)
PAPER_EPOCHS = 160  # the paper's CIFAR runs: what compile=auto is asked about in the compile-auto row
TEST_LIMIT = 200  # test images evaluated at each epoch end of the timed trainers (not timed)


def _config(args, data_root: Path, **kw):
    from colam_core.config import Config

    base = dict(dataset="cifar100", data_root=str(data_root), model=args.model, batch_size=args.batch_size,
                lr=0.05, device=str(args.device), eval_batch_size=args.eval_batch_size, checkpoint_every_epoch=False,
                seed=0)
    if args.amp:
        base["amp"] = args.amp
    if args.channels_last is not None:
        base["channels_last"] = args.channels_last
    base.update(kw)
    return Config(**base)


# ----------------------------------------------------------------------------- sections
def bench_throughput(args, root: Path, workdir: Path, flops_per_image: int, log) -> dict:
    """Reference vs ours HL vs ours COLAM online (vs ours HL compiled), interleaved, plus the matmul peak."""
    from colam_core.training import Trainer

    device = args.device
    nb_epoch = args.train_images // args.batch_size
    need = args.rounds * (args.warmup + args.batches)
    if need > nb_epoch:
        raise SystemExit(f"bench: {args.rounds} rounds x ({args.warmup} + {args.batches}) batches = {need} exceed one "
                         f"epoch of {nb_epoch} batches; raise --train-images or lower --rounds / --batches")
    variants: dict[str, object] = {}
    log(f"building the reference loop (torchvision dataset, PIL transforms, DataLoader {args.ref_workers} workers)")
    ref = ReferenceLoop(root, args.model, args.classes, args.batch_size, args.ref_workers, device)
    variants["reference"] = ref
    trainers = []
    try:
        ours = Trainer(_config(args, root, method="hl", epochs=1, test_limit=TEST_LIMIT, compile=False),
                       out=workdir / "hl")
        trainers.append(ours)
        variants["ours_hl"] = TrainerWindows(ours)
        # COLAM's online variant in a stage's last epoch: soft-label loss plus per-batch class statistics
        online = Trainer(_config(args, root, method="colam", update="online", epochs=2, stages=2,
                                 test_limit=TEST_LIMIT, compile=False), out=workdir / "colam_online")
        trainers.append(online)
        variants["ours_colam_online"] = TrainerWindows(online)
        if ours.amp is not None:  # what the autocast the trainer chose buys, in the same rounds
            fp32 = Trainer(_config(args, root, method="hl", epochs=1, test_limit=TEST_LIMIT, compile=False,
                                   amp="off"), out=workdir / "hl_fp32")
            trainers.append(fp32)
            variants["ours_hl_fp32"] = TrainerWindows(fp32)
        if args.compile:
            comp = Trainer(_config(args, root, method="hl", epochs=1, test_limit=TEST_LIMIT, compile=True),
                           out=workdir / "hl_compiled")
            trainers.append(comp)
            variants["ours_hl_compiled"] = TrainerWindows(comp)
        amp = ours.amp
        settings = {"channels_last": ours.channels_last, "amp": dtype_name(amp),
                    "amp_reason": ours.choices.reasons["amp"], "compile_row": bool(args.compile)}
        names = list(variants)
        ips: dict[str, list] = {k: [] for k in names}
        foreign: dict[str, list] = {k: [] for k in names}
        warm: dict[str, float] = {}
        mm: list[float] = []
        mm_amp: list[float] = []
        for r in range(args.rounds):
            for name in rotate(names, r):
                w = variants[name].window(args.warmup, args.batches)
                warm.setdefault(name, w["first_s"])
                ips[name].append(args.batches * args.batch_size / w["seconds"])
                foreign[name].append(w["foreign"])
            mm.append(matmul_flops(device))
            if amp is not None:
                mm_amp.append(matmul_flops(device, amp))
            log(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.0f} img/s" + (f" (others {foreign[k][-1]:.2f} cores)" if foreign[k][-1] is not None
                                             else "") for k, v in ips.items())
                + f"; matmul {mm[-1] / 1e9:.0f} GFLOP/s")
    finally:
        ref.close()
        for t in trainers:
            t.close()
    out = {"settings": settings, "rounds": args.rounds, "batches_per_window": args.batches,
           "warmup_batches": args.warmup, "reference_workers": args.ref_workers, "clean_foreign_cores": CLEAN_FOREIGN}
    for name in names:
        out[name] = {"warmup_s": warm[name], **summarize(ips[name], foreign[name])}
    for name in names[1:]:
        out[f"{name}_vs_reference"], out[f"{name}_vs_reference_pairs"] = paired_ratio(
            ips[name], ips["reference"], foreign[name], foreign["reference"])
    out["ours_colam_online_vs_ours_hl"], out["ours_colam_online_vs_ours_hl_pairs"] = paired_ratio(
        ips["ours_colam_online"], ips["ours_hl"], foreign["ours_colam_online"], foreign["ours_hl"])
    if "ours_hl_fp32" in out:
        out["ours_hl_vs_ours_hl_fp32"], _ = paired_ratio(ips["ours_hl"], ips["ours_hl_fp32"], foreign["ours_hl"],
                                                         foreign["ours_hl_fp32"])
    if "ours_hl_compiled" in out:
        c, e = out["ours_hl_compiled"], out["ours_hl"]
        out["ours_hl_compiled_vs_ours_hl"], _ = paired_ratio(ips["ours_hl_compiled"], ips["ours_hl"],
                                                              foreign["ours_hl_compiled"], foreign["ours_hl"])
        gain = 1 / e["images_per_s"] - 1 / c["images_per_s"]  # seconds saved per image
        extra = c["warmup_s"] - e["warmup_s"]  # the training graph's first compile only
        out["compile_break_even_images_first_graph"] = extra / gain if gain > 0 else None
        if args.compile_probe:
            log("compile overhead of a whole (short) run: eager and compiled, each in a fresh process")
            probe = compile_probe(args, root, gain)
            out["compile_overhead"] = probe
            out["compile_break_even_images"] = probe["overhead_s"] / gain if gain > 0 else None
        else:
            out["compile_break_even_images"] = out["compile_break_even_images_first_graph"]
    peak = max(mm_amp) if mm_amp else max(mm)
    out["matmul_flops_fp32"] = max(mm)
    if mm_amp:
        out["matmul_flops_amp"] = max(mm_amp)
    out["model_flops_per_image"] = flops_per_image
    best_name = max((k for k in names if k.startswith("ours_hl")), key=lambda k: out[k]["images_per_s"])
    for name in names:
        achieved = 3 * flops_per_image * out[name]["images_per_s"]
        out[name]["train_flops"] = achieved
        out[name]["ceiling_fraction"] = achieved / peak
    out["ceiling_fraction"] = out[best_name]["ceiling_fraction"]
    out["ceiling_variant"] = best_name
    compile_auto_row(args, out)
    return out


def compile_auto_row(args, out: dict) -> None:
    """What `compile=auto` picks for a paper-length run (PAPER_EPOCHS epochs of --train-images) on this device,
    and the throughput of the variant it picks (measured above when it compiles only with --compile)."""
    from colam_core.training.auto import COMPILE_BREAK_EVEN_IMAGES, COMPILE_MARGIN, resolve_compile

    images = args.train_images * PAPER_EPOCHS
    on, why = resolve_compile(None, args.device, images)
    variant = "ours_hl_compiled" if on else "ours_hl"
    out["ours_hl_compile_auto"] = {
        "epochs": PAPER_EPOCHS, "images": images, "compiles": on, "reason": why, "variant": variant,
        "measured": variant in out, "library_break_even_images": COMPILE_BREAK_EVEN_IMAGES.get(args.device.type),
        "library_margin": COMPILE_MARGIN, "measured_break_even_images": out.get("compile_break_even_images"),
        **({k: out[variant][k] for k in ("images_per_s", "warmup_s", "ceiling_fraction")} if variant in out else {})}
    out["ours_hl_compile_auto_vs_reference"] = out.get(f"{variant}_vs_reference")


def compile_probe(args, root: Path, gain_per_image: float, timeout: float = 1800) -> dict:
    """Seconds a whole short run spends compiling: the same run (every graph shape a real run compiles) eager and
    compiled, each in a fresh process with a cold inductor cache; the steady-state saving of the images it trained
    is added back, so the overhead is what the run pays before compile starts paying (see `_compile_probe_main`)."""
    res = {}
    for mode in ("off", "on"):
        cmd = [sys.executable, "-m", "benchmarks.training", "--_compile-probe", mode, "--data-root", str(root),
               "--device", str(args.device), "--model", args.model, "--batch-size", str(args.batch_size),
               "--eval-batch-size", str(args.eval_batch_size), *(["--amp", args.amp] if args.amp else [])]
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix="colam_inductor_"))
        try:
            res[mode] = run_probe(cmd, f"compile probe ({mode})", timeout, env)
        finally:
            shutil.rmtree(env["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)
    off, on = res["off"], res["on"]
    overhead = on["seconds"] - off["seconds"] + on["images"] * gain_per_image
    return {"eager": off, "compiled": on, "overhead_s": overhead}


def _compile_probe_main(args) -> None:
    """A 2-epoch, 2-stage COLAM run whose batches take every shape a real run compiles: full and partial
    training batches, full and partial eval batches (test set and the stage-end pass); prints its seconds."""
    from colam_core.training import Trainer

    bs, ebs = args.batch_size, args.eval_batch_size
    work = Path(tempfile.mkdtemp(prefix="colam_compile_"))
    try:
        t0 = time.perf_counter()
        cfg = _config(args, Path(args.data_root), method="colam", epochs=2, stages=2,
                      compile=args.compile_probe_mode == "on", train_limit=3 * bs + bs // 2, test_limit=ebs + ebs // 4)
        with Trainer(cfg, out=work / "run") as tr:
            tr.run()
            images = tr.info.num_train * tr.total_epochs
            chosen = tr.compile
        print(json.dumps({"seconds": time.perf_counter() - t0, "images": images, "compile": chosen,
                          "train_images": cfg.train_limit, "test_images": cfg.test_limit}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_colam(args, root: Path, workdir: Path, log) -> dict:
    """COLAM (eval-pass and online) vs HL per epoch, in 1-epoch stages, interleaved epoch by epoch."""
    from colam_core.training import Trainer

    S = args.colam_epochs
    lim = args.colam_images
    common = dict(epochs=S, stages=S, train_limit=lim, test_limit=TEST_LIMIT)
    runs = {}
    try:
        runs["hl"] = Trainer(_config(args, root, method="hl", **common), out=workdir / "c_hl")
        runs["colam_eval"] = Trainer(_config(args, root, method="colam", update="eval", **common),
                                     out=workdir / "c_eval")
        runs["colam_online"] = Trainer(_config(args, root, method="colam", update="online", **common),
                                       out=workdir / "c_online")
        names = list(runs)
        foreign = {k: [] for k in names}
        for e in range(S):
            for name in rotate(names, e):
                a = METER.snap()
                runs[name].run_stage()
                foreign[name].append(METER.foreign(a, METER.snap()))
            log(f"  epoch {e + 1}/{S}: " + ", ".join(f"{k} {runs[k].history[-1]['seconds']:.2f} s" for k in names))
        hist = {k: [row["seconds"] for row in t.history] for k, t in runs.items()}
        upd = list(runs["colam_eval"].update_seconds)  # one per stage end but the last
    finally:
        for t in runs.values():
            t.close()
    # epoch 1 is warm-up; epochs 2..S-1 end with an update (every stage end but the last)
    hl, ev, on = hist["hl"], hist["colam_eval"], hist["colam_online"]
    ev_train = [s - (upd[i] if i < len(upd) else 0.0) for i, s in enumerate(ev)]
    window = list(range(1, S))
    clean = [i for i in window if all(foreign[k][i] is not None and foreign[k][i] < CLEAN_FOREIGN for k in names)]
    use = clean or window
    E = len(use)
    U = sum(1 for i in use if i < len(upd))
    u = median([upd[i] / ((hl[i] + ev_train[i]) / 2) for i in use if i < len(upd)])
    return {
        "images": lim, "epochs": S, "stage_epochs": 1, "window_epochs": E, "updates_in_window": U,
        "clean_epochs": len(clean), "epoch_seconds": hist, "update_seconds": upd, "foreign_cores": foreign,
        "update_cost_epochs": u,
        "eval_direct_ratio": sum(hl[i] for i in use) / sum(ev[i] for i in use),
        "eval_predicted_ratio": E / (E + U * u) if u is not None else None,
        "eval_train_only_ratio": sum(hl[i] for i in use) / sum(ev_train[i] for i in use),
        "online_ratio": sum(hl[i] for i in use) / sum(on[i] for i in use),
        "online_ratio_median_epoch": median([hl[i] / on[i] for i in use]),
        "update_interval_epochs": args.update_interval,
        "eval_ratio_at_interval": 1 / (1 + u / args.update_interval) if u is not None else None,
    }


def bench_soft_labels(device: torch.device, classes=(10, 100, 1000), peers=(2_000, 20_000), reps: int = 5) -> list:
    """The soft-label state and update alone (no model): bytes held, and seconds of the two parts of an update,
    accumulating the per-class sums of the peers' outputs (linear in peers) and turning them into labels (C x C)."""
    import torch.nn.functional as F

    from colam_core.config import Config
    from colam_core.methods import COLAM, class_statistics, soft_cross_entropy

    def best_of(fn):
        best = float("inf")
        for _ in range(reps + 1):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - t)
        return best

    def no_reduce(*tensors):  # one process: nothing to sum over ranks (StepContext's default)
        return None

    rows = []
    for C in classes:
        n_max = max(peers)
        labels = torch.arange(n_max, device=device) % C
        m = COLAM(Config(method="colam"), C, labels, device)
        g = torch.Generator(device="cpu").manual_seed(C)
        logits = (torch.randn(n_max, C, generator=g) * 3).to(device)
        # the timed closures bind this class count's objects as defaults (each runs at once; B023)
        accumulate = {n: best_of(lambda n=n, m=m, z=logits, y=labels, C=C:
                                 class_statistics(m._values(z[:n]), y[:n], C)) for n in peers}
        sums, counts = class_statistics(m._values(logits), labels, C)
        finish = best_of(lambda m=m, s=sums, c=counts: m._finish(s.clone(), c.clone(), no_reduce))
        state = sum(v.numel() * v.element_size() for v in m.state_dict().values() if torch.is_tensor(v))
        accum = C * C * 8 + C * 8  # online accumulators (float64 sums and counts)
        # per-batch cost of the soft-label loss (forward + backward) against hard-label CE, batch 128
        yb, zb = labels[:128], logits[:128].clone().requires_grad_(True)
        hard = best_of(lambda z=zb, y=yb: F.cross_entropy(z, y).backward())
        soft = best_of(lambda m=m, z=zb, y=yb: soft_cross_entropy(z, m.targets(y), 1.5).backward())
        n1, n2 = min(peers), max(peers)
        rows.append({"classes": C, "state_bytes": state, "online_accumulator_bytes": accum,
                     "accumulate_seconds": {str(k): v for k, v in accumulate.items()}, "finish_seconds": finish,
                     "ns_per_peer": accumulate[n2] / n2 * 1e9, "time_ratio": accumulate[n2] / accumulate[n1],
                     "peer_ratio": n2 / n1, "loss_seconds_hard": hard, "loss_seconds_soft": soft})
    return rows


def memory_probe(args_list: list[str], timeout: float = 900) -> dict:
    """Peak RSS of a fresh process running a CIFAR-100-sized run (see `_memory_probe_main`)."""
    return run_probe([sys.executable, "-m", "benchmarks.training", "--_memory-probe", *args_list], "memory probe",
                     timeout)


def run_probe(cmd: list[str], what: str, timeout: float, env: dict | None = None) -> dict:
    """Run a probe subprocess from the checkout; the JSON object on the last line of its stdout."""
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(lines[-1])


def _peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM belongs to the process image, while ru_maxrss
    survives fork + exec and would report the (larger) launching benchmark process instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _memory_probe_main(args) -> None:
    """Load the data at --data-root, train a few batches, run one COLAM update pass over all training images,
    and print the peak RSS (plus the RSS of the bare imports, for scale)."""
    from colam_core.methods import StepContext
    from colam_core.training import Trainer

    t0 = time.perf_counter()
    imports_bytes = _peak_rss_bytes()  # torch, torchvision, colam_core
    work = Path(tempfile.mkdtemp(prefix="colam_mem_"))
    try:
        cfg = _config(args, Path(args.data_root), method="colam", epochs=4, stages=4)
        with Trainer(cfg, out=work / "run") as tr:
            n = 0

            def stop(ev):
                nonlocal n
                if ev.kind == "batch":
                    n += 1
                    if n >= args.memory_batches:
                        tr.request_stop()
            tr.subscribe(stop)
            tr.run_stage()
            tr.model.eval()
            ctx = StepContext(stage=1, epoch=1, batch=0, seed=0, num_stages=4, last_epoch_of_stage=True)
            t1 = time.perf_counter()
            soft = tr.method.stage_end(tr.infer, tr.data, ctx)
            pass_s = time.perf_counter() - t1
            num_train = tr.info.num_train
        print(json.dumps({"peak_rss_bytes": _peak_rss_bytes(), "imports_rss_bytes": imports_bytes,
                          "train_images": num_train, "training_batches": n, "update_pass_images": num_train,
                          "update_pass_seconds": pass_s, "soft_labels_shape": list(soft.shape),
                          "seconds": time.perf_counter() - t0}))
    finally:
        shutil.rmtree(work, ignore_errors=True)



# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="auto", help="auto picks cuda, then mps, then cpu")
    p.add_argument("--model", default="resnet20", help="any colam_core model taking 3x32x32 input")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=512)
    p.add_argument("--train-images", type=int, default=50_000, help="size of the written training set")
    p.add_argument("--batches", type=int, default=10, help="timed batches per window")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches before each window")
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds of all variants")
    p.add_argument("--ref-workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time ours HL with torch.compile (cold: a fresh inductor cache; warm-up reported "
                        "separately)")
    p.add_argument("--compile-probe", action=argparse.BooleanOptionalAction, default=True,
                   help="with --compile: measure the compile overhead of a whole short run (two subprocesses) for "
                        "the break-even; without it the break-even counts the first training graph only")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="override the trainer's choice for ours")
    p.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=None,
                   help="override the trainer's AMP choice for ours")
    p.add_argument("--colam-images", type=int, default=2560, help="training images of the COLAM-vs-HL epochs")
    p.add_argument("--colam-epochs", type=int, default=5, help="epochs (= 1-epoch stages) of the COLAM-vs-HL runs")
    p.add_argument("--update-interval", type=int, default=PAPER_UPDATE_INTERVAL,
                   help="epochs per stage for the derived per-epoch ratio")
    p.add_argument("--memory-batches", type=int, default=5)
    p.add_argument("--memory-images", type=int, default=50_000)
    p.add_argument("--skip", default="", help="comma list of sections to skip: throughput,colam,soft,memory")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (tests): small data, few batches")
    p.add_argument("--json-out", default=None, help="also write the JSON object to this file")
    p.add_argument("--_memory-probe", dest="memory_probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_compile-probe", dest="compile_probe_mode", choices=("on", "off"), default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.classes = 100  # CIFAR-100's layout; the soft-label section covers other class counts
    if args.quick:
        args.batch_size = min(args.batch_size, 32)
        args.train_images, args.batches, args.warmup, args.rounds = 512, 2, 1, 1
        args.colam_images, args.colam_epochs = 200, 3
        args.memory_images, args.memory_batches = min(args.memory_images, 512), 2
        args.ref_workers = min(args.ref_workers, 1)
        args.compile = False
    return args


def run_sections(args, log) -> dict:
    """Every section not in --skip, on args.device; the result object (without the targets)."""
    from colam_core.models import build_model, count_flops

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    res = {"model": args.model, "classes": args.classes, "batch_size": args.batch_size, "device": str(args.device),
           "machine": machine_summary(), "command": "python -m benchmarks.training " + " ".join(args.argv)}
    flops = count_flops(build_model(args.model, args.classes, 3, 32), (3, 32, 32))
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="colam_bench_"))
    cache_before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    try:
        log(f"writing {args.train_images} CIFAR-100-shaped images to {work} ...")
        root = write_cifar100(work / "data", args.train_images, max(args.batch_size, 1000), args.classes)
        # a cold compile, as a first run sees it (and the user's inductor cache is left alone)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor_cache")
        if "throughput" not in skip:
            log("throughput: reference vs ours, interleaved")
            res["throughput"] = bench_throughput(args, root, work, flops, log)
        if "colam" not in skip:
            log("COLAM vs HL per epoch")
            res["colam"] = bench_colam(args, root, work, log)
        if "soft" not in skip:
            log("soft-label state and update")
            res["soft_labels"] = bench_soft_labels(args.device, peers=(200, 2_000) if args.quick else (2_000, 20_000))
        if "memory" not in skip:
            res["memory"] = bench_memory(args, root, work, log)
    finally:
        if cache_before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_before
        shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = time.perf_counter() - t_start
    return res


def bench_memory(args, root: Path, work: Path, log) -> dict:
    """Peak RSS of a run at two data sizes (each a fresh subprocess), and the growth per training image."""
    probes = []
    for n in sorted({max(args.memory_images // 5, 200), args.memory_images}):
        log(f"peak memory of a {n}-image run (subprocess) ...")
        mem_root = root if n == args.train_images else write_cifar100(
            work / f"mem_{n}", n, max(args.batch_size, 1000), args.classes)
        probe_args = ["--device", str(args.device), "--model", args.model, "--data-root", str(mem_root),
                      "--batch-size", str(args.batch_size), "--eval-batch-size", str(args.eval_batch_size),
                      "--memory-batches", str(args.memory_batches)]
        if args.amp:
            probe_args += ["--amp", args.amp]
        if args.channels_last is not None:
            probe_args += ["--channels-last" if args.channels_last else "--no-channels-last"]
        probes.append(memory_probe(probe_args))
        if mem_root != root:
            shutil.rmtree(mem_root, ignore_errors=True)
    big, small = probes[-1], probes[0]
    return dict(big, probes=probes, bytes_per_image=(
        (big["peak_rss_bytes"] - small["peak_rss_bytes"]) / (big["train_images"] - small["train_images"])
        if big["train_images"] > small["train_images"] else None))


def main(argv=None) -> int:
    args = parse_args(argv)
    from colam_core.training import pick_device

    args.device = pick_device(args.device)
    if args.memory_probe:
        _memory_probe_main(args)
        return 0
    if args.compile_probe_mode:
        _compile_probe_main(args)
        return 0
    if threading.current_thread() is threading.main_thread():  # SIGTERM: clean up (temporary data, workers) too
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    res = run_sections(args, log)
    res["targets"] = check_targets(res)
    print(render(res))
    line = json.dumps(res, separators=(",", ":"))
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
