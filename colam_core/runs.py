"""The run directory: the contract between training and everything else.

```
runs/<name>/
  config.json        resolved configuration + versions + device
  history.csv        one row per epoch
  soft_labels.npz    one C x C matrix per soft-label update, named stage_1 ...
  checkpoints/last.pt     everything needed to resume (atomic write)
  checkpoints/stage_K.pt  model weights at the end of stage K
  summary.json       final metrics and timings
  tensorboard/       event files, when trained with --log tensorboard (a mirror; the files above are the truth)
```
`config.json` and `summary.json` carry the run-directory `format` (RUN_FORMAT; the schema is in
docs/ARCHITECTURE.md); a reader refuses a format newer than it knows, naming it.

Every file is written atomically (temporary file in the same folder, fsync,
rename), so a crash never leaves a half-written file (a stale temporary file
is removed when the next trainer locks the folder). Checkpoints and soft
labels are read without executing code (`torch.load(weights_only=True)`,
`np.load(allow_pickle=False)`).

Fault injection (tests only): `COLAM_FAULT=POINT[:N]` makes the process
SIGKILL itself the N-th time (default 1) it reaches POINT, one of
`FAULT_POINTS`: `batch` (after a training step), `eval_pass` (inside the
stage-end soft-label pass, after its first batch), `stage_files` (after the
stage's soft labels and stage checkpoint are written, before last.pt) and
`checkpoint` (halfway through writing a checkpoint's temporary file).
Unset, the check is one comparison with None.
"""
from __future__ import annotations

import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import warnings
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from . import __version__
from .data import DatasetInfo, load_dataset
from .distributed import env_world_size
from .errors import ConfigError, RunError
from .models import build_model

# ----------------------------------------------------------------------------- vocabulary
CONFIG_FILE, HISTORY_FILE = "config.json", "history.csv"
SOFT_LABELS_FILE, SUMMARY_FILE = "soft_labels.npz", "summary.json"
CHECKPOINT_DIR, LAST_CHECKPOINT = "checkpoints", "last.pt"
TENSORBOARD_DIR = "tensorboard"  # --log tensorboard writes its event files here
MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow.db", "mlartifacts"  # --log mlflow's default store, beside the run directories

#: the run-directory format this code writes (config.json and summary.json say `format`). 1: written by 0.1.0, which
#: had no `format` key; 2: adds it, the package version and the git commit, and names the torchvision ResNets' head
#: `fc` as torchvision does (format-1 checkpoints with `classifier.*` still load). Readers accept 1..RUN_FORMAT.
RUN_FORMAT = 2

#: options that never change what a run computes: outside the fingerprint a resumed run must match
# how a run is executed, not what it computes (compile and deterministic change float rounding as a device does)
FINGERPRINT_EXCLUDED = ("name", "device", "num_workers", "eval_batch_size", "checkpoint_every_epoch", "data_root",
                        "download", "extra", "log", "tracking_uri",
                        "compile", "deterministic", "warn_own_mass")
_FIRST = ("dataset", "model", "method")  # the options that say most about a run, named first in a difference


def stage_key(stage) -> str:
    """``3``, ``"3"`` or ``"stage_3"`` -> ``"stage_3"``, the name of a soft-label update and a stage checkpoint."""
    return f"stage_{stage_number(stage)}"


def stage_number(stage) -> int:
    """``3``, ``"3"`` or ``"stage_3"`` -> ``3``; anything else is a ValueError naming the value."""
    if isinstance(stage, (int, np.integer)) and not isinstance(stage, bool) and stage >= 0:
        return int(stage)
    s = str(stage)
    s = s[len("stage_"):] if s.startswith("stage_") else s
    if s.isdigit():
        return int(s)
    raise ValueError(f"stage must be K or 'stage_K' (K a whole number); got {stage!r}")


def is_stage_key(key: str) -> bool:
    return isinstance(key, str) and key.startswith("stage_") and key[6:].isdigit()


def _file_stage(p: Path) -> int:
    """K of checkpoints/stage_K.pt, or -1 for a file of another name."""
    tail = p.stem.split("_")[-1]
    return int(tail) if p.stem.startswith("stage_") and tail.isdigit() else -1


