"""The run directory's vocabulary: file names, stage keys, the fingerprint and its differences, the dataset
arguments of a configuration, soft-label specs."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Mapping

import numpy as np


from ..errors import ConfigError, RunError


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


