"""Benchmark: our training loop against the loop a researcher writes by hand, and against the machine.

    python -m colam_core.bench                      # the default run: a few minutes on 2 CPU cores
    python -m colam_core.bench --device cuda --batches 100 --rounds 5

In ONE run, on one device, with one model (ResNet-20 on 3x32x32 CIFAR-100-shaped data by
default) and one batch size, it measures steady-state training images/s of

1. ``reference``: the loop of PyTorch's official examples: a torchvision CIFAR dataset returning PIL
   images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
   with worker processes, NCHW float32, ``loss.item()`` / accuracy per batch, plain SGD;
2. ``ours HL``: :class:`colam_core.Trainer` with hard labels (in-memory uint8 data on the device,
   batched crop/flip, channels_last, AMP on CUDA), optionally with ``torch.compile``;
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

The output is a table, then one final line holding a JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
PAPER_UPDATE_INTERVAL = 40  # epochs per stage in the paper (160 epochs, 4 stages)
TEST_LIMIT = 200  # test images evaluated at each epoch end of the timed trainers (not timed)


# ----------------------------------------------------------------------------- small helpers
CLEAN_FOREIGN = 0.25  # a window is "clean" when other processes used less than this many cores during it


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _median(xs):
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def _rotate(items: list, r: int) -> list:
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


class CpuMeter:
    """CPU time that processes other than this one and its children use, per wall second (Linux /proc).

    The benchmark shares its cores with whatever else runs; a window during which others used
    a noticeable share of the CPU is marked, and the figures prefer the clean windows.
    ``snap()`` returns None where /proc is not available.
    """

    def __init__(self):
        self.ok = os.path.exists("/proc/stat") and os.path.exists(f"/proc/{os.getpid()}/task")
        self.tck = os.sysconf("SC_CLK_TCK") if self.ok else 100

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal

    def _tree(self, pid: int) -> int:
        total = 0
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    total += sum(self._tree(int(c)) for c in f.read().split())
        except (OSError, ValueError, IndexError):
            pass
        return total

    def snap(self):
        if not self.ok:
            return None
        try:
            return time.perf_counter(), self._busy(), self._tree(os.getpid())
        except (OSError, ValueError):
            return None

    def foreign(self, a, b) -> float | None:
        """Cores' worth of CPU used by other processes between two snaps."""
        if a is None or b is None or b[0] <= a[0]:
            return None
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / self.tck / (b[0] - a[0]))


METER = CpuMeter()


def _summarize(ips: list[float], foreign: list) -> dict:
    """Median over clean windows (all windows when none is clean), plus the raw figures."""
    clean = [i for i, f in zip(ips, foreign) if f is not None and f < CLEAN_FOREIGN]
    return {"images_per_s": _median(clean) if clean else _median(ips), "images_per_s_median": _median(ips),
            "images_per_s_best": max(ips), "clean_windows": len(clean), "windows": len(ips),
            "images_per_s_rounds": ips, "foreign_cores_rounds": foreign}


def _paired_ratio(a: list, b: list, fa: list, fb: list) -> tuple[float | None, int]:
    """Median of per-round ratios a/b over rounds where both windows were clean (else over all rounds)."""
    pairs = [(x / y) for x, y, f, g in zip(a, b, fa, fb)
             if f is not None and g is not None and f < CLEAN_FOREIGN and g < CLEAN_FOREIGN]
    if pairs:
        return _median(pairs), len(pairs)
    return _median([x / y for x, y in zip(a, b)]), 0


