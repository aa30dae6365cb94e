"""The recorder owns the run directory while a run trains (timm's CheckpointSaver is the model).

It refuses a folder that holds another run before anything is loaded, takes the folder's lock, makes the files
agree with the checkpoint being resumed (a kill can leave them ahead of it), writes each epoch's files in an
order that a kill anywhere leaves resumable (history, soft labels, stage checkpoint, then last.pt), writes only
on rank 0, and turns a failed write (full disk, permissions) into a TrainingError on every rank.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import RunError, TrainingError
from ..runs import (CONFIG_FILE, LAST_CHECKPOINT, RUN_FORMAT, SOFT_LABELS_FILE, SUMMARY_FILE, RunDir,
                    describe_difference, fault_point, resume_command, source_commit, versions)
from .auto import cpu_flags, dtype_name


class Recorder:
    def __init__(self, out: Path, strategy):
        self.out = Path(out)
        self.strategy = strategy
        self.run_dir = RunDir(self.out, write=False)
        self._created = False

    @property
    def last_path(self) -> Path:
        return self.run_dir.ckpt_dir / LAST_CHECKPOINT

    # ------------------------------------------------------------- opening
    def open(self, fingerprint: dict, from_stage: int | None):
        """Refuse another run's folder, lock it (rank 0); returns (existing config or None, resume kind) on
        every rank. resume: None (fresh), "last" (checkpoints/last.pt) or "stage" (stage_K.pt, --from-stage)."""
        def on_main():
            existing = self.run_dir.read_config() if (self.out / CONFIG_FILE).exists() else None
            if existing is not None:
                diff = describe_difference(existing.get("fingerprint", {}), fingerprint)
                if diff:
                    raise RunError(f"run directory {self.out} already holds a different run ({diff}); nothing was "
                                   f"changed. Resume it with `--resume {self.out}`, or choose another --out")
            elif from_stage is not None:
                raise RunError(f"--from-stage {from_stage}: {self.out} is not a run directory (no config.json)")
            new = not self.out.exists()
            run_dir = RunDir(self.out, write=True)
            run_dir.lock()
            self.run_dir, self._created = run_dir, new
            resume = ("stage" if from_stage is not None else
                      "last" if existing is not None and self.last_path.exists() else None)
            return existing, resume
        return self.strategy.run(on_main, main_only=True)

    def load_resume(self, resume: str | None, from_stage: int | None, fingerprint: dict) -> dict | None:
        """The checkpoint dict to resume from (every rank reads it from the shared run directory); one written
        for another configuration is refused."""
        if resume is None:
            return None
        path = self.last_path if resume == "last" else self.run_dir.ckpt_dir / f"stage_{from_stage}.pt"
        self.strategy.check_visible(path)
        ckpt = self.run_dir.load_last() if resume == "last" else self.run_dir.load_stage_resume(from_stage)
        diff = describe_difference(ckpt.get("fingerprint") or {}, fingerprint, "in the checkpoint", "in this run")
        if diff:
            what = f" ({diff})" if ckpt.get("fingerprint") else ""
            raise RunError(f"{self.last_path} belongs to another configuration{what}; nothing was changed: start "
                           "a new run with another --out")
        return ckpt

    def abort(self) -> None:
        """Setup failed: release the lock, and remove the folder if this call created it."""
        self.run_dir.unlock()
        if self._created:
            shutil.rmtree(self.out, ignore_errors=True)

    def close(self) -> None:
        self.run_dir.unlock()

    # ------------------------------------------------------------- writing
    def start(self, resolved: dict, state, *, repair: bool, stage_checkpoint: dict | None, done: bool) -> None:
        """Write config.json; in a folder that held the run, make the other files agree with the state being
        resumed (a kill can leave them ahead of the checkpoint). Rank 0 only."""
        if not self.strategy.is_main:
            return
        try:
            self.run_dir.write_config(resolved)
            if repair:
                self.run_dir.write_history(state.history)
                if state.soft_labels:
                    self.run_dir.write_soft_labels(state.soft_labels)
                else:
                    self.run_dir.remove(SOFT_LABELS_FILE)
                if not done:
                    self.run_dir.remove(SUMMARY_FILE)
                if stage_checkpoint is not None:  # last.pt (damaged, or later) now restarts from the stage end
                    self.run_dir.save_last(stage_checkpoint)
        except OSError as e:
            raise TrainingError(f"could not write {e.filename or self.out}: {e.strerror or e}; nothing was trained "
                                "(free disk space or fix permissions, or choose another --out)") from None

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
