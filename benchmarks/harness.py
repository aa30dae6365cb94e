"""The training benchmark's instruments: synthetic CIFAR-100 files, the two loops it times, and its meters.

- ``write_cifar100``: random uint8 images in CIFAR-100's pickle layout, read back by both loops;
- ``write_cifar10``: learnable images in CIFAR-10's layout (the GPU check's training runs);
- ``ReferenceLoop``: the loop of PyTorch's official examples (torchvision dataset, PIL transforms, DataLoader);
- ``TrainerWindows``: a :class:`colam_core.training.Trainer` run and timed in windows of batches;
- ``CpuMeter`` / ``METER``: the CPU other processes use during a window, to prefer clean windows;
- ``matmul_flops``, ``machine_summary``: the machine's ceiling and what it is;
- ``summarize``, ``paired_ratio``, ``median``, ``rotate``, ``sync``: the arithmetic of interleaved rounds.
"""
from __future__ import annotations

import os
import pickle
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# ----------------------------------------------------------------------------- small helpers
CLEAN_FOREIGN = 0.25  # a window is "clean" when other processes used less than this many cores during it


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median(xs):
    xs = [x for x in xs if x is not None]
    return float(statistics.median(xs)) if xs else None


def rotate(items: list, r: int) -> list:
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


def summarize(ips: list[float], foreign: list) -> dict:
    """Median over clean windows (all windows when none is clean), plus the raw figures."""
    clean = [i for i, f in zip(ips, foreign) if f is not None and f < CLEAN_FOREIGN]
    return {"images_per_s": median(clean) if clean else median(ips), "images_per_s_median": median(ips),
            "images_per_s_best": max(ips), "clean_windows": len(clean), "windows": len(ips),
            "images_per_s_rounds": ips, "foreign_cores_rounds": foreign}


def paired_ratio(a: list, b: list, fa: list, fb: list) -> tuple[float | None, int]:
    """Median of per-round ratios a/b over rounds where both windows were clean (else over all rounds)."""
    pairs = [(x / y) for x, y, f, g in zip(a, b, fa, fb)
             if f is not None and g is not None and f < CLEAN_FOREIGN and g < CLEAN_FOREIGN]
    if pairs:
        return median(pairs), len(pairs)
    return median([x / y for x, y in zip(a, b)]), 0


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


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_patterns(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """(C, 3, 32, 32) float: a coarse colour pattern per class (4x4 blocks of 8x8 pixels); classes 2k and 2k + 1
    share 60% of theirs, so confusable pairs exist and soft labels have structure."""
    shared = rng.uniform(40, 215, (num_classes // 2 + 1, 3, 4, 4))
    own = rng.uniform(40, 215, (num_classes, 3, 4, 4))
    proto = 0.6 * shared[np.arange(num_classes) // 2] + 0.4 * own
    return proto.repeat(8, axis=2).repeat(8, axis=3)


def learnable_images(labels: np.ndarray, patterns: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 3072) uint8 CIFAR rows a model can learn: each image its class's pattern plus noise."""
    x = patterns[labels] + rng.normal(0.0, 35.0, (len(labels), *patterns.shape[1:]))
    return x.clip(0, 255).astype(np.uint8).reshape(len(labels), -1)


def write_cifar10(root: Path, num_train: int = 10_000, num_test: int = 2_000, seed: int = 0) -> Path:
    """CIFAR-10's python layout (``root/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta``), bytes-keyed
    protocol-2 pickles as the published files are, holding `learnable_images` (balanced classes)."""
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = class_patterns(10, rng)
    sizes = [num_train // 5 + (i < num_train % 5) for i in range(5)]
    for name, n in [(f"data_batch_{i + 1}", k) for i, k in enumerate(sizes)] + [("test_batch", num_test)]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels.tolist(),
                         b"data": learnable_images(labels, patterns, rng), b"filenames": [b"image.png"] * n},
                        f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"num_cases_per_batch": sizes[0], b"label_names": [n.encode() for n in CIFAR10_NAMES],
                     b"num_vis": 3072}, f, protocol=2)
    return Path(root)


def matmul_flops(device: torch.device, dtype=torch.float32, n: int | None = None, reps: int = 3) -> float:
    """Best FLOP/s of an n x n x n matmul (n = 2048 on CPU, 8192 on an accelerator)."""
    n = n or (2048 if device.type == "cpu" else 8192)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    best = float("inf")
    inner = 1 if device.type == "cpu" else 10
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
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

        from colam_core.models import build_model

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
                sync(self.device)
                first = time.perf_counter() - t0
        sync(self.device)
        a = METER.snap()
        t = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
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
                sync(dev)
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
