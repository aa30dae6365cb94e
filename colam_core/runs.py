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

The folder is the tool's own: training writes only into a folder it created, an empty one, or one that holds a
run (the marker file `.colam_run`, or a `config.json` written by training); it takes the lock (`.lock`,
`filelock`) before it reads anything there; it never reads or writes through a symbolic link inside the folder
(`.lock`, `checkpoints/` and every file of the contract are checked) and never deletes a file it did not write.

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
import re
import signal
import subprocess
import sys
import stat
import tempfile
import time
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

MARKER_FILE, LOCK_FILE = ".colam_run", ".lock"   # "training owns this folder"; the writers' lock
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, SOFT_LABELS_FILE, SUMMARY_FILE)
REPLACED_PREFIX = "replaced_"  # --from-stage K keeps what it replaces in RUN/replaced_<time>/
#: the temporary files atomic writes leave when killed mid-write (`.NAME.RANDOM.tmp`); only these are cleaned up
_OWN_TMP = re.compile(r"^\.(?:%s|stage_\d+\.pt)\.\w+\.tmp$"
                      % "|".join(map(re.escape, (*RUN_FILES, MARKER_FILE, LAST_CHECKPOINT))))

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


def regular_file(p: Path) -> bool:
    """Whether `p` exists (a link is followed: reading through one is harmless); a FIFO, a device or a folder
    there is a RunError, since reading it would hang or never end."""
    if not os.path.lexists(p):
        return False
    if not Path(p).is_file():
        raise RunError(f"{p} is not a regular file; the run directory is damaged (remove or restore it)")
    return True


def stage_numbers(ckpt_dir) -> list[int]:
    """K of every checkpoints/stage_K.pt, in order."""
    return sorted(k for k in map(_file_stage, Path(ckpt_dir).glob("stage_*.pt")) if k >= 0)


