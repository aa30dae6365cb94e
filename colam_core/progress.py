"""tqdm progress bars as a trainer listener: a widget bar in a notebook that a person is looking at
(JupyterLab), plain text elsewhere (terminals, papermill), so executed notebooks hold no widget state.

`COLAM_PROGRESS` overrides the choice: `widget`, `text` (also when not on a terminal), `off`, or `auto`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def in_kernel() -> bool:
    """Whether this code runs inside an IPython kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def process_has_env(pid: str, key: str, value: str) -> bool:
    """Whether process `pid` has `key=value` in its environment; False where that cannot be read."""
    try:
        data = Path(f"/proc/{int(pid)}/environ").read_bytes()
    except (OSError, ValueError):
        return False
    return f"{key}={value}".encode() in data.split(b"\0")


def started_by_jupyter_server() -> bool:
    """Whether this process is an IPython kernel that a Jupyter Server started for a notebook session.

    The server sets ``JPY_SESSION_NAME`` in such kernels; papermill / nbclient do not. A kernel that
    papermill starts from inside a JupyterLab kernel inherits the variable, but so does its launcher
    (``JPY_PARENT_PID``, read from Linux ``/proc``), while a Jupyter Server does not carry it.
    """
    name = os.environ.get("JPY_SESSION_NAME")
    if not name or not in_kernel():
        return False
    launcher = os.environ.get("JPY_PARENT_PID") or str(os.getppid())
    return not process_has_env(launcher, "JPY_SESSION_NAME", name)


def _mode() -> str:
    mode = os.environ.get("COLAM_PROGRESS", "auto").strip().lower()
    return mode if mode in ("auto", "text", "widget", "off") else "auto"


def tqdm_class():
    """tqdm's notebook bar where a front end shows it, its text bar otherwise."""
    mode = _mode()
    if mode == "widget" or (mode == "auto" and started_by_jupyter_server()):
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def tqdm(*args, **kwargs):
    """A progress bar of the right flavour (see `tqdm_class`); a text bar only on a terminal (not in logs or
    executed notebooks, where the epoch lines say enough)."""
    cls = tqdm_class()
    mode = _mode()
    if mode == "off":
        kwargs["disable"] = True
    elif cls.__module__ == "tqdm.std" and mode != "text":
        kwargs.setdefault("disable", None)  # tqdm: None disables on a non-TTY
    return cls(*args, **kwargs)


class TqdmListener:
    """One bar per epoch with the running loss; a line per stage end."""

    def __init__(self, leave: bool = False, min_interval: float = 0.2):
        self.bar = None
        self._key = None
        self.leave = leave
        self.min_interval = min_interval

    def __call__(self, ev):
        kind = ev.kind
        if kind == "batch":
            key = (self._desc(ev), ev.num_batches)
            if self.bar is None or self._key != key:
                self._close()
                self._key = key
                self.bar = tqdm(total=ev.num_batches, desc=key[0], leave=self.leave, unit="batch",
                                mininterval=self.min_interval, initial=ev.batch - 1)
            self.bar.update(ev.batch - self.bar.n)
            if ev.batch == ev.num_batches or ev.batch % 20 == 0:
                self.bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)
        elif kind == "epoch":
            self._close()
            r = ev.row
            tqdm_class().write(f"stage {ev.stage} epoch {ev.epoch}: train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}"
                       f" | test loss {r['test_loss']:.4f} acc {r['test_acc']:.4f} | {r['images_per_s']:.0f} img/s")
        elif kind == "stage" and ev.soft_labels is not None:
            import numpy as np
            own = np.diag(ev.soft_labels)
            tqdm_class().write(f"stage {ev.stage} end: new soft labels, own-class mass mean {own.mean():.3f} "
                       f"(min {own.min():.3f}), update took {ev.metrics.get('update_seconds') or 0:.2f} s")
        elif kind == "warning":
            self._close()
            tqdm_class().write(f"WARNING: {ev.message}", file=sys.stderr)
        elif kind in ("done", "stopped"):
            self._close()
            if kind == "stopped":
                tqdm_class().write(f"stopped at stage {ev.stage}, epoch {ev.epoch}, batch {ev.batch}: resumable")

    @staticmethod
    def _desc(ev):
        return f"stage {ev.stage} epoch {ev.epoch}"

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