def machine_summary() -> dict:
    """CPU model, cores, threads, torch version, accelerator name."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        cpu = info.get("Model name", cpu)
        flags = info.get("Flags", "").split()
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except (OSError, subprocess.SubprocessError):
        isa = []
    d = {"cpu": cpu, "cpu_count": os.cpu_count(), "isa": isa, "torch": torch.__version__,
         "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
         "python": platform.python_version()}
    if torch.cuda.is_available():
        d["cuda_device"] = torch.cuda.get_device_name()
    return d


def write_cifar100(root: Path, num_train: int = 50_000, num_test: int = 10_000, num_classes: int = 100,
                   seed: int = 0) -> Path:
    """Random uint8 images in CIFAR-100's python pickle layout (``root/cifar-100-python/{train,test,meta}``).

    Labels cycle through the classes (balanced); the coarse label of fine class c is c * 20 // C.
    """
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n in (("train", num_train), ("test", num_test)):
        fine = np.arange(n) % num_classes
        rng.shuffle(fine)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "fine_labels": fine.tolist(),
                         "coarse_labels": (fine * 20 // num_classes).tolist()}, f, protocol=4)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(num_classes)],
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, f, protocol=4)
    return Path(root)


def matmul_flops(device: torch.device, dtype=torch.float32, n: int | None = None, reps: int = 3) -> float:
    """Best FLOP/s of an n x n x n matmul (n = 2048 on CPU, 8192 on an accelerator)."""
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    _sync(device)
    best = float("inf")
    inner = 1 if device.type == "cpu" else 10
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t) / inner)
    return 2 * n ** 3 / best


# ----------------------------------------------------------------------------- the reference loop
def reference_dataset(root: Path, transform):
    """torchvision's CIFAR100 (PIL images from ``__getitem__``), minus its md5 check of the files."""
    import torchvision

    class CIFAR100Files(torchvision.datasets.CIFAR100):
        def _check_integrity(self) -> bool:  # our files are not the published ones
            return True

        def _load_meta(self) -> None:
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR100Files(str(root), train=True, transform=transform)


