"""The trainer: Algorithm 1 of the paper, `m` stages of `t` epochs, with events, clean stops and resume.

    trainer = Trainer(Config(method="colam", epochs=12, stages=4), out="runs/demo")
    trainer.subscribe(print)          # every event
    trainer.run_stage()               # one stage
    trainer.run()                     # the rest

Each epoch is `train_one_epoch` (step.py) then `evaluate` (evaluation.py); at a stage's end the method learns
its new labels from the stage's model in eval mode on un-augmented training images ("the current checkpoint").
The learner holds the model, its optimiser and step (and Label Refinery's generations), the recorder the run
directory, the strategy every difference of data-parallel training, the state the checkpoint form (and why a
resumed run is bitwise the same), StopControl the stop flag and the signals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import Config
from ..data import load_dataset
from ..methods import Method, StepContext, build_method
from ..metrics import erasures
from ..runs import dataset_kwargs
from ..tracking import make_trackers
from .auto import resolve_system, set_deterministic
from .evaluation import evaluate
from .events import DoneEvent, EpochEvent, EventSource, PhaseEvent, StageEvent, StoppedEvent, update_warning
from .learner import Learner
from .recorder import Recorder, describe_run
from .state import TrainState
from .step import lr_factor, train_one_epoch
from .stop import StopControl
from .strategy import make_strategy


class Trainer(EventSource):
    """Train one run; see the module docstring and docs/ARCHITECTURE.md."""

    def __init__(self, cfg: Config | dict, out: str | Path | None = None, progress: bool = False,
                 listeners: tuple[Callable, ...] = (), from_stage: int | None = None, force: bool = False):
        cfg = (Config.from_dict(cfg) if isinstance(cfg, dict) else cfg).validate()
        self.cfg = cfg
        self.out = Path(out) if out is not None else Path("runs") / (
            cfg.name or f"{cfg.dataset}_{cfg.model}_{cfg.method}_s{cfg.seed}")
        super().__init__(listeners)
        self.strategy = make_strategy(cfg.device)
        self.device = self.strategy.device
        self.recorder = Recorder(self.out, self.strategy)
        self._stop = StopControl(self.strategy.enabled)
        self._trackers = []
        self._undo_deterministic = set_deterministic(cfg.deterministic)  # process-wide: undone by close()
        try:
            existing = self.recorder.open(cfg.fingerprint(), from_stage)
            self.strategy.run(lambda: self._setup(existing, from_stage, force))
            if self.strategy.is_main:  # --log: TensorBoard / MLflow mirrors of the run directory (tracking.py)
                self._trackers = [self.subscribe(t) for t in make_trackers(cfg, self.out, self.resolved, self.epoch)]
        except BaseException:
            self._undo_deterministic()
            self.recorder.abort()
            self.strategy.close(clean=False)
            raise
        if progress and self.strategy.is_main:
            from ..progress import TqdmListener
            self.subscribe(TqdmListener())

    def _setup(self, existing: dict | None, from_stage: int | None, force: bool) -> None:
        cfg, strategy = self.cfg, self.strategy
        self.data = load_dataset(cfg.dataset, **dataset_kwargs(cfg.to_dict(), device=self.device))
        self.info = self.data.info
        strategy.check_batches(self.info.num_train, cfg.batch_size)
        self._eval_data = strategy.eval_view(self.data)  # eval passes cover each rank's share of the samples
        self.method = build_method(cfg, self.info.num_classes, self.data.train_labels, self.device)
        self.num_stages, self.stage_epochs, self.total_epochs = cfg.num_stages, cfg.stage_epochs, cfg.total_epochs
        # the auto options (bf16 where the hardware has it, compile past the break-even, the layout) and why;
        # a resumed run keeps what it started with (auto.py)
        self.choices = resolve_system(cfg, self.device, self.info.num_train, existing)
        self.amp, self.channels_last, self.compile = self.choices.amp, self.choices.channels_last, self.choices.compile
        self._sampler = self.method.batch_sampler()
        self.state = TrainState(self.device)
        self.summary: dict | None = None
        self.learner = Learner(cfg, self.info, strategy, self.method, self.choices)
        ckpt = self.recorder.load_resume(from_stage, cfg.fingerprint(), self.total_epochs, force)
        if ckpt is not None:
            self._load(ckpt)
        self.resolved = describe_run(self)
        self.recorder.start(self.resolved, self.state, done=self.done)

    # ---------------------------------------------------------------- state
    def _checkpoint(self) -> dict:
        """The state to save; under DDP the per-rank sums are reduced first (a collective: every rank calls it)."""
        return self.strategy.for_save(self.state.checkpoint(self.model, self.optimizer, self.learner.step.scaler,
                                                            self.method, self.cfg.fingerprint()))

    def _load(self, ckpt: dict) -> None:
        gen = self._stage_of(ckpt["epoch"] + 1) if self.method.restart_after_stage else 1
        if gen != 1:  # Label Refinery resumed in generation 2: its teacher (weights from the checkpoint), its model
            self.learner.resume_generation(gen)
        self.state.restore(ckpt, self.model, self.optimizer, self.learner.step.scaler, self.method,
                           where=f"checkpoint {self.recorder.resumed_from}", model_name=self.cfg.model)
        self.strategy.after_load(self.state.running, self.method)

    # ---------------------------------------------------------------- public
    epoch = property(lambda self: self.state.epoch, doc="completed epochs")
    batch = property(lambda self: self.state.batch, doc="completed batches of the current epoch")
    history = property(lambda self: self.state.history, doc="the history rows so far")
    soft_label_history = property(lambda self: self.state.soft_labels, doc="{'stage_K': C x C} learned so far")
    update_seconds = property(lambda self: self.state.update_seconds, doc="seconds of each soft-label pass")
    run_dir = property(lambda self: self.recorder.run_dir, doc="the runs.RunDir being written")
    done = property(lambda self: self.state.epoch >= self.total_epochs, doc="all stages ran")
    soft_labels = property(lambda self: self.method.soft_labels, doc="the labels the method trains on now")
    model = property(lambda self: self.learner.model, doc="the model being trained (this generation's)")
    optimizer = property(lambda self: self.learner.optimizer, doc="its optimiser")
    stop_signal = property(lambda self: self._stop.signal, doc="the signal that stopped the last run (or None)")

    @property
    def current_stage(self) -> int:
        """The stage that runs next (or the last one when done)."""
        return self._stage_of(min(self.epoch + 1, self.total_epochs))

    def request_stop(self) -> None:
        """Ask training to stop at the next batch boundary (thread-safe)."""
        self._stop.request()

    def close(self, clean: bool = True) -> None:
        """Release the run directory's lock (and, under DDP, the process group this trainer created); end the
        tracking runs of an unfinished run (KILLED: resumable, or FAILED after an error); a closed trainer refuses
        to train."""
        for tracker in self._trackers:
            tracker.close("KILLED" if clean else "FAILED")
        self.recorder.close()
        self.learner.release()
        self.strategy.close(clean=clean)
        self._undo_deterministic()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(clean=exc_type is None)

    def run_stage(self) -> StageEvent | None:
        """Run the epochs of the next stage. Returns its StageEvent, or None if stopped early / already done."""
        self.recorder.check_open()
        with self._stop.guard():
            if self.done:
                self._finish()
                return None
            return self._run_stage()

    def run(self) -> dict | None:
        """Run all remaining stages. Returns the summary, or None if stopped early (`stop_signal` says why)."""
        self.recorder.check_open()
        with self._stop.guard():
            while not self.done:
                if self._run_stage() is None and not self.done:
                    return None
            return self._finish()

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float]:
        """(loss, accuracy) on a split, without augmentation; the loss uses the method's output temperature."""
        ev = self._evaluation(split)
        return ev.loss, ev.acc

    def _evaluation(self, split: str, with_probs: bool = False):
        return evaluate(self.model, self.infer, self._eval_data, split, batch_size=self.cfg.eval_batch_size,
                        T=self.method.output_temperature, strategy=self.strategy, with_probs=with_probs)

    def infer(self, x):
        """Logits (float32) of the current model for a batch, in the run's layout and precision."""
        return self.learner.infer(x)

    # ---------------------------------------------------------------- Algorithm 1
    def _stage_of(self, epoch: int) -> int:
        return (epoch - 1) // self.stage_epochs + 1

    def _run_stage(self) -> StageEvent | None:
        stage, event = self.current_stage, None
        while not self.done and self._stage_of(self.epoch + 1) == stage:
            if self.strategy.stop_requested(self._stop.flag.is_set()):  # between epochs (e.g. during a stage-end pass)
                if not self.cfg.checkpoint_every_epoch:
                    self.recorder.save_last(self._checkpoint())
                self._emit(StoppedEvent(stage, self.epoch + 1, 0))
                return None
            event = self._run_epoch(stage)
            if event is False:
                return None
        if self.done:
            self._finish()
        return event if isinstance(event, StageEvent) else None

    def _run_epoch(self, stage: int):
        cfg, state, epoch = self.cfg, self.state, self.epoch + 1
        last_of_stage = epoch % self.stage_epochs == 0
        ctx = StepContext(stage=stage, epoch=epoch, batch=state.batch, seed=cfg.seed, num_stages=self.num_stages,
                          last_epoch_of_stage=last_of_stage, reduce=self.strategy.reduce)
        self.method.on_epoch_start(ctx)
        self.model.train()
        if not train_one_epoch(self.learner.step, self.data, state, ctx, sampler=self._sampler,
                               emit=self._emit if self._listeners else None, stop_flag=self._stop.flag,
                               kept=self.recorder.kept):
            self.recorder.save_last(self._checkpoint())
            self._emit(StoppedEvent(stage, epoch, state.batch))
            return False
        self.strategy.reduce_running(state.running)  # the epoch's loss / accuracy over every rank's samples
        self._phase(stage, epoch, "test", f"evaluating on the test set ({self.info.num_test} images)")
        test_loss, test_acc = self.evaluate("test")
        soft, upd_s = self._update_labels(ctx) if last_of_stage else (None, 0.0)
        row = state.end_epoch(stage, cfg.lr * lr_factor(cfg, (epoch - 1) % cfg.epochs), test_loss, test_acc, upd_s,
                              forwards_per_sample=self.method.forwards_per_sample(stage))
        stage_model = self.model.state_dict() if last_of_stage else None
        if last_of_stage and self.method.restart_after_stage and stage < self.num_stages:
            self.learner.next_generation(stage + 1)
        save_last = cfg.checkpoint_every_epoch or self.done
        ckpt = self._checkpoint() if save_last or last_of_stage else None
        if ckpt is not None:
            self._phase(stage, epoch, "checkpoint", "writing checkpoint")
        self.recorder.epoch_end(state, ckpt, stage if last_of_stage else None, stage_model,
                                new_soft=soft is not None, save_last=save_last)
        self._emit(EpochEvent(stage, epoch, row))
        if not last_of_stage:
            return None
        event = StageEvent(stage, soft, {"test_acc": test_acc, "test_loss": test_loss, "train_acc": row["train_acc"],
                                         "update_seconds": upd_s if soft is not None else None,
                                         "erased": erasures(soft) if soft is not None else []})
        self._emit(event)
        return event

    def _update_labels(self, ctx: StepContext) -> tuple[np.ndarray | None, float]:
        """Alg. 1 lines 9-14: the method learns its labels from the stage's model (eval mode, un-augmented)."""
        if type(self.method).stage_end is not Method.stage_end:
            k = self.cfg.peer_samples
            n = self.info.num_train if k == "all" else min(self.info.num_train, int(k) * self.info.num_classes)
            self._phase(ctx.stage, ctx.epoch, "soft_labels", f"learning soft labels from {n} training images")
        soft, upd_s = self.learner.stage_end_pass(self._eval_data, ctx)
        if soft is not None:
            self.state.add_soft_labels(ctx.stage, soft, upd_s, kept=self.recorder.kept)
            warning = update_warning(ctx.stage, soft, getattr(self.method, "no_peer_classes", []),
                                     self.info.class_names, self.cfg.warn_own_mass)
            if warning is not None:
                self._emit(warning)
        return soft, upd_s

    def _phase(self, stage: int, epoch: int, phase: str, message: str) -> None:
        if self._listeners:
            self._emit(PhaseEvent(stage, epoch, phase, message))

    def _finish(self) -> dict:
        if self.summary is None:
            self._phase(self.current_stage, self.epoch, "final", "final test pass (accuracy and calibration)")
            ev = self._evaluation("test", with_probs=True)
            self.summary = self.state.summary(self.cfg, self.num_stages, self.total_epochs, self.device,
                                              **ev.calibration(), class_names=self.info.class_names)
            self.recorder.summary(self.summary)
            self._emit(DoneEvent(self.summary))
        return self.summary


__all__ = ["Trainer"]