def own_entry(p: Path, kind: str = "file") -> bool:
    """Whether `p` exists; a symbolic link there (or anything but a regular file / a folder) is a RunError, so
    nothing inside a run directory is read or written through a link."""
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return False
    if not (stat.S_ISDIR if kind == "folder" else stat.S_ISREG)(st.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else f"not a {kind}"
        raise RunError(f"{p} is {what}; a run directory's files must be its own (training never reads or writes "
                       "through a link): nothing was changed; remove it, or choose another --out")
    return True


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
    return check_label_matrix(m, "fixed_targets", spec)


def check_label_matrix(m: np.ndarray, option: str, value) -> np.ndarray:
    """A C x C matrix of class-wise soft labels as float32: real numbers, finite, each row >= 0 summing to 1."""
    allowed = "a C x C matrix of soft labels: real numbers, each row >= 0 and summing to 1"
    if m.dtype.kind not in "fiu":
        raise ConfigError(option, value, f"{allowed} (got a {m.dtype} array)")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ConfigError(option, value, f"{allowed} (got shape {m.shape})")
    m = m.astype(np.float64)
    rows = m.sum(1)
    bad = np.flatnonzero(~np.isfinite(m).all(1) | (m < 0).any(1) | (np.abs(rows - 1) > 1e-3))
    if bad.size:
        r = int(bad[0])
        raise ConfigError(option, value, f"{allowed} (row {r} has min {m[r].min():.3g} and sum {rows[r]:.3g})")
    return m.astype(np.float32)


_REQUIRED_OPTIONS = ("dataset", "model", "method", "epochs")  # what a reader of config.json relies on
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


def check_fault_spec() -> None:
    """Refuse an invalid COLAM_FAULT when training starts (never at import: `show` and `list` ignore it)."""
    _parse_fault(os.environ.get("COLAM_FAULT"))


try:
    FAULT = _parse_fault(os.environ.get("COLAM_FAULT"))
except RunError:
    FAULT = None
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
    """Writer of one run directory: claims the folder, holds its exclusive lock while a trainer uses it, and
    writes, removes and keeps copies of only the files of the contract."""

    def __init__(self, path):
        self.path = Path(path)
        self.ckpt_dir = self.path / CHECKPOINT_DIR
        self._lock = None

    # ownership -------------------------------------------------------
    def claim(self) -> bool:
        """Create the folder (True), or check that an existing one may be written (False): it holds a run or
        nothing training did not write; anything else is refused before a file is written."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path} is a file, not a run directory; choose another --out")
        try:
            self.path.mkdir(parents=True)
            return True
        except FileExistsError:
            pass
        except OSError as e:
            raise RunError(f"cannot create run directory {self.path}: {e.strerror or e}; "
                           "choose another --out") from None
        self.check_owned()
        return False

    def holds_run(self) -> bool:
        """The marker, or (a run written before there was one) a config.json that training wrote."""
        if own_entry(self.path / MARKER_FILE):
            return True
        cfg = self.path / CONFIG_FILE
        if not own_entry(cfg):
            return False
        try:
            d = load_json(cfg)
        except (OSError, ValueError):
            return False
        return isinstance(d, dict) and isinstance(d.get("config"), dict) and isinstance(d.get("fingerprint"), dict)

    def check_owned(self) -> None:
        """Refuse a folder that holds files training did not write (it would overwrite or delete them)."""
        if self.holds_run():
            return
        with os.scandir(self.path) as it:
            foreign = sorted(e.name for e in it if not self._leftover(e))
        if foreign:
            names = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
            raise RunError(f"--out {self.path} already holds files that training did not write ({names}); nothing "
                           "was changed: training writes only into a new or empty folder, or one that holds a run "
                           "(choose another --out)")

    @staticmethod
    def _leftover(e: os.DirEntry) -> bool:
        """What a training that failed to start may leave in a folder: the lock, an empty checkpoints folder."""
        if e.name == LOCK_FILE and e.is_file(follow_symlinks=False):
            return True
        return e.name == CHECKPOINT_DIR and e.is_dir(follow_symlinks=False) and not any(os.scandir(e.path))

    def adopt(self) -> None:
        """Under the lock: the checkpoints folder (never a link)."""
        if not own_entry(self.ckpt_dir, "folder"):
            self.ckpt_dir.mkdir()

    def discard(self, created: bool) -> None:
        """Setup failed in a folder that held no run: remove what this process wrote there (the folder too when it
        created it), and nothing else."""
        self.unlock()
        for d, names in ((self.ckpt_dir, (LAST_CHECKPOINT,)), (self.path, (*RUN_FILES, MARKER_FILE, LOCK_FILE))):
            if not d.is_dir() or d.is_symlink():
                continue
            for p in d.iterdir():
                if p.is_file() and not p.is_symlink() and (p.name in names or _OWN_TMP.match(p.name)
                                                           or (d == self.ckpt_dir and _file_stage(p) >= 0)):
                    p.unlink(missing_ok=True)
        for d in (self.ckpt_dir, self.path) if created else (self.ckpt_dir,):
            try:
                d.rmdir()  # only when empty: a file someone else put there stays, and so does its folder
            except OSError:
                pass

    def keep_copy(self, names) -> Path | None:
        """Keep the named files (paths inside the run directory) in RUN/replaced_<time>/ before they are replaced:
        hard links (atomic writes replace a file, so the old one lives on there), copies where links fail."""
        import shutil
        have = [n for n in names if own_entry(self.path / n)]
        if not have:
            return None
        dest = self.path / f"{REPLACED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
        k = 1
        while dest.exists():
            k += 1
            dest = dest.with_name(f"{dest.name.split('.')[0]}.{k}")
        for n in have:
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.path / n, dest / n, follow_symlinks=False)
            except OSError:
                shutil.copy2(self.path / n, dest / n, follow_symlinks=False)
        return dest

    # lock ------------------------------------------------------------
    @property
    def locked(self) -> bool:
        return self._lock is not None

    def lock(self) -> None:
        """Take the folder's exclusive lock (`filelock`: flock, released by the kernel when the process dies; a
        soft lock on a file system without flock), record this pid in it, then remove the temporary files a
        killed writer left behind. The lock file is never opened through a link."""
        from filelock import FileLock, Timeout
        p = self.path / LOCK_FILE
        if own_entry(p) and os.lstat(p).st_nlink > 1:
            raise RunError(f"{p} has another hard link; a run directory's files must be its own: nothing was "
                           "changed; remove it, or choose another --out")
        lock = FileLock(p, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            who = f" (pid {self._holder()})" if self._holder() else ""
            raise RunError(f"run directory {self.path} is in use by another training process{who}; "
                           "nothing was changed: wait for it to finish, or choose another --out") from None
        except OSError as e:
            own_entry(p)  # a link planted meanwhile: say so
            raise RunError(f"cannot lock run directory {self.path}: {e.strerror or e} ({p}); choose another "
                           "--out") from None
        self._lock = lock
        if not hasattr(lock, "pid"):  # a soft lock records its holder itself
            try:
                fd = os.open(p, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, str(os.getpid()).encode(), 0)
                finally:
                    os.close(fd)
            except OSError as e:
                raise OSError(e.errno, e.strerror or str(e), str(p)) from None
        for d in (self.path, self.ckpt_dir):
            for tmp in d.iterdir() if d.is_dir() and not d.is_symlink() else ():
                if _OWN_TMP.match(tmp.name) and tmp.is_file() and not tmp.is_symlink():
                    tmp.unlink(missing_ok=True)

    def _holder(self) -> str:
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
            try:
                first = os.read(fd, 64).decode(errors="replace").strip().split("\n")[0].strip()
            finally:
                os.close(fd)
        except OSError:
            return ""
        return first if first.isdigit() else ""

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # files -----------------------------------------------------------
    def write_config(self, resolved: dict) -> None:
        """config.json, then (once) the marker that says training owns this folder."""
        atomic_write_text(self.path / CONFIG_FILE, json.dumps(resolved, indent=2, sort_keys=True))
        if not own_entry(self.path / MARKER_FILE):
            atomic_write_text(self.path / MARKER_FILE, json.dumps({"format": 1, "written_by": "colam_core"}) + "\n")

    def write_history(self, rows: list[dict]) -> None:
        df = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
        atomic_write_text(self.path / HISTORY_FILE, df.to_csv(index=False))

    def write_soft_labels(self, mats: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, dtype=np.float32) for k, v in mats.items()})
        atomic_write_bytes(self.path / SOFT_LABELS_FILE, buf.getvalue())

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True))

    def save_last(self, state: dict) -> None:
        atomic_torch_save(state, self.ckpt_dir / LAST_CHECKPOINT)

    def save_stage(self, stage: int, state: dict) -> None:
        atomic_torch_save(state, self.stage_path(stage))

    def stage_path(self, stage: int) -> Path:
        return self.ckpt_dir / f"stage_{stage}.pt"

    def remove(self, name: str) -> None:
        """Delete a file of the run directory if it exists (a file ahead of the checkpoint being resumed); a link
        there is removed itself, never what it points to."""
        (self.path / name).unlink(missing_ok=True)

    def has(self, name: str) -> bool:
        return own_entry(self.path / name)

    def load_last(self) -> dict | None:
        p = self.ckpt_dir / LAST_CHECKPOINT
        if not own_entry(p):
            return None
        return load_checkpoint(p, hint_dir=self.ckpt_dir)

    def load_stage_resume(self, stage: int) -> dict:
        """The resumable training state stored in checkpoints/stage_K.pt (the end of stage K)."""
        p = self.stage_path(stage)
        if not own_entry(p):
            raise RunError(f"--from-stage {stage}: {p} does not exist; stages with a checkpoint: "
                           f"{', '.join(map(str, stage_numbers(self.ckpt_dir))) or 'none'}")
        st = load_checkpoint(p, hint_dir=self.ckpt_dir)
        if not isinstance(st.get("resume"), dict):
            raise RunError(f"--from-stage {stage}: {p} holds only model weights (no training state to resume); "
                           "start a new run")
        return st["resume"]

    def newest_stage_resume(self, min_epoch: int = 0) -> tuple[int, dict] | None:
        """(K, training state) of the newest stage checkpoint that loads, holds a training state and has reached
        `min_epoch`; None when there is none."""
        for k, _, state in _intact_stages(self.ckpt_dir):
            if state is not None and state.get("epoch", -1) >= min_epoch:
                return k, state
        return None

    def read_config(self) -> dict | None:
        p = self.path / CONFIG_FILE
        if not own_entry(p):
            return None
        resolved = read_json(p, CONFIG_FILE)
        check_format(resolved, p)  # never rewrite a run of a newer format with this older code
        return resolved



_MAX_JSON = 64 << 20  # no config.json or summary.json training writes comes near this


def load_json(p, limit: int = _MAX_JSON):
    """JSON from a regular file of at most `limit` bytes; anything else (a device such as /dev/zero, a huge or
    deeply nested file, bytes that are not UTF-8) is a ValueError or an OSError saying what it is."""
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once (and is refused)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(p: Path, what: str) -> dict:
    try:
        d = load_json(p)
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read {p}: {type(e).__name__}: {str(e)[:200]}; the {what} of this run directory is "
                       "damaged (use another --out, or restore the file)") from None
    if not isinstance(d, dict):
        raise RunError(f"{p} holds a {type(d).__name__}, not the JSON object training writes; the run directory "
                       "is damaged")
    return d


def _intact_stages(ckpt_dir: Path, skip: Path | None = None):
    """(K, path, training state or None for weights only) of each stage checkpoint that loads, newest first."""
    for k in reversed(stage_numbers(ckpt_dir)):
        p = ckpt_dir / f"stage_{k}.pt"
        if p == skip or p.is_symlink():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - damaged too: try the one before
            continue
        yield k, p, (st["resume"] if isinstance(st, dict) and isinstance(st.get("resume"), dict) else None)


def _resume_hint(path: Path, hint_dir: Path) -> str:
    """Name the newest intact stage checkpoint to resume from instead of the unreadable `path`."""
    run_dir = hint_dir.parent if hint_dir.name == CHECKPOINT_DIR else hint_dir
    for k, p, state in _intact_stages(hint_dir, skip=path):
        if state is not None:
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
    if not regular_file(path):
        raise RunError(f"checkpoint {path} does not exist")
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
        missing += [k for k in ("num_stages", "device") if k not in self.resolved]
        missing += [f"config.{k}" for k in _REQUIRED_OPTIONS if k not in (self.resolved.get("config") or {})]
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
        """history.csv (empty with its columns when training has not finished an epoch); a file that is not the
        table training writes is a RunError naming it."""
        p = self.path / HISTORY_FILE
        if not regular_file(p):
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        try:
            df = pd.read_csv(p, encoding="utf-8", encoding_errors="strict")
        except (OSError, ValueError, pd.errors.ParserError) as e:  # EmptyDataError and UnicodeDecodeError too
            raise RunError(f"cannot read {p}: {type(e).__name__}: {str(e).strip()[:160]}; it is not the table "
                           "training writes (the run directory is damaged)") from None
        bad = [c for c in ("epoch", "stage", "test_acc") if c not in df or not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise RunError(f"{p} has no numeric column {bad[0]!r} (columns: {', '.join(map(str, df.columns))}); it "
                           "is not the table training writes (the run directory is damaged)")
        return df

    @property
    def summary(self) -> dict | None:
        p = self.path / SUMMARY_FILE
        if not os.path.lexists(p):
            return None
        summary = read_json(p, SUMMARY_FILE)
        check_format(summary, p)
        return summary

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def info(self):
        """The data set's description; keys another version added are left out, a missing one is a RunError."""
        import dataclasses
        names = {f.name for f in dataclasses.fields(DatasetInfo)}
        d = {k: v for k, v in self.resolved["dataset"].items() if k in names}
        try:
            return DatasetInfo(**d)
        except TypeError as e:
            raise RunError(f"{self.path / CONFIG_FILE}: its dataset description is incomplete ({e}); the run "
                           "directory is damaged") from None

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
        p = self.path / SOFT_LABELS_FILE
        if not regular_file(p):
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
            if m.dtype.kind not in "fiu" or m.shape != (C, C) or not np.all(np.isfinite(m)):
                what = "with values that are not finite" if m.shape == (C, C) and m.dtype.kind in "fiu" else ""
                raise RunError(f"{p}: {k} is a {m.dtype} array of shape {m.shape}{' ' + what if what else ''}; "
                               f"expected a finite numeric {C} x {C} matrix")
        return mats

    def soft_labels(self, stage) -> np.ndarray:
        key = stage_key(stage)
        mats = self.all_soft_labels()
        if key not in mats:
            raise KeyError(f"{self.path} has no soft labels {key!r}; available: {', '.join(mats) or 'none'}")
        return mats[key]

    def stage_checkpoints(self) -> list[int]:
        return stage_numbers(self.path / CHECKPOINT_DIR)

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
