"""Ctrl-C, SIGTERM and SIGUSR2 as a request for a clean stop between batches (a checkpoint, then a resumable exit).

SIGTERM is what a scheduler sends before it kills or preempts a job (Slurm also sends SIGUSR2 ahead of a time
limit when asked to, `--signal=USR2@90`); a run that gets one stops at the next batch boundary, writes `last.pt`
and returns, so the requeued job resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time


class StopOnSignal:
    """While training in the main thread, the first Ctrl-C, SIGTERM or SIGUSR2 asks for a clean stop; a second
    Ctrl-C interrupts.

    Under data-parallel training a second Ctrl-C interrupts only after a one-second grace, because torchrun
    forwards the terminal's Ctrl-C a second time right away (torchrun forwards SIGTERM to every worker too).
    """

    def __init__(self, stop: threading.Event, data_parallel: bool):
        self.stop, self.ddp = stop, data_parallel
        self.prev = {}
        self.first = None
        self.signum = None  # the first signal received (a sweep worker tells a requeue from a cancel by it)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

        def handler(signum, frame):
            now = time.monotonic()
            if (signum == signal.SIGINT and self.stop.is_set()
                    and (not self.ddp or (self.first is not None and now - self.first > 1.0))):
                signal.signal(signal.SIGINT, self.prev.get(signal.SIGINT) or signal.default_int_handler)
                raise KeyboardInterrupt
            if self.first is None:
                self.first, self.signum = now, signum
            self.stop.set()

        for sig in signals:
            try:
                self.prev[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
            except ValueError:
                self.prev.pop(sig, None)
        return self

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            if prev is not None:
                signal.signal(sig, prev)


class StopControl:
    """A trainer's stop flag: set from any thread (`request`, the Stop button) or by a signal while `guard()` is
    active; `signal` keeps the signal number of the last guarded run (None: no signal, e.g. a Stop button)."""

    def __init__(self, data_parallel: bool):
        self.flag = threading.Event()
        self.ddp = data_parallel
        self.signal: int | None = None

    def request(self) -> None:
        self.flag.set()

    @contextlib.contextmanager
    def guard(self):
        """While training: a fresh flag, and Ctrl-C / SIGTERM / SIGUSR2 as a clean stop."""
        self.flag.clear()
        self.signal = None
        on_signal = StopOnSignal(self.flag, self.ddp)
        try:
            with on_signal:
                yield
        finally:
            self.signal = on_signal.signum


__all__ = ["StopOnSignal", "StopControl"]
