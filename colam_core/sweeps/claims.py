"""Who runs which entry of a planned sweep: one claim per entry, and the failures of the last attempts.

A worker *claims* an entry before training it: an exclusive ``flock`` on ``ROOT/.claims/<name>.lock``, held while
the run trains and released by the kernel when the process ends, however it ends (a kill, a node lost, a
preemption). So "held by a live worker" needs no heartbeat and no clean-up, and N workers (array tasks, one per
GPU, several hosts on a shared file system that supports ``flock``, as the run directory's own lock already needs)
train every entry exactly once. The lock file holds who claimed it (host, pid, Slurm job) for ``status``.

A failed attempt leaves ``ROOT/.claims/<name>.failed`` (JSON: the one-line error, when, where); a successful one
removes it. Everything here reads or writes those two files only.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..runs import atomic_write_text

CLAIMS_DIR = ".claims"


def _job_id() -> str | None:
    """The Slurm job (array task as JOB_TASK) or submitit local job this process runs in, if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


def whoami() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": _job_id()}


class Claim:
    """The claim on one entry: ``acquire()`` (non-blocking: False when another live process holds it),
    ``release()``; also a context manager around a successful ``acquire``."""

    def __init__(self, root: str | Path, name: str):
        self.path = Path(root) / CLAIMS_DIR / f"{name}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**whoami(), "since": time.time()}).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def holder(root: str | Path, name: str) -> dict | None:
    """Who holds the claim on ``name`` now (``{"host", "pid", "job", "since"}``), or None when nobody does."""
    path = Path(root) / CLAIMS_DIR / f"{name}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except ValueError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _failure_path(root: str | Path, name: str) -> Path:
    return Path(root) / CLAIMS_DIR / f"{name}.failed"


def record_failure(root: str | Path, name: str, message: str) -> None:
    old = read_failure(root, name) or {}
    atomic_write_text(_failure_path(root, name), json.dumps(
        {"error": message, "time": time.time(), "attempts": int(old.get("attempts", 0)) + 1, **whoami()}))


def read_failure(root: str | Path, name: str) -> dict | None:
    """The last failed attempt of ``name`` (``{"error", "time", "attempts", "host", "pid", "job"}``) or None."""
    try:
        return json.loads(_failure_path(root, name).read_text())
    except (OSError, ValueError):
        return None


def clear_failure(root: str | Path, name: str) -> None:
    try:
        _failure_path(root, name).unlink()
    except FileNotFoundError:
        pass


__all__ = ["Claim", "holder", "record_failure", "read_failure", "clear_failure", "CLAIMS_DIR", "whoami"]
