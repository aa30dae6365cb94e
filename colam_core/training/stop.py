"""Ctrl-C (and, under data-parallel training, SIGTERM) as a request for a clean stop between batches."""
from __future__ import annotations

import signal
import threading
import time


class StopOnSignal:
    """While training in the main thread, the first Ctrl-C asks for a clean stop; a second one interrupts.

    Under data-parallel training SIGTERM asks for a clean stop too (torchrun forwards signals to every worker;
    schedulers send SIGTERM before killing), and a second Ctrl-C interrupts only after a one-second grace,
    because torchrun forwards the terminal's Ctrl-C a second time right away.
    """

    def __init__(self, stop: threading.Event, data_parallel: bool):
        self.stop, self.ddp = stop, data_parallel
        self.prev = {}
        self.first = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        signals = (signal.SIGINT, signal.SIGTERM) if self.ddp else (signal.SIGINT,)

        def handler(signum, frame):
            now = time.monotonic()
            if (signum == signal.SIGINT and self.stop.is_set()
                    and (not self.ddp or (self.first is not None and now - self.first > 1.0))):
                signal.signal(signal.SIGINT, self.prev.get(signal.SIGINT) or signal.default_int_handler)
                raise KeyboardInterrupt
            if self.first is None:
                self.first = now
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


__all__ = ["StopOnSignal"]
