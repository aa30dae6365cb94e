"""tqdm progress bars as a trainer listener (tqdm.auto: a widget bar in notebooks, text in a terminal)."""
from __future__ import annotations

from tqdm.auto import tqdm


class TqdmListener:
    """One bar per epoch with the running loss; a line per stage end."""

    def __init__(self, leave: bool = False, min_interval: float = 0.2):
        self.bar = None
        self.leave = leave
        self.min_interval = min_interval

    def __call__(self, ev):
        kind = ev.kind
        if kind == "batch":
            if self.bar is None or self.bar.total != ev.num_batches or self.bar.desc != self._desc(ev):
                self._close()
                self.bar = tqdm(total=ev.num_batches, desc=self._desc(ev), leave=self.leave, unit="batch",
                                mininterval=self.min_interval, initial=ev.batch - 1)
            self.bar.update(ev.batch - self.bar.n)
            if ev.batch == ev.num_batches or ev.batch % 20 == 0:
                self.bar.set_postfix(loss=f"{ev.loss:.3f}", refresh=False)
        elif kind == "epoch":
            self._close()
            r = ev.row
            tqdm.write(f"stage {ev.stage} epoch {ev.epoch}: train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}"
                       f" | test loss {r['test_loss']:.4f} acc {r['test_acc']:.4f} | {r['images_per_s']:.0f} img/s")
        elif kind == "stage" and ev.soft_labels is not None:
            import numpy as np
            own = np.diag(ev.soft_labels)
            tqdm.write(f"stage {ev.stage} end: new soft labels, own-class mass mean {own.mean():.3f} "
                       f"(min {own.min():.3f}), update took {ev.metrics.get('update_seconds') or 0:.2f} s")
        elif kind in ("done", "stopped"):
            self._close()
            if kind == "stopped":
                tqdm.write(f"stopped at stage {ev.stage}, epoch {ev.epoch}, batch {ev.batch}: resumable")

    @staticmethod
    def _desc(ev):
        return f"stage {ev.stage} epoch {ev.epoch}"

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