def fingerprint_diff(theirs: Mapping, ours: Mapping) -> list[str]:
    """Options that differ, the ones that say most about a run first (dataset, model, method), then by name."""
    # an older run's fingerprint may hold an option excluded since (compile): it never makes a difference
    diff = [k for k in set(theirs) | set(ours) if k not in FINGERPRINT_EXCLUDED and theirs.get(k) != ours.get(k)]
    return sorted(diff, key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))


def describe_difference(theirs: Mapping, ours: Mapping, there: str = "there", here: str = "here") -> str | None:
    """``"T: 1.5 there, 2.0 here"`` for the first option that differs, or None when the fingerprints agree."""
    diff = fingerprint_diff(theirs, ours)
    if not diff:
        return None
    k = diff[0]
    return f"{k}: {theirs.get(k)!r} {there}, {ours.get(k)!r} {here}"


def dataset_kwargs(config: Mapping, device="cpu") -> dict:
    """The keyword arguments of ``data.load_dataset`` that a run's configuration (a dict) asks for."""
    c = config
    return dict(data_root=c.get("data_root"), download=bool(c.get("download", False)), device=device,
                train_limit=c.get("train_limit"), test_limit=c.get("test_limit"), image_size=c.get("image_size"),
                num_workers=c.get("num_workers", 0), seed=c.get("seed", 0))


def split_soft_label_spec(spec: str) -> tuple[str, str]:
    """``'RUN_DIR:stage_K'`` or ``'file.npz:key'`` -> (path, key); a path that exists as given has no key."""
    if ":" in spec and not os.path.exists(spec):
        path, _, key = spec.rpartition(":")
        return path, key
    return spec, ""


