"""Files of a run directory: fault injection (tests), atomic writes, versions and format, JSON and checkpoint
reading that never runs code."""
from __future__ import annotations

import io
import json
import os
import platform
import signal
import subprocess
import sys
import stat
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch


from .. import __version__
from ..distributed import env_world_size
from ..errors import RunError
from .layout import CHECKPOINT_DIR, RUN_FORMAT, regular_file, stage_numbers


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
    pkg = Path(__file__).resolve().parents[1]  # colam_core/ (this file is colam_core/runs/files.py)

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


