"""RunDir: the writer of one run directory (ownership, the lock, atomic files, repair)."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd


from ..errors import RunError
from .layout import CHECKPOINT_DIR, CONFIG_FILE, HISTORY_COLUMNS, HISTORY_FILE, LAST_CHECKPOINT, LOCK_FILE, MARKER_FILE, REPLACED_PREFIX, RUN_FILES, SOFT_LABELS_FILE, SUMMARY_FILE, _OWN_TMP, _file_stage, own_entry, stage_numbers
from .files import _intact_stages, atomic_torch_save, atomic_write_bytes, atomic_write_text, check_format, load_checkpoint, load_json, read_json


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



