"""Submitting a planned sweep with submitit: Slurm job arrays, or submitit's local executor.

Slurm: the pending entries that depend on nobody go in one job array, one task per entry; the entries that
train on a parent's soft labels go in a second array with ``--dependency=afterany:<the parents' tasks>``, so
they start once their parents have ended (each task checks again that its parent wrote the stage it needs, and
fails with that reason if not). Every task is an ``EntryTask`` (submitit ``Checkpointable``):

* ``scontrol requeue``, a preemption or ``scancel`` send SIGTERM: the run stops between batches and writes
  ``checkpoints/last.pt`` (``Trainer``), and a requeued task resumes from it, ending bitwise equal on CPU;
* ahead of the ``--time`` limit Slurm sends SIGUSR2 (``--signal=USR2@90``, set by submitit): the run checkpoints
  the same way, then submitit's own handler requeues the task (its ``checkpoint()`` resubmits the same entry),
  at most ``max_requeues`` times.

Local (``executor="local"``): submitit's local executor has neither arrays nor dependencies, so it starts
``max_parallel`` (default 1) workers that drain the sweep (``Campaign.work``); a dependent entry waits there for
its parent. ``ROOT/.submitit/`` holds submitit's logs; ``ROOT/submissions.json`` the jobs of each submission.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

import submitit

from ..errors import ConfigError, RunError
from ..runs import atomic_write_text
from .campaign import Campaign
from .claims import holder

EXECUTORS = ("slurm", "local")
SUBMISSIONS_FILE = "submissions.json"
LOG_DIR = ".submitit"


def _stopped(name: str, signum: str | None) -> None:
    """A task whose run stopped on a signal: SIGUSR2 (the time limit is near) goes on to submitit's handler,
    which requeues the task; SIGTERM (a requeue, a preemption, a cancel) ends it: Slurm requeues or not."""
    sig = None if signum is None else int(signum)
    usr = submitit.JobEnvironment._usr_sig()
    if sig == usr and signal.getsignal(usr) not in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.raise_signal(usr)  # submitit: checkpoint() -> requeue -> exit
    raise RuntimeError(f"sweep entry {name!r} stopped by signal {sig}; its run resumes from last.pt when the task "
                       "is requeued or the sweep is run again")


class EntryTask(submitit.helpers.Checkpointable):
    """One array task: train (or resume) entry ``name`` of the sweep in ``root``; ``name=None``: a worker that
    drains the sweep. ``wait``: seconds a dependent entry waits for its parent's stage before it fails."""

    def __init__(self, root: str | Path, wait: float = 0.0):
        self.root, self.wait = str(Path(root).resolve()), float(wait)

    def __call__(self, name: str | None = None) -> dict:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        camp = Campaign(self.root)
        if name is None:
            counts = camp.work(progress=False, report=lambda n, o, d: print(f"{n}: {o}" + (f" ({d})" if d else ""),
                                                                           flush=True))
            if counts["stopped"]:
                _stopped("(worker)", None if camp.stop_signal is None else str(camp.stop_signal))
            return counts
        outcome, detail = camp.run_entry(name, progress=False, wait=self.wait or None)
        print(f"{name}: {outcome}" + (f" ({detail})" if detail else ""), flush=True)
        if outcome == "stopped":
            _stopped(name, detail)
        if outcome in ("failed", "blocked", "waiting"):
            raise RuntimeError(f"sweep entry {name!r} {outcome}: {detail}")
        return {"name": name, "outcome": outcome}


def queued_jobs(job_ids: Sequence[str]) -> set[str]:
    """The job ids (``JOB`` or ``JOB_TASK``) among ``job_ids`` that Slurm still has queued or running."""
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if not arrays:
        return set()
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    live = set(out.stdout.split())
    return {j for j in job_ids if j in live}


