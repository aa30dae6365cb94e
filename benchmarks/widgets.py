"""Latency of the widgets' Python side: ``python -m benchmarks.widgets``.

Measures what a person waits for in the kernel after moving a control, next to
the cost of a no-op widget update measured in the same process:

* **stage slider** of a ``SoftLabelExplorer`` over 100 classes (a 100 x 100
  heatmap, top-k bars, drift bars rebuilt and pushed into live views);
* **class change** of a ``RepresentationExplorer`` showing 10,002 points
  (3 classes x 3,334) on the template plane: the first visit of a class
  computes penultimate features and the projection, a revisit reuses them;
* **no-op**: setting an ``IntSlider.value`` whose observer does nothing.

Widgets run in interactive mode (``go.FigureWidget`` views are updated) but no
front end is attached: the numbers exclude sending messages and drawing in the
browser. The 100-class soft labels are random (their values do not change the
work); the 10,002 points are the digits training images repeated (a 1-epoch
digits model is trained first, in a temporary folder).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

POINTS_PER_CLASS = 3334


class SoftLabelsOnly:
    """A run-like object with random 100-class soft labels (all ``SoftLabelExplorer`` reads)."""

    def __init__(self, num_classes: int = 100, stages: int = 4, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.class_names = [f"class_{i:03d}" for i in range(num_classes)]
        self._soft = {}
        own = 0.9
        for k in range(1, stages + 1):
            off = rng.dirichlet(np.full(num_classes, 0.2), size=num_classes)
            np.fill_diagonal(off, 0.0)
            off /= off.sum(axis=1, keepdims=True)
            self._soft[f"stage_{k}"] = own * np.eye(num_classes) + (1 - own) * off
            own -= 0.1

    def soft_label_keys(self) -> list[str]:
        return list(self._soft)

    def soft_labels(self, stage) -> np.ndarray:
        return self._soft[stage if isinstance(stage, str) else f"stage_{stage}"]


def repeated_run(path: Path, per_class: int):
    """A digits run whose training split is repeated until every class has ``per_class`` samples."""
    import torch

    from colam_core.runs import Run

    class Repeated(Run):
        def data(self, split):
            x, y = super().data(split)
            reps = -(-per_class // int(torch.bincount(y).min()))
            return x.repeat(reps, 1, 1, 1), y.repeat(reps)

    return Repeated(path)


def timed(action: Callable[[int], None], repeats: int) -> list[float]:
    """Milliseconds of ``action(i)`` for i in range(repeats)."""
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        action(i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.widgets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="repetitions per measurement (median reported)")
    args = parser.parse_args(argv)

    import ipywidgets as w

    from colam_core import Config, Trainer
    from workbench import RepresentationExplorer, SoftLabelExplorer

    slider = w.IntSlider(min=0, max=1)
    slider.observe(lambda change: None, names="value")
    timed(lambda i: setattr(slider, "value", (i + 1) % 2), 50)          # warm-up
    noop = statistics.median(timed(lambda i: setattr(slider, "value", (i + 1) % 2), 1000))

    explorer = SoftLabelExplorer(SoftLabelsOnly(), mode="interactive")
    stages = list(explorer.stage_slider.options)
    values = [v for _, v in stages]
    stage_ms = timed(lambda i: setattr(explorer.stage_slider, "value", values[i % len(values)]), args.repeats + 2)[2:]
    static = SoftLabelExplorer(SoftLabelsOnly(), mode="static")
    static_ms = timed(lambda i: setattr(static.stage_slider, "value", values[i % len(values)]), args.repeats + 2)[2:]

    with tempfile.TemporaryDirectory() as tmp:
        with Trainer(Config(dataset="digits", method="hl", epochs=1), out=Path(tmp) / "digits") as trainer:
            trainer.run()
        run = repeated_run(Path(tmp) / "digits", POINTS_PER_CLASS)
        rep = RepresentationExplorer(run, classes=(0, 1, 2), per_class=POINTS_PER_CLASS, mode="interactive")
        n_points = sum(len(t.x) for t in rep.figures()["projection"].data[:3])
        picker = rep.class_pickers[2]
        first = timed(lambda i: setattr(picker, "value", 3 + i), 7)         # classes 3..9: new features each time
        again = timed(lambda i: setattr(picker, "value", 3 + i % 7), args.repeats)

    def line(what: str, ms: list[float]) -> str:
        m = statistics.median(ms)
        return f"{what:<62} {m:9.2f} ms  {m / noop:9.0f} x no-op"

    print("workbench latency, Python side (interactive mode, no front end attached); median of the runs")
    print(f"{'no-op widget update (IntSlider.value, empty observer)':<62} {noop:9.4f} ms")
    print(line("stage slider, 100 x 100 heatmap + top-k + drift, live views", stage_ms))
    print(line("  same, figures only (static mode)", static_ms))
    print(line(f"class change, {n_points:,} points, template plane, first visit", first))
    print(line(f"class change, {n_points:,} points, template plane, revisit", again))


if __name__ == "__main__":
    main()