def load_soft_label_matrix(spec: str) -> np.ndarray:
    """Read a C x C matrix from 'RUN_DIR:stage_K', 'file.npz:key', 'file.npz' (single array) or 'file.npy'.
    Files are read without pickle; a bad spec is a ConfigError on ``fixed_targets``."""
    path, key = split_soft_label_spec(spec)
    if os.path.isdir(path):
        path = os.path.join(path, SOFT_LABELS_FILE)
    if not os.path.isfile(path):
        raise ConfigError("fixed_targets", spec, "'RUN_DIR:stage_K' or an existing .npy/.npz file")
    try:
        if path.endswith(".npy"):
            m = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if not key:
                    if len(names) != 1:
                        raise ConfigError("fixed_targets", spec, f"FILE:KEY with KEY one of {', '.join(names)}")
                    key = names[0]
                if key not in names:
                    raise ConfigError("fixed_targets", spec, f"a key of {path}: {', '.join(names) or '(none)'}")
                m = z[key]
    except (ValueError, OSError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError("fixed_targets", spec, f"a readable numeric .npy/.npz file ({e})") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.all(np.isfinite(m)):
        raise ConfigError("fixed_targets", spec, f"a finite square C x C matrix (got shape {m.shape})")
    return m.astype(np.float32)


HISTORY_COLUMNS = ["epoch", "stage", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds",
                   "images_per_s"]


# ----------------------------------------------------------------------------- fault injection (tests)
FAULT_POINTS = ("batch", "eval_pass", "stage_files", "checkpoint")


def _parse_fault(spec: str | None):
    if not spec:
        return None
    point, _, n = spec.partition(":")
    if point not in FAULT_POINTS or (n and not n.isdigit()):
        raise RunError(f"COLAM_FAULT={spec!r} is invalid; allowed: POINT or POINT:N with POINT one of "
                       f"{', '.join(FAULT_POINTS)} (a test-only hook)")
    return point, int(n or 1)


FAULT = _parse_fault(os.environ.get("COLAM_FAULT"))
_fault_seen = 0


def fault_point(point: str) -> None:
    """SIGKILL this process the N-th time `point` is reached when COLAM_FAULT=POINT:N (tests only)."""
    global _fault_seen
    if FAULT is None or FAULT[0] != point:
        return
    _fault_seen += 1
    if _fault_seen == FAULT[1]:
        os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- atomic writes
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename: `path` is old or new, never partial.
    An OSError (disk full, permissions) leaves the previous `path` untouched and names `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            if FAULT is not None and FAULT[0] == "checkpoint" and path.suffix == ".pt":
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                fault_point("checkpoint")
                data = data[half:]
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def versions() -> dict:
    import torchvision
    return {"colam_workbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "platform": platform.platform()}


@lru_cache(maxsize=1)
def source_commit() -> dict | None:
    """``{"commit": sha, "dirty": bool}`` when colam_core runs from a git checkout of its own source (None for an
    installed wheel, a checkout without git, or a package that merely sits inside some other repository)."""
    pkg = Path(__file__).resolve().parent

    def git(*args) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout if res.returncode == 0 else None

    out = git("rev-parse", "--show-toplevel", "HEAD")
    lines = out.split() if out else []
    if len(lines) != 2 or Path(lines[0]).resolve() != pkg.parent:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": lines[1], "dirty": bool(status.strip()) if status is not None else None}


def check_format(resolved: Mapping, path) -> int:
    """The run-directory format of a config.json / summary.json dict (absent: 1, written by 0.1.0); a RunError
    naming the format when this version of the package cannot read it."""
    fmt = resolved.get("format", 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise RunError(f"{path} has run-directory format {fmt!r}, not a format number; it was not written by "
                       "training (the run directory is damaged)")
    if fmt > RUN_FORMAT:
        vers = resolved.get("versions")
        by = vers.get("colam_workbench", "a newer version") if isinstance(vers, dict) else "a newer version"
        raise RunError(f"{path} is run-directory format {fmt} (written by colam-workbench {by}); this "
                       f"colam-workbench {__version__} reads formats 1 to {RUN_FORMAT}: upgrade it "
                       "(pip install -U colam-workbench) to read this run")
    return fmt


def program_name() -> str:
    """How the user started this program, for the commands that messages suggest: ``colam`` (the installed
    script) or ``python -m colam_core`` (also from a notebook or the Python API)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "colam" if name in ("colam", "colam.exe", "colam-script.py") else "python -m colam_core"


def resume_command(run_dir, from_stage: int | None = None) -> str:
    """The command that resumes `run_dir`, with the launcher this process was started by (torchrun included)."""
    n = env_world_size()
    launcher = program_name() if n <= 1 else f"torchrun --nproc_per_node={n} -m colam_core"
    return f"{launcher} train --resume {run_dir}" + (f" --from-stage {from_stage}" if from_stage is not None else "")


# ----------------------------------------------------------------------------- write side
class RunDir:
    """Writer of one run directory. Holds an exclusive lock while a trainer uses it."""

    def __init__(self, path, write: bool = True):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._lock_fd = None
        if write:
            if self.path.exists() and not self.path.is_dir():
                raise RunError(f"--out {self.path} is a file, not a run directory; choose another --out")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                self.ckpt_dir.mkdir(exist_ok=True)
            except OSError as e:
                raise RunError(f"cannot create run directory {self.path}: {e.strerror or e}; "
                               "choose another --out") from None

    # lock ------------------------------------------------------------
    def lock(self) -> None:
        """Take the folder's exclusive lock (fcntl; released by the kernel when the process dies), then remove
        temporary files a killed writer left behind."""
        import fcntl
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot lock run directory {self.path}: {e.strerror or e}; choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunError(f"run directory {self.path} is in use by another training process{who}; "
                           "nothing was changed: wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        for d in (self.path, self.ckpt_dir):
            for tmp in d.glob(".*.tmp") if d.is_dir() else ():
                try:
                    tmp.unlink()
                except OSError:
                    pass

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

    def remove(self, name: str) -> None:
        """Delete a file of the run directory if it exists (a file ahead of the checkpoint being resumed)."""
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            pass

    def load_last(self) -> dict | None:
        p = self.ckpt_dir / "last.pt"
        if not p.exists():
            return None
        return load_checkpoint(p, hint_dir=self.ckpt_dir)

    def load_stage_resume(self, stage: int) -> dict:
        """The resumable training state stored in checkpoints/stage_K.pt (the end of stage K)."""
        p = self.ckpt_dir / f"stage_{stage}.pt"
        if not p.exists():
            have = sorted(k for k in map(_file_stage, self.ckpt_dir.glob("stage_*.pt")) if k >= 0)
            raise RunError(f"--from-stage {stage}: {p} does not exist; stages with a checkpoint: "
                           f"{', '.join(map(str, have)) or 'none'}")
        st = load_checkpoint(p, hint_dir=self.ckpt_dir)
        if not isinstance(st, dict) or not isinstance(st.get("resume"), dict):
            raise RunError(f"--from-stage {stage}: {p} holds only model weights (no training state to resume); "
                           "start a new run")
        return st["resume"]

    def read_config(self) -> dict | None:
        p = self.path / "config.json"
        if not p.exists():
            return None
        resolved = read_json(p, "config.json")
        check_format(resolved, p)  # never rewrite a run of a newer format with this older code
        return resolved


def read_json(p: Path, what: str) -> dict:
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"cannot read {p}: {type(e).__name__}: {e}; the {what} of this run directory is damaged "
                       "(use another --out, or restore the file)") from None
    if not isinstance(d, dict):
        raise RunError(f"{p} holds a {type(d).__name__}, not the JSON object training writes; the run directory "
                       "is damaged")
    return d


def _resume_hint(path: Path, hint_dir: Path) -> str:
    """Name the newest intact stage checkpoint to resume from instead of the unreadable `path`."""
    run_dir = hint_dir.parent if hint_dir.name == "checkpoints" else hint_dir
    stages = sorted((p for p in hint_dir.glob("stage_*.pt") if p != path and _file_stage(p) >= 0),
                    key=_file_stage, reverse=True)
    for p in stages:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - damaged too: try the one before
            continue
        k = _file_stage(p)
        if isinstance(st, dict) and isinstance(st.get("resume"), dict):
            return (f"; the newest intact stage checkpoint is {p}: resume from the end of stage {k} with "
                    f"`{resume_command(run_dir, k)}`, or start a new run")
        return (f"; the newest intact stage checkpoint {p} holds only the weights of stage {k} "
                "(load_run(...).model(stage)); training cannot resume from it: start a new run")
    return "; no intact stage checkpoint exists: start a new run with another --out"


def _load_error_detail(e: Exception) -> str:
    """The informative part of torch.load's error (its unsafe-loading advice and terminal colours left out)."""
    import re
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    detail = m.group(1) if m else (text.strip().splitlines() or [""])[0]
    detail = detail.split(". Please", 1)[0].split(". This is an internal", 1)[0].strip()
    return f"{type(e).__name__}: {detail[:160]}" if detail else type(e).__name__


def load_checkpoint(path, hint_dir=None, map_location="cpu") -> dict:
    """torch.load with weights_only=True (never runs code from the file); an unreadable or unsafe file gives a
    RunError naming the stage checkpoint to resume from instead."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before refusing them
            warnings.simplefilter("ignore")
            st = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt/unsafe files
        unsafe = "Unsupported global" in str(e)
        why = ("it is not a plain tensor checkpoint (it asks to run code on loading, which is refused)" if unsafe
               else "it is truncated, corrupt or not a checkpoint written by training")
        raise RunError(f"cannot load checkpoint {path}: {why} ({_load_error_detail(e)})"
                       f"{_resume_hint(path, Path(hint_dir or path.parent))}") from None
    if not isinstance(st, dict):
        raise RunError(f"cannot load checkpoint {path}: it holds a {type(st).__name__}, not a checkpoint written "
                       f"by training{_resume_hint(path, Path(hint_dir or path.parent))}")
    return st


# ----------------------------------------------------------------------------- read side
class Run:
    """A finished (or partial) run directory opened for reading. See docs/ARCHITECTURE.md."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json); "
                           "pass the --out folder of a training run")
        self.resolved = read_json(self.path / "config.json", "config.json")
        self.format = check_format(self.resolved, self.path / "config.json")
        missing = [k for k in ("config", "dataset") if not isinstance(self.resolved.get(k), dict)]
        if missing:
            raise RunError(f"{self.path / 'config.json'} lacks {', '.join(missing)}; it was not written by training "
                           "(the run directory is damaged)")
        self.config = self.resolved["config"]
        self._models: dict = {}
        self._last_stamp = None

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
        if not p.exists():
            return None
        summary = read_json(p, "summary.json")
        check_format(summary, p)
        return summary

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def info(self):
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
        return list(self.all_soft_labels())

    def all_soft_labels(self) -> dict[str, np.ndarray]:
        """Every soft-label matrix, read without pickle: an object array or a damaged file is refused."""
        p = self.path / "soft_labels.npz"
        if not p.exists():
            return {}
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                if not all(map(is_stage_key, keys)):
                    raise ValueError(f"unexpected entries {[k for k in keys if not is_stage_key(k)]}")
                mats = {k: z[k] for k in sorted(keys, key=stage_number)}
        except Exception as e:  # noqa: BLE001 - zipfile / numpy raise many types for damaged files
            raise RunError(f"cannot read {p}: {type(e).__name__}: {str(e)[:200]}; it must hold only numeric "
                           "C x C arrays named stage_K (pickled objects are refused)") from None
        C = self.num_classes
        for k, m in mats.items():
            if m.dtype.kind not in "fiu" or m.shape != (C, C):
                raise RunError(f"{p}: {k} is a {m.dtype} array of shape {m.shape}; expected a numeric {C} x {C} "
                               "matrix")
        return mats

    def soft_labels(self, stage) -> np.ndarray:
        key = stage_key(stage)
        mats = self.all_soft_labels()
        if key not in mats:
            raise KeyError(f"{self.path} has no soft labels {key!r}; available: {', '.join(mats) or 'none'}")
        return mats[key]

    def stage_checkpoints(self) -> list[int]:
        return sorted(k for k in map(_file_stage, (self.path / "checkpoints").glob("stage_*.pt")) if k >= 0)

    def model(self, stage: int | None = None):
        """Eval-mode model on CPU at the end of `stage` (None: the latest state in last.pt, reloaded when
        a run that is still training has written a newer one)."""
        key = stage if stage is None else int(stage)
        if key is None:
            last = self.path / "checkpoints" / "last.pt"
            stamp = last.stat().st_mtime_ns if last.exists() else None
            if self._last_stamp != stamp:
                self._models.pop(None, None)
                self._last_stamp = stamp
        if key not in self._models:
            if key is None:
                src = self.path / "checkpoints" / "last.pt"
                if not src.exists():
                    raise RunError(f"{self.path} has no checkpoints/last.pt (training never finished an epoch); "
                                   f"stage checkpoints: {self.stage_checkpoints() or 'none'}")
            else:
                src = self.path / "checkpoints" / f"stage_{key}.pt"
                if not src.exists():
                    raise KeyError(f"{self.path} has no checkpoint for stage {key}; "
                                   f"available: {self.stage_checkpoints()}")
            state = load_checkpoint(src)
            if not isinstance(state.get("model"), dict):
                raise RunError(f"checkpoint {src} holds no model weights; the run directory is damaged")
            info = self.info
            model = build_model(self.config["model"], info.num_classes, info.in_channels, info.image_size)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise RunError(f"checkpoint {src} does not fit model {self.config['model']!r} of this run "
                               f"({str(e).strip().splitlines()[0][:160]}...); it was written for another model "
                               "or another dataset") from None
            self._models[key] = model.eval()
        return self._models[key]

    @cached_property
    def _dataset(self):
        kw = dataset_kwargs(self.config)
        kw.update(download=False, num_workers=0)  # reading a run never fetches data
        return load_dataset(self.config["dataset"], **kw)

    def dataset(self):
        return self._dataset

    def data(self, split: str):
        return self._dataset.tensors(split)


def load_run(path) -> Run:
    return Run(path)


def is_run_dir(path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_runs(root) -> dict[str, Run]:
    """Every run directory directly under ``root``, by folder name, in name order."""
    root = Path(root)
    return {p.name: Run(p) for p in sorted(root.iterdir()) if is_run_dir(p)} if root.is_dir() else {}