def _previous(root: Path) -> dict:
    try:
        return json.loads((Path(root) / SUBMISSIONS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def submitted_jobs(root: str | Path) -> dict[str, str]:
    """``{entry: Slurm job id}`` of the latest submission of each entry (``ROOT/submissions.json``)."""
    return dict(_previous(Path(root)).get("jobs") or {})


def submit(root: str | Path, executor: str = "slurm", partition: str | None = None, gpus_per_task: int | None = None,
           cpus_per_task: int | None = None, max_parallel: int | None = None, time_min: int = 1440,
           setup: Sequence[str] = (), slurm_options: Sequence[str] = (), max_requeues: int = 10,
           dependent_wait: float = 600.0) -> dict:
    """Submit the entries of ``root`` that are neither done nor running (nor queued by an earlier submission);
    returns what was submitted (``{"executor", "arrays": [{"job", "entries", "after"}], "skipped"}``), also
    appended to ``ROOT/submissions.json``."""
    if executor not in EXECUTORS:
        raise ConfigError("executor", executor, ", ".join(EXECUTORS))
    for opt, v, lo in (("gpus_per_task", gpus_per_task, 0), ("cpus_per_task", cpus_per_task, 1),
                       ("max_parallel", max_parallel, 1), ("time", time_min, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ConfigError(opt, v, f"an integer >= {lo}")
    extra = {}
    for o in slurm_options:
        key, sep, value = o.partition("=")
        if not sep or not key:
            raise ConfigError("slurm_option", o, "KEY=VALUE (an sbatch option without its dashes, e.g. account=abc)")
        extra[key] = value
    root = Path(root).resolve()
    camp = Campaign(root)
    prev = _previous(root)
    queued = queued_jobs(list(prev.get("jobs", {}).values())) if executor == "slurm" else set()
    states = {n: camp.state(n)[0] for n in camp.names}
    skipped = {n: prev["jobs"][n] for n in camp.names if prev.get("jobs", {}).get(n) in queued}
    todo = [n for n in camp.names if states[n] in ("pending", "failed") and n not in skipped]
    first = [n for n in todo if n not in camp.depends]
    second = [n for n in todo if n in camp.depends]
    lines = [*setup] + ([f"export OMP_NUM_THREADS={cpus_per_task}"] if cpus_per_task else [])
    record = {"time": time.time(), "executor": executor, "arrays": [], "skipped": skipped}
    jobs: dict[str, str] = dict(prev.get("jobs", {}))
    if not todo:
        return record
    folder = root / LOG_DIR / "%j"
    if executor == "local":
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeues)
        ex.update_parameters(timeout_min=time_min, gpus_per_node=gpus_per_task or 0, setup=lines)
        workers = [ex.submit(EntryTask(root), None) for _ in range(min(max_parallel or 1, len(todo)))]
        record["arrays"].append({"job": [w.job_id for w in workers], "entries": todo, "after": []})
    else:
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
        params = dict(time=time_min, job_name=f"colam-{root.name}", partition=partition, cpus_per_task=cpus_per_task,
                      gpus_per_task=gpus_per_task, setup=lines, additional_parameters=extra)
        if max_parallel:
            params["array_parallelism"] = max_parallel
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        if first:
            arr = ex.map_array(EntryTask(root), first)
            jobs.update({n: j.job_id for n, j in zip(first, arr)})
            record["arrays"].append({"job": arr[0].job_id.split("_")[0], "entries": first, "after": []})
        if second:
            after = sorted({_parent_job(camp, root, n, jobs) for n in second} - {None})
            ex.update_parameters(dependency="afterany:" + ":".join(after) if after else None)
            arr = ex.map_array(EntryTask(root, wait=dependent_wait), second)
            jobs.update({n: j.job_id for n, j in zip(second, arr)})
            record["arrays"].append({"job": arr[0].job_id.split("_")[0], "entries": second, "after": after})
    history = prev.get("submissions", [])
    atomic_write_text(root / SUBMISSIONS_FILE, json.dumps({"jobs": jobs, "submissions": [*history, record]},
                                                          indent=2))
    return record


def _parent_job(camp: Campaign, root: Path, name: str, jobs: dict[str, str]) -> str | None:
    """The Slurm job a dependent entry must wait for: its parent's task, unless the parent is done."""
    parent = camp.depends[name]["parent"]
    st = camp.state(parent)[0]
    if st == "done":
        return None
    held = holder(root, parent) or {}
    return held.get("job") or jobs.get(parent)


def describe(record: dict, root: str | Path) -> str:
    """What ``colam sweep submit`` prints."""
    if not record["arrays"]:
        return f"nothing to submit: every entry of {root} is done, running or queued"
    lines = []
    for a in record["arrays"]:
        what = "workers" if record["executor"] == "local" else "job array"
        after = f", after {' '.join(a['after'])}" if a["after"] else ""
        jobs = " ".join(a["job"]) if isinstance(a["job"], list) else a["job"]
        lines.append(f"submitted {len(a['entries'])} entries as {record['executor']} {what} {jobs}{after}")
    if record["skipped"]:
        lines.append(f"{len(record['skipped'])} entries are still queued from an earlier submission")
    lines.append(f"follow with: colam sweep status {shlex.quote(str(root))}")
    return "\n".join(lines)


def wait_until_settled(root: str | Path, timeout: float | None = None, poll: float = 2.0) -> dict[str, int]:
    """Block until no entry of ``root`` is running or queued by its last submission; returns the state counts.
    Raises ``RunError`` after ``timeout`` seconds."""
    root = Path(root).resolve()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        camp = Campaign(root)
        states = [camp.state(n)[0] for n in camp.names]
        jobs = _previous(root).get("jobs", {})
        busy = "running" in states or bool(queued_jobs([jobs[n] for n in camp.names if n in jobs]))
        if not busy and not _local_alive(root):
            return {s: states.count(s) for s in ("done", "running", "pending", "failed")}
        if deadline is not None and time.monotonic() > deadline:
            raise RunError(f"the jobs of {root} did not settle within {timeout:.0f} s")
        time.sleep(poll)


def _local_alive(root: Path) -> bool:
    """Whether a local worker of the last submission is still alive (local job ids are process ids)."""
    subs = _previous(root).get("submissions") or []
    if not subs or subs[-1].get("executor") != "local":
        return False
    for a in subs[-1]["arrays"]:
        for pid in a["job"]:
            try:
                os.kill(int(pid), 0)
                with open(f"/proc/{int(pid)}/stat") as f:
                    if f.read().split(")")[-1].split()[0] != "Z":
                        return True
            except (OSError, ValueError):
                continue
    return False


__all__ = ["submit", "describe", "wait_until_settled", "queued_jobs", "submitted_jobs", "EntryTask", "EXECUTORS"]
