"""The recorder owns the run directory while a run trains (timm's CheckpointSaver is the model).

It claims the folder (a new one, an empty one, or one that holds a run: never a folder of someone else's files),
takes its lock before it reads anything there, refuses another run's folder, chooses what to resume from (last.pt;
without it the newest complete stage checkpoint; never a retraining of a finished run), makes the files agree
with that checkpoint (a kill can leave them ahead of it), writes each epoch's files in an order that a kill
anywhere leaves resumable (history, soft labels, stage checkpoint, then last.pt), writes only on rank 0 and only
while it holds the lock, and turns a failed write (full disk, permissions) into a TrainingError on every rank.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError, RunError, TrainingError
from ..runs import (CONFIG_FILE, HISTORY_FILE, LAST_CHECKPOINT, RUN_FILES, RUN_FORMAT, SOFT_LABELS_FILE,
                    SUMMARY_FILE, RunDir, check_fault_spec, describe_difference, fault_point, resume_command,
                    source_commit, stage_numbers, versions)
from .auto import cpu_flags, dtype_name


class Recorder:
    def __init__(self, out: Path, strategy):
        self.out = Path(out)
        self.closed = False
        self.strategy = strategy
        self.run_dir = RunDir(self.out)
        self._created = False  # this process created the folder
        self._fresh = False    # under the lock, the folder held no run: what setup wrote is removed if it fails
        self._existing: dict | None = None
        self._rewind: tuple | None = None  # (checkpoint or None: the start, K of --from-stage or None)
        #: the checkpoint the run resumed from (None: a fresh start)
        self.resumed_from: Path | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir.ckpt_dir / LAST_CHECKPOINT

    def kept(self) -> str:
        """What a failure leaves to resume from, for its message."""
        if self.last_path.exists():
            return f"the last good checkpoint {self.last_path} is kept"
        return "no checkpoint had been written yet (a resume starts again at epoch 1)"

    def note(self, message: str) -> None:
        """A line on stderr (rank 0): what resume chose, or what it kept."""
        if self.strategy.is_main:
            print(f"note: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------- opening
    def open(self, fingerprint: dict, from_stage: int | None) -> dict | None:
        """Claim and lock the folder (rank 0), then, under the lock, refuse another run's folder. Returns the
        existing config.json (None: no run there yet) on every rank."""
        check_fault_spec()  # COLAM_FAULT (the tests' fault injection) names a real point, before anything is written
        if from_stage is not None and (isinstance(from_stage, bool) or not isinstance(from_stage, int)
                                       or from_stage < 0):
            raise ConfigError("from_stage", from_stage, "a stage number K >= 0 (0: the start)")

        def on_main():
            if from_stage is not None and not (self.out / CONFIG_FILE).is_file():
                raise RunError(f"--from-stage {from_stage}: {self.out} is not a run directory (no config.json)")
            run_dir = self.run_dir
            self._created = run_dir.claim()
            run_dir.lock()  # before anything in the folder is read: what is read below cannot change under us
            run_dir.check_owned()
            existing = run_dir.read_config()
            self._fresh = existing is None
            if existing is not None:
                diff = describe_difference(existing.get("fingerprint", {}), fingerprint)
                if diff:
                    raise RunError(f"run directory {self.out} already holds a different run ({diff}); nothing was "
                                   f"changed. Resume it with `--resume {self.out}`, or choose another --out")
            elif from_stage is not None:
                raise RunError(f"--from-stage {from_stage}: {self.out} is not a run directory (no config.json)")
            try:
                run_dir.adopt()
            except OSError as e:
                raise TrainingError(f"could not write {e.filename or self.out}: {e.strerror or e}; nothing was "
                                    "trained (free disk space or fix permissions, or choose another --out)") from None
            return existing
        self._existing = self.strategy.run(on_main, main_only=True)
        return self._existing

    def load_resume(self, from_stage: int | None, fingerprint: dict, total_epochs: int,
                    force: bool = False) -> dict | None:
        """The checkpoint dict to resume from (every rank reads it from the shared run directory), or None to start
        at epoch 1: last.pt; without it the newest complete stage checkpoint (said on stderr); --from-stage K: the
        end of stage K (0: the start), which must not replace a finished run's results unless `force`, and then
        keeps a copy of them. A checkpoint written for another configuration is refused."""
        if self._existing is None:
            return None
        rd = self.run_dir
        self.strategy.check_visible(self.out / CONFIG_FILE)  # every rank decides from the same shared folder
        finished = rd.has(SUMMARY_FILE)
        if from_stage is not None:
            ckpt = None if from_stage == 0 else rd.load_stage_resume(from_stage)
            self._check_fingerprint(rd.stage_path(from_stage), ckpt, fingerprint)
            self._guard_rewind(from_stage, ckpt, finished, force)
            return self._resume(rd.stage_path(from_stage) if ckpt else None, ckpt, rewind=True, stage=from_stage)
        last = rd.load_last()  # a damaged last.pt is a RunError naming the stage to resume from
        if last is not None:
            self._check_fingerprint(self.last_path, last, fingerprint)
            if not finished or last.get("epoch", -1) >= total_epochs:
                return self._resume(self.last_path, last)
        found = rd.newest_stage_resume(min_epoch=total_epochs if finished else 0)
        why = (f"{self.last_path} is missing" if last is None else
               f"{self.last_path} is behind the finished run (epoch {last.get('epoch')} of {total_epochs})")
        if found is not None:
            k, ckpt = found
            self._check_fingerprint(rd.stage_path(k), ckpt, fingerprint)
            self.note(f"{why}; resuming from the end of stage {k} ({rd.stage_path(k)}, epoch {ckpt['epoch']})")
            return self._resume(rd.stage_path(k), ckpt, rewind=True)
        rows = self._history_rows()
        every_epoch = self._existing.get("config", {}).get("checkpoint_every_epoch", True)
        # no checkpoint was ever written: killed before the first one (history and soft labels run one epoch
        # ahead of last.pt), or checkpoint_every_epoch off before the first stage end; what they hold is redone
        if not finished and not stage_numbers(rd.ckpt_dir) and (rows <= 1 or not every_epoch):
            if rows:
                self.note(f"no checkpoint had been written yet; training {self.out} again from epoch 1")
            return None
        has = "it is finished (summary.json)" if finished else f"history.csv holds {rows} epochs"
        raise RunError(f"{why} and no stage checkpoint holds a training state to resume from; {has}; nothing was "
                       f"changed: restore the checkpoint, or train this run again from epoch 1 with "
                       f"`{resume_command(self.out, 0)}{' --force' if finished else ''}`"
                       f"{' (which keeps a copy of its results)' if finished else ''}")

    def _check_fingerprint(self, path: Path, ckpt: dict | None, fingerprint: dict) -> None:
        if ckpt is None:
            return
        diff = describe_difference(ckpt.get("fingerprint") or {}, fingerprint, "in the checkpoint", "in this run")
        if diff:
            what = f" ({diff})" if ckpt.get("fingerprint") else ""
            raise RunError(f"{path} belongs to another configuration{what}; nothing was changed: start a new run "
                           "with another --out")

    def _guard_rewind(self, k: int, ckpt: dict | None, finished: bool, force: bool) -> None:
        """--from-stage K replaces what lies after the end of stage K. A finished run's results, or a healthy
        last.pt that is further on, only with `force`; whatever it replaces is kept (hard links: free)."""
        at = ckpt["epoch"] if ckpt else 0
        try:
            last = self.run_dir.load_last()
        except RunError:  # damaged: what --from-stage is for
            last = None
        ahead = last is not None and last.get("epoch", 0) > at
        what = ("it is finished (summary.json)" if finished else
                f"its checkpoint {self.last_path} is intact at epoch {last['epoch']}" if ahead else "")
        if what and not force:
            where = "the start" if k == 0 else f"the end of stage {k}"
            raise RunError(f"--from-stage {k} would replace the results of {self.out} after epoch {at}: {what}; "
                           f"nothing was changed. Resume it with `{resume_command(self.out)}`, or add --force to "
                           f"restart from {where} (a copy of every file it replaces is kept in the run directory)")
        if self.strategy.is_main:
            later = [f"checkpoints/stage_{j}.pt" for j in stage_numbers(self.run_dir.ckpt_dir) if j > k]
            kept = self.run_dir.keep_copy([*RUN_FILES[1:], f"checkpoints/{LAST_CHECKPOINT}", *later])
            if kept is not None:
                self.note(f"--from-stage {k}{' --force: ' + what if what else ''}; a copy of the files it replaces "
                          f"is kept in {kept}")

    def _resume(self, path: Path | None, ckpt: dict | None, rewind: bool = False,
                stage: int | None = None) -> dict | None:
        if path is not None:
            self.strategy.check_visible(path)
        self.resumed_from = path
        self._rewind = (ckpt, stage) if rewind else None  # stage: --from-stage K, whose later checkpoints go
        return ckpt

    def _history_rows(self) -> int:
        if not self.run_dir.has(HISTORY_FILE):
            return 0
        try:
            with open(self.out / HISTORY_FILE, "rb") as f:
                return max(sum(1 for line in f if line.strip()) - 1, 0)
        except OSError:
            return 0

    def abort(self) -> None:
        """Setup failed: release the lock; in a folder that held no run, remove what this process wrote."""
        if self._fresh:
            self.run_dir.discard(self._created)
            return
        self.run_dir.unlock()
        if self._created:
            try:
                self.out.rmdir()  # created, but never locked: empty
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.run_dir.unlock()

    def check_open(self) -> None:
        """A closed trainer refuses to train: it no longer holds the lock."""
        if self.closed:
            raise RunError(f"this Trainer was closed and no longer holds the lock of {self.out}; nothing was "
                           f"trained: create a new Trainer(cfg, out={str(self.out)!r}) to go on")

    # ------------------------------------------------------------- writing
    def start(self, resolved: dict, state, *, done: bool) -> None:
        """Write config.json; in a folder that held the run, make the other files agree with the state being
        resumed (a kill can leave them ahead of the checkpoint; a rewind to a stage end rewrites last.pt).
        Rank 0 only."""
        if not self.strategy.is_main:
            return
        self._check_locked()
        try:
            self.run_dir.write_config(resolved)
            if self._existing is not None:
                self.run_dir.write_history(state.history)
                if state.soft_labels:
                    self.run_dir.write_soft_labels(state.soft_labels)
                else:
                    self.run_dir.remove(SOFT_LABELS_FILE)
                if not done:
                    self.run_dir.remove(SUMMARY_FILE)
                if self._rewind is not None:  # last.pt (missing, damaged, or later) now restarts from there
                    ckpt, k = self._rewind
                    if ckpt is not None:
                        self.run_dir.save_last(ckpt)
                    else:
                        self.run_dir.remove(f"checkpoints/{LAST_CHECKPOINT}")
                    for j in stage_numbers(self.run_dir.ckpt_dir) if k is not None else ():
                        if j > k:  # kept in replaced_<time>/; a resume must never pick up the old training's
                            self.run_dir.remove(f"checkpoints/stage_{j}.pt")
        except OSError as e:
            raise TrainingError(f"could not write {e.filename or self.out}: {e.strerror or e}; nothing was trained "
                                "(free disk space or fix permissions, or choose another --out)") from None

    def _check_locked(self) -> None:
        if not self.run_dir.locked:
            raise RunError(f"this process does not hold the lock of {self.out} (the trainer was closed); nothing "
                           "was written")

    def epoch_end(self, state, checkpoint: dict | None, stage: int | None = None, stage_model=None,
                  new_soft: bool = False, save_last: bool = True) -> None:
        """history, soft labels, the stage checkpoint, then last.pt: a kill between leaves files ahead of last.pt,
        which the next resume rewrites to agree."""
        def write():
            self.run_dir.write_history(state.history)
            if stage is not None:
                if new_soft:
                    self.run_dir.write_soft_labels(state.soft_labels)
                # the stage's weights, plus the full state to restart from this stage end (--from-stage)
                self.run_dir.save_stage(stage, {"model": stage_model, "stage": stage, "epoch": state.epoch,
                                                "resume": checkpoint})
                fault_point("stage_files")
            if save_last:
                self.run_dir.save_last(checkpoint)
        self._guarded(write)

    def save_last(self, checkpoint: dict) -> None:
        self._guarded(lambda: self.run_dir.save_last(checkpoint))

    def summary(self, summary: dict) -> None:
        self._guarded(lambda: self.run_dir.write_summary(summary))

    def _guarded(self, fn) -> None:
        """Rank 0 writes; a failed write stops training on every rank with a TrainingError, and the previous
        checkpoint stays intact (every file is replaced atomically)."""
        def guarded():
            self._check_locked()
            try:
                fn()
            except OSError as e:
                kept = (f"the previous checkpoint {self.last_path} is intact" if self.last_path.exists() else
                        "no checkpoint had been written yet")
                raise TrainingError(
                    f"could not write {e.filename or self.out}: {e.strerror or e}; training stopped and {kept}: "
                    f"free disk space (or fix permissions), then resume with `{resume_command(self.out)}`") from None
        self.strategy.run(guarded, main_only=True)


def describe_run(trainer) -> dict:
    """What config.json holds: the resolved configuration and everything a reader needs to rebuild the run
    (the schema: docs/ARCHITECTURE.md, "The run directory")."""
    cfg = trainer.cfg
    return {
        "format": RUN_FORMAT, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "versions": versions(),
        "git": source_commit(),
        "device": str(trainer.device), "amp": dtype_name(trainer.amp), "channels_last": trainer.channels_last,
        "compile": trainer.compile, "deterministic": cfg.deterministic, "choices": trainer.choices.reasons,
        "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "dataset": trainer.info.__dict__.copy(),
        "output_temperature": trainer.method.output_temperature, "num_stages": trainer.num_stages,
        "stage_epochs": trainer.stage_epochs, "total_epochs": trainer.total_epochs,
        "trainings": cfg.generations, "distributed": trainer.strategy.describe(),
    }


__all__ = ["Recorder", "describe_run"]