class ReferenceLoop:
    """The training loop of PyTorch's official examples (imagenet / cifar tutorial style)."""

    def __init__(self, root: Path, model: str, num_classes: int, batch_size: int, workers: int,
                 device: torch.device, lr: float = 0.05, seed: int = 0):
        import torch.nn as nn
        import torchvision.transforms as T

        from .models import build_model

        transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
        self.dataset = reference_dataset(root, transform)
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=batch_size, shuffle=True,
                                                  num_workers=workers, pin_memory=device.type == "cuda",
                                                  drop_last=True)
        torch.manual_seed(seed)
        self.device = device
        self.model = build_model(model, num_classes, 3, 32).to(device).train()
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        self._it = None
        self.losses, self.correct, self.seen = 0.0, 0, 0

    def step(self) -> None:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            images, target = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            images, target = next(self._it)
        images = images.to(self.device, non_blocking=True)
        target = target.to(self.device, non_blocking=True)
        output = self.model(images)
        loss = self.criterion(output, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.losses += loss.item() * images.size(0)
        self.correct += (output.argmax(1) == target).sum().item()
        self.seen += images.size(0)

    def window(self, warmup: int, n: int) -> dict:
        """Warm-up steps, then n timed steps: {first_s, seconds, foreign}."""
        t0 = time.perf_counter()
        for i in range(warmup):
            self.step()
            if i == 0:
                _sync(self.device)
                first = time.perf_counter() - t0
        _sync(self.device)
        a = METER.snap()
        t = time.perf_counter()
        for _ in range(n):
            self.step()
        _sync(self.device)
        secs = time.perf_counter() - t
        return {"first_s": first, "seconds": secs, "foreign": METER.foreign(a, METER.snap())}

    def close(self) -> None:
        self._it = None  # shuts the workers down


# ----------------------------------------------------------------------------- our trainer, windowed
class TrainerWindows:
    """Run a :class:`Trainer` in windows of batches (stopping cleanly between them) and time them."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.batches_done = 0

    def window(self, warmup: int, n: int) -> dict:
        """Warm-up batches, then n timed batches (timed between batch events): {first_s, seconds, foreign}."""
        tr, dev = self.trainer, self.trainer.device
        stamps: list[float] = []
        snaps = []
        total = warmup + n

        def listener(ev):
            if ev.kind != "batch":
                return
            k = len(stamps)
            if k in (0, warmup - 1, total - 1):
                _sync(dev)
            stamps.append(time.perf_counter())
            if k in (warmup - 1, total - 1):
                snaps.append(METER.snap())
            if len(stamps) >= total:
                tr.request_stop()

        tr.subscribe(listener)
        t0 = time.perf_counter()
        try:
            epoch_before = tr.epoch
            tr.run_stage()
        finally:
            tr.unsubscribe(listener)
        if tr.epoch != epoch_before or len(stamps) < total:
            raise RuntimeError("a timed window ran past the end of an epoch; use more --train-images or fewer "
                               "--batches / --rounds")
        self.batches_done += total
        return {"first_s": stamps[0] - t0, "seconds": stamps[total - 1] - stamps[warmup - 1],
                "foreign": METER.foreign(*snaps)}


def _config(args, data_root: Path, **kw):
    from .config import Config
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
    from .trainer import Trainer, amp_dtype

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
        ours = Trainer(_config(args, root, method="hl", epochs=1, test_limit=TEST_LIMIT), out=workdir / "hl")
        trainers.append(ours)
        variants["ours_hl"] = TrainerWindows(ours)
        # COLAM's online variant in a stage's last epoch: soft-label loss plus per-batch class statistics
        online = Trainer(_config(args, root, method="colam", update="online", epochs=2, stages=2,
                                 test_limit=TEST_LIMIT), out=workdir / "colam_online")
        trainers.append(online)
        variants["ours_colam_online"] = TrainerWindows(online)
        if args.compile:
            comp = Trainer(_config(args, root, method="hl", epochs=1, test_limit=TEST_LIMIT, compile=True),
                           out=workdir / "hl_compiled")
            trainers.append(comp)
            variants["ours_hl_compiled"] = TrainerWindows(comp)
        amp = amp_dtype(ours.cfg.amp, device)
        settings = {"channels_last": ours._channels_last, "amp": str(amp).replace("torch.", "") if amp else "off",
                    "compile_row": bool(args.compile)}
        names = list(variants)
        ips: dict[str, list] = {k: [] for k in names}
        foreign: dict[str, list] = {k: [] for k in names}
        warm: dict[str, float] = {}
        mm: list[float] = []
        mm_amp: list[float] = []
        for r in range(args.rounds):
            for name in _rotate(names, r):
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
        out[name] = {"warmup_s": warm[name], **_summarize(ips[name], foreign[name])}
    for name in names[1:]:
        out[f"{name}_vs_reference"], out[f"{name}_vs_reference_pairs"] = _paired_ratio(
            ips[name], ips["reference"], foreign[name], foreign["reference"])
    out["ours_colam_online_vs_ours_hl"], out["ours_colam_online_vs_ours_hl_pairs"] = _paired_ratio(
        ips["ours_colam_online"], ips["ours_hl"], foreign["ours_colam_online"], foreign["ours_hl"])
    if "ours_hl_compiled" in out:
        c, e = out["ours_hl_compiled"], out["ours_hl"]
        out["ours_hl_compiled_vs_ours_hl"], _ = _paired_ratio(ips["ours_hl_compiled"], ips["ours_hl"],
                                                              foreign["ours_hl_compiled"], foreign["ours_hl"])
        gain = 1 / e["images_per_s"] - 1 / c["images_per_s"]  # seconds saved per image
        extra = c["warmup_s"] - e["warmup_s"]
        out["compile_break_even_images"] = extra / gain if gain > 0 else None
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
    return out


def bench_colam(args, root: Path, workdir: Path, log) -> dict:
    """COLAM (eval-pass and online) vs HL per epoch, in 1-epoch stages, interleaved epoch by epoch."""
    from .trainer import Trainer

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
            for name in _rotate(names, e):
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
    u = _median([upd[i] / ((hl[i] + ev_train[i]) / 2) for i in use if i < len(upd)])
    return {
        "images": lim, "epochs": S, "stage_epochs": 1, "window_epochs": E, "updates_in_window": U,
        "clean_epochs": len(clean), "epoch_seconds": hist, "update_seconds": upd, "foreign_cores": foreign,
        "update_cost_epochs": u,
        "eval_direct_ratio": sum(hl[i] for i in use) / sum(ev[i] for i in use),
        "eval_predicted_ratio": E / (E + U * u) if u is not None else None,
        "eval_train_only_ratio": sum(hl[i] for i in use) / sum(ev_train[i] for i in use),
        "online_ratio": sum(hl[i] for i in use) / sum(on[i] for i in use),
        "online_ratio_median_epoch": _median([hl[i] / on[i] for i in use]),
        "update_interval_epochs": args.update_interval,
        "eval_ratio_at_interval": 1 / (1 + u / args.update_interval) if u is not None else None,
    }


def bench_soft_labels(device: torch.device, classes=(10, 100, 1000), peers=(2_000, 20_000), reps: int = 5) -> list:
    """The soft-label state and update alone (no model): bytes held, and seconds of the two parts of an update,
    accumulating the per-class sums of the peers' outputs (linear in peers) and turning them into labels (C x C)."""
    import torch.nn.functional as F

    from .config import Config
    from .methods import COLAM, class_statistics, soft_cross_entropy

    def best_of(fn):
        best = float("inf")
        for _ in range(reps + 1):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - t)
        return best

    rows = []
    for C in classes:
        n_max = max(peers)
        labels = torch.arange(n_max, device=device) % C
        m = COLAM(Config(method="colam"), C, labels, device)
        g = torch.Generator(device="cpu").manual_seed(C)
        logits = (torch.randn(n_max, C, generator=g) * 3).to(device)
        accumulate = {n: best_of(lambda n=n: class_statistics(m._values(logits[:n]), labels[:n], C)) for n in peers}
        sums, counts = class_statistics(m._values(logits), labels, C)
        finish = best_of(lambda: m._finish(sums.clone(), counts.clone()))
        state = sum(v.numel() * v.element_size() for v in m.state_dict().values() if torch.is_tensor(v))
        accum = C * C * 8 + C * 8  # online accumulators (float64 sums and counts)
        # per-batch cost of the soft-label loss (forward + backward) against hard-label CE, batch 128
        yb, zb = labels[:128], logits[:128].clone().requires_grad_(True)
        hard = best_of(lambda: F.cross_entropy(zb, yb).backward())
        soft = best_of(lambda: soft_cross_entropy(zb, m.targets(yb), 1.5).backward())
        n1, n2 = min(peers), max(peers)
        rows.append({"classes": C, "state_bytes": state, "online_accumulator_bytes": accum,
                     "accumulate_seconds": {str(k): v for k, v in accumulate.items()}, "finish_seconds": finish,
                     "ns_per_peer": accumulate[n2] / n2 * 1e9, "time_ratio": accumulate[n2] / accumulate[n1],
                     "peer_ratio": n2 / n1, "loss_seconds_hard": hard, "loss_seconds_soft": soft})
    return rows


