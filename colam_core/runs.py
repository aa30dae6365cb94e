"""The run directory: the contract between training and everything else.

```
runs/<name>/
  config.json        resolved configuration + versions + device
  history.csv        one row per epoch
  soft_labels.npz    one C x C matrix per soft-label update, named stage_1 ...
  checkpoints/last.pt     everything needed to resume (atomic write)
  checkpoints/stage_K.pt  model weights at the end of stage K
  summary.json       final metrics and timings
```
Every file is written atomically (temporary file in the same folder, fsync,
rename), so a crash never leaves a half-written file. Checkpoints and soft
labels are read without executing code (`torch.load(weights_only=True)`,
`np.load(allow_pickle=False)`).
"""
from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HISTORY_COLUMNS = ["epoch", "stage", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds",
                   "images_per_s"]


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (missing, locked, another configuration, corrupt)."""


# ----------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def versions() -> dict:
    import torchvision
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "platform": platform.platform()}


# ----------------------------------------------------------------------------- write side
class RunDir:
    """Writer of one run directory. Holds an exclusive lock while a trainer uses it."""

    def __init__(self, path, write: bool = True):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._lock_fd = None
        if write:
            self.path.mkdir(parents=True, exist_ok=True)
            self.ckpt_dir.mkdir(exist_ok=True)

    # lock ------------------------------------------------------------
    def lock(self) -> None:
        import fcntl
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunError(f"run directory {self.path} is in use by another training process "
                           "(lock held); wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            import fcntl
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # files -----------------------------------------------------------
    def write_config(self, resolved: dict) -> None:
        atomic_write_text(self.path / "config.json", json.dumps(resolved, indent=2, sort_keys=True))

    def write_history(self, rows: list[dict]) -> None:
        df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        atomic_write_text(self.path / "history.csv", df.to_csv(index=False))

    def write_soft_labels(self, mats: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in mats.items()})
        atomic_write_bytes(self.path / "soft_labels.npz", buf.getvalue())

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=2, sort_keys=True))

    def save_last(self, state: dict) -> None:
        atomic_torch_save(state, self.ckpt_dir / "last.pt")

    def save_stage(self, stage: int, state: dict) -> None:
        atomic_torch_save(state, self.ckpt_dir / f"stage_{stage}.pt")

    def load_last(self) -> dict | None:
        p = self.ckpt_dir / "last.pt"
        if not p.exists():
            return None
        return load_checkpoint(p, hint_dir=self.ckpt_dir)

    def read_config(self) -> dict | None:
        p = self.path / "config.json"
        return json.loads(p.read_text()) if p.exists() else None


def load_checkpoint(path, hint_dir=None, map_location="cpu") -> dict:
    """torch.load with weights_only=True; a corrupt file names the stage checkpoint to resume from."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt/unsafe files
        stages = sorted(Path(hint_dir or path.parent).glob("stage_*.pt"),
                        key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else -1)
        hint = (f"; the newest intact stage checkpoint is {stages[-1]} (copy it to {path} to resume from that "
                "stage, or start a new run)") if stages else "; no stage checkpoint exists: start a new run"
        raise RunError(f"cannot load checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                       f"{hint}") from None


# ----------------------------------------------------------------------------- read side
class Run:
    """A finished (or partial) run directory opened for reading. See docs/ARCHITECTURE.md."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json); "
                           "pass the --out folder of a training run")
        self.resolved = json.loads((self.path / "config.json").read_text())
        self.config = self.resolved["config"]
        self._models: dict = {}

    def __repr__(self):
        return f"Run({str(self.path)!r}, method={self.config['method']!r}, epochs={len(self.history)})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def history(self) -> pd.DataFrame:
        p = self.path / "history.csv"
        return pd.read_csv(p) if p.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)

    @property
    def summary(self) -> dict | None:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.exists() else None

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def info(self):
        from .data import DatasetInfo
        return DatasetInfo(**self.resolved["dataset"])

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def output_temperature(self) -> float:
        return float(self.resolved.get("output_temperature", 1.0))

    def soft_label_keys(self) -> list[str]:
        p = self.path / "soft_labels.npz"
        if not p.exists():
            return []
        with np.load(p, allow_pickle=False) as z:
            return sorted(z.files, key=lambda k: int(k.split("_")[1]))

    def all_soft_labels(self) -> dict[str, np.ndarray]:
        p = self.path / "soft_labels.npz"
        if not p.exists():
            return {}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))}

    def soft_labels(self, stage) -> np.ndarray:
        key = stage if isinstance(stage, str) else f"stage_{int(stage)}"
        mats = self.all_soft_labels()
        if key not in mats:
            raise KeyError(f"{self.path} has no soft labels {key!r}; available: {', '.join(mats) or 'none'}")
        return mats[key]

    def stage_checkpoints(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in (self.path / "checkpoints").glob("stage_*.pt"))

    def model(self, stage: int | None = None):
        """Eval-mode model on CPU at the end of `stage` (None: the latest state in last.pt)."""
        key = stage if stage is None else int(stage)
        if key not in self._models:
            from .models import build_model
            if key is None:
                state = load_checkpoint(self.path / "checkpoints" / "last.pt")["model"]
            else:
                p = self.path / "checkpoints" / f"stage_{key}.pt"
                if not p.exists():
                    raise KeyError(f"{self.path} has no checkpoint for stage {key}; "
                                   f"available: {self.stage_checkpoints()}")
                state = load_checkpoint(p)["model"]
            info = self.info
            model = build_model(self.config["model"], info.num_classes, info.in_channels, info.image_size)
            model.load_state_dict(state)
            self._models[key] = model.eval()
        return self._models[key]

    @cached_property
    def _dataset(self):
        from .data import load_dataset
        c = self.config
        return load_dataset(c["dataset"], data_root=c.get("data_root"), download=False, device="cpu",
                            train_limit=c.get("train_limit"), test_limit=c.get("test_limit"),
                            image_size=c.get("image_size"), num_workers=0, seed=c.get("seed", 0))

    def dataset(self):
        return self._dataset

    def data(self, split: str):
        return self._dataset.tensors(split)


def load_run(path) -> Run:
    return Run(path)