def memory_probe(args_list: list[str], timeout: float = 900) -> dict:
    """Peak RSS of a fresh process running a CIFAR-100-sized run (see `_memory_probe_main`)."""
    cmd = [sys.executable, "-m", "colam_core.bench", "--_memory-probe", *args_list]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe failed ({res.returncode}): {res.stderr[-2000:]}")
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
    from .methods import StepContext
    from .trainer import Trainer

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
            soft = tr.method.stage_end(tr._infer, tr.data, ctx)
            pass_s = time.perf_counter() - t1
            num_train = tr.info.num_train
        print(json.dumps({"peak_rss_bytes": _peak_rss_bytes(), "imports_rss_bytes": imports_bytes,
                          "train_images": num_train, "training_batches": n, "update_pass_images": num_train,
                          "update_pass_seconds": pass_s, "soft_labels_shape": list(soft.shape),
                          "seconds": time.perf_counter() - t0}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- report
def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def render(res: dict) -> str:
    m, thr, col = res["machine"], res.get("throughput"), res.get("colam")
    lines = [f"COLAM Workbench benchmark: {res['model']} on 3x32x32, {res['classes']} classes, batch "
             f"{res['batch_size']}, device {res['device']} ({m['cpu']}, {m['torch_threads']} threads), "
             f"torch {m['torch']}"]
    if thr:
        s = thr["settings"]
        lines += ["", f"Training throughput, steady state: {thr['rounds']} interleaved rounds of {thr['warmup_batches']} "
                      f"warm-up + {thr['batches_per_window']} timed batches (ours: channels_last={s['channels_last']}, "
                      f"amp={s['amp']}); img/s = median over clean windows (other processes < "
                      f"{thr['clean_foreign_cores']} cores)",
                  f"{'variant':<36}{'warm-up s':>10}{'img/s':>8}{'all med':>9}{'best':>7}{'clean':>7}{'x ref':>7}"
                  f"{'ceiling':>9}"]
        labels = {"reference": f"reference (PIL, {thr['reference_workers']} workers, NCHW)",
                  "ours_hl": "ours HL", "ours_colam_online": "ours COLAM online (accumulating)",
                  "ours_hl_compiled": "ours HL + torch.compile (cold)"}
        for k, label in labels.items():
            if k in thr:
                v = thr[k]
                lines.append(f"{label:<36}{v['warmup_s']:>10.2f}{v['images_per_s']:>8.0f}"
                             f"{v['images_per_s_median']:>9.0f}{v['images_per_s_best']:>7.0f}"
                             f"{v['clean_windows']:>4}/{v['windows']:<2}{_fmt(thr.get(k + '_vs_reference', 1.0)):>7}"
                             f"{v['ceiling_fraction']:>9.2f}")
        lines.append(f"model {thr['model_flops_per_image'] / 1e6:.1f} MFLOP/image forward (x3 for training); matmul "
                     f"peak {thr['matmul_flops_fp32'] / 1e9:.0f} GFLOP/s fp32"
                     + (f", {thr['matmul_flops_amp'] / 1e9:.0f} GFLOP/s amp" if "matmul_flops_amp" in thr else "")
                     + f"; ceiling fraction of {thr['ceiling_variant']}: {thr['ceiling_fraction']:.2f}")
        lines.append(f"COLAM online / HL, same rounds: {thr['ours_colam_online_vs_ours_hl']:.3f}")
        if "ours_hl_compiled_vs_ours_hl" in thr:
            be = thr.get("compile_break_even_images")
            lines.append(f"torch.compile / eager: {_fmt(thr['ours_hl_compiled_vs_ours_hl'], '.3f')}; "
                         + (f"pays for its warm-up after {be:.0f} images" if be is not None
                            else "never pays for its warm-up"))
    if col:
        lines += ["", f"COLAM vs HL per epoch ({col['images']} images, 1-epoch stages, {col['epochs']} epochs "
                      f"interleaved, {col['window_epochs']} measured, {col['updates_in_window']} updates inside)",
                  f"  one eval-pass update costs {_fmt(col['update_cost_epochs'], '.3f')} epochs",
                  f"  eval-pass, every epoch:   HL/COLAM time ratio {_fmt(col['eval_direct_ratio'], '.3f')} measured, "
                  f"{_fmt(col['eval_predicted_ratio'], '.3f')} predicted by 1/(1 + updates*u/epochs); training "
                  f"alone {_fmt(col['eval_train_only_ratio'], '.3f')}",
                  f"  eval-pass, every {col['update_interval_epochs']} epochs: {_fmt(col['eval_ratio_at_interval'], '.4f')}"
                  " (derived)",
                  f"  online variant:           {_fmt(col['online_ratio'], '.3f')} (median epoch pair "
                  f"{_fmt(col['online_ratio_median_epoch'], '.3f')})"]
    if res.get("soft_labels"):
        rows = res["soft_labels"]
        n1, n2 = list(rows[0]["accumulate_seconds"])
        lines += ["", f"Soft-label state and update alone (no model; n1, n2 = {n1}, {n2} peer samples)",
                  f"{'C':>6}{'state bytes':>13}{'online acc.':>13}{'accum. n1 ms':>14}{'accum. n2 ms':>14}"
                  f"{'t2/t1':>7}{'ns/peer':>9}{'finish ms':>11}{'loss us hard/soft':>19}"]
        for row in rows:
            t = list(row["accumulate_seconds"].values())
            lines.append(f"{row['classes']:>6}{row['state_bytes']:>13}{row['online_accumulator_bytes']:>13}"
                         f"{t[0] * 1e3:>14.3f}{t[-1] * 1e3:>14.3f}{row['time_ratio']:>7.1f}{row['ns_per_peer']:>9.0f}"
                         f"{row['finish_seconds'] * 1e3:>11.3f}"
                         f"{row['loss_seconds_hard'] * 1e6:>11.0f}/{row['loss_seconds_soft'] * 1e6:<7.0f}")
    if res.get("memory"):
        mem = res["memory"]
        lines += ["", f"Peak resident memory, {mem['train_images']} training images, {mem['training_batches']} "
                      f"batches + one update pass over all of them ({mem['update_pass_seconds']:.1f} s): "
                      f"{mem['peak_rss_bytes'] / 2 ** 30:.2f} GiB (the imports alone: "
                      f"{mem['imports_rss_bytes'] / 2 ** 30:.2f} GiB)"]
        if mem.get("bytes_per_image") is not None:
            small = mem["probes"][0]
            lines.append(f"  with {small['train_images']} images: {small['peak_rss_bytes'] / 2 ** 30:.2f} GiB; growth "
                         f"{mem['bytes_per_image']:.0f} bytes per training image (3072 of them the uint8 image)")
    if res.get("targets"):
        lines += ["", "Targets"]
        for k, v in res["targets"].items():
            lines.append(f"  {k:<42} {_fmt(v['value'], '.3f'):>8}  target {v['op']} {v['target']}: "
                         f"{'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)


def _targets(res: dict) -> dict:
    t = {}

    def add(name, value, op, target):
        if value is not None:
            t[name] = {"value": value, "op": op, "target": target,
                       "met": value >= target if op == ">=" else value <= target}
    thr, col = res.get("throughput"), res.get("colam")
    if thr:
        add("ours HL / reference (steady state)", thr["ours_hl_vs_reference"], ">=", 1.5)
        if "ours_hl_compiled_vs_reference" in thr:
            add("ours HL compiled / reference", thr["ours_hl_compiled_vs_reference"], ">=", 1.5)
        add("ceiling fraction", thr["ceiling_fraction"], ">=", 0.6)
    if col:
        add(f"COLAM eval-pass / HL per epoch at {col['update_interval_epochs']}", col["eval_ratio_at_interval"],
            ">=", 0.98)
        add("COLAM online / HL per epoch (epochs)", col["online_ratio"], ">=", 0.99)
    if thr:
        add("COLAM online / HL (batch windows)", thr["ours_colam_online_vs_ours_hl"], ">=", 0.99)
    if res.get("memory"):
        add("peak RSS GiB (CIFAR-100 sized)", res["memory"]["peak_rss_bytes"] / 2 ** 30, "<=", 2.0)
    return t


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m colam_core.bench", description=__doc__.split("\n\n")[0],
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
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.classes = 100  # CIFAR-100's layout; the soft-label section covers other class counts
    if args.quick:
        args.batch_size = min(args.batch_size, 32)
        args.train_images, args.batches, args.warmup, args.rounds = 512, 2, 1, 1
        args.colam_images, args.colam_epochs = 200, 3
        args.memory_images, args.memory_batches = min(args.memory_images, 512), 2
        args.ref_workers = min(args.ref_workers, 1)
        args.compile = False
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from .trainer import pick_device
    args.device = pick_device(args.device)
    if args.memory_probe:
        _memory_probe_main(args)
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if threading.current_thread() is threading.main_thread():  # SIGTERM: clean up (temporary data, workers) too
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from .models import build_model, count_flops
    res = {"model": args.model, "classes": args.classes, "batch_size": args.batch_size, "device": str(args.device),
           "machine": machine_summary(), "command": "python -m colam_core.bench " + " ".join(sys.argv[1:] if argv is None
                                                                                              else argv)}
    flops = count_flops(build_model(args.model, args.classes, 3, 32), (3, 32, 32))
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="colam_bench_"))
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
            res["memory"] = dict(big, probes=probes, bytes_per_image=(
                (big["peak_rss_bytes"] - small["peak_rss_bytes"]) / (big["train_images"] - small["train_images"])
                if big["train_images"] > small["train_images"] else None))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = time.perf_counter() - t_start
    res["targets"] = _targets(res)
    print(render(res))
    line = json.dumps(res, separators=(",", ":"))
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
