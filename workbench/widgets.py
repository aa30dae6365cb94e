"""The workbench's widgets: train stage by stage, explore soft labels and representations, compare runs.

Each widget composes figures from ``workbench.figures`` with ipywidgets
controls and works in both display modes (``workbench.display``):

* interactive (JupyterLab): controls plus live ``go.FigureWidget`` views
  (``widget.views``), laid out in ``widget.widget``;
* static (papermill, scripts, tests): the same controls (they can be driven
  from code: ``button.click()``, ``slider.value = 2``), no views; displaying
  the object shows plain plotly figures of its current state.

Either way ``figures()`` returns ``{name: go.Figure}`` of the current state.
All widgets but ``StageStepper`` open finished run directories: pass a
``colam_core.Run`` or a path. The mode is fixed when a widget is created
(``mode=`` overrides ``display_mode()`` for one widget).
"""
from __future__ import annotations

import html
import io
import threading
from contextlib import contextmanager, nullcontext
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import ipywidgets as w
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import HTML, display

from colam_core import Config, analysis, load_run
from colam_core.metrics import ECE_LABELS, ece_text, erasures
from colam_core.errors import USER_ERRORS
from colam_core.runs import HISTORY_COLUMNS, RunError

from . import figures
from .display import _check, display_mode, show

__all__ = ["StageStepper", "SoftLabelExplorer", "RepresentationExplorer", "RunComparison", "sync_figure", "png_image"]


# ---------------------------------------------------------------------------
# shared machinery
# ---------------------------------------------------------------------------

def sync_figure(view: go.FigureWidget, fig: go.Figure) -> None:
    """Make a live ``FigureWidget`` show ``fig``, sending as little as possible to the front end.

    When both have the same trace types in the same order, each trace is
    updated in place (its event handlers stay attached); otherwise the traces
    are replaced. Properties that ``fig`` does not set are reset, so the view
    ends up equal to ``fig`` (layout template included).
    """
    with view.batch_update():
        if [t.type for t in view.data] == [t.type for t in fig.data]:
            for trace, source in zip(view.data, fig.data):
                spec = source.to_plotly_json()
                for k in trace.to_plotly_json():
                    if k not in spec and k not in ("type", "uid"):
                        trace[k] = None
                trace.update({k: v for k, v in spec.items() if k != "type"}, overwrite=True)
        else:
            view.data = ()
            view.add_traces(list(fig.data))
        layout = fig.layout.to_plotly_json()
        for k in view.layout.to_plotly_json():
            if k not in layout:
                view.layout[k] = None
        if view.layout.template == fig.layout.template:
            layout = {k: v for k, v in layout.items() if k != "template"}
        view.layout.update(layout, overwrite=True)


def _open_run(run: Any) -> Any:
    """A run object from a ``Run``, a run-like object, or the path of a run directory."""
    return load_run(run) if isinstance(run, (str, Path)) else run


def _error_html(text: str) -> str:
    return f"<pre style='color:#a40000; white-space:pre-wrap; margin:4px 0'>{html.escape(text)}</pre>"


def _note_html(text: str) -> str:
    return f"<span style='color:#8a5a00'>{html.escape(text)}</span>" if text else ""


#: Font Awesome ships with ipywidgets (its buttons' icons), so the spinner needs nothing else
SPINNER = "<i class='fa fa-spinner fa-spin' aria-hidden='true'></i>"


def _busy_html(text: str) -> str:
    return f"<span style='color:#1f4e9c'>{SPINNER} {html.escape(text)}</span>" if text else ""


def _banner_html(lines: Sequence[str]) -> str:
    """A red box that lists warnings (one per line); empty when there are none."""
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return ("<div style='border:2px solid #d62728; background:#fdecea; color:#7a1212; padding:4px 10px; "
            "margin:4px 0; border-radius:4px'><b>⚠ Class erased</b><ul style='margin:2px 0; padding-left:18px'>"
            f"{items}</ul></div>")


def erasure_lines(stage: Any, erased: Sequence[Mapping], class_names: Sequence[str]) -> list[str]:
    """One sentence per erased class of one update, naming it and the class that took its label."""
    st = str(stage).removeprefix("stage_")
    return [f"Stage {st}'s soft labels erase {class_names[e['class']]}: its label puts {e['taken_mass']:.2f} on "
            f"{class_names[e['taken_by']]} and only {e['own_mass']:.2f} on itself, so the next stage trains "
            f"{class_names[e['class']]} toward {class_names[e['taken_by']]}." for e in erased]


class _Widget:
    """Mode, current figures, their live views (interactive mode) and display, shared by every widget."""

    def __init__(self, mode: str | None):
        self.mode = display_mode() if mode is None else _check(mode)
        #: name -> live FigureWidget (interactive mode only)
        self.views: dict[str, go.FigureWidget] = {}
        #: the ipywidgets layout to display (interactive mode only; None in static mode)
        self.widget: w.Widget | None = None
        #: a line of notes or errors above the figures
        self.note = w.HTML()
        self._figs: dict[str, go.Figure] = {}
        #: what is being computed right now (a spinner and a sentence; empty when idle)
        self.busy = w.HTML()
        # name -> function called with the live view after each update (re-attaches click / hover handlers)
        self._hooks: dict[str, Callable[[go.FigureWidget], None]] = {}
        self._lock = threading.RLock()
        # the controls disabled while slow work runs (see _working)
        self._controls: list[w.Widget] = []

    @contextmanager
    def _working(self, text: str):
        """Say what is being computed and disable the controls while it runs (work of about half a second or
        more: the front end shows both at once, since widget messages leave the kernel as they are made)."""
        was = [c.disabled for c in self._controls]
        self.busy.value = _busy_html(text)
        for c in self._controls:
            c.disabled = True
        try:
            yield
        finally:
            for c, d in zip(self._controls, was):
                c.disabled = d
            self.busy.value = ""

    @property
    def interactive(self) -> bool:
        return self.mode == "interactive"

    def figures(self) -> dict[str, go.Figure]:
        """``{name: go.Figure}``: copies of the figures of the current state, in display order."""
        with self._lock:
            return {k: go.Figure(v) for k, v in self._figs.items()}

    def _set(self, name: str, fig: go.Figure) -> None:
        """Store a figure and, in interactive mode, show it in its live view."""
        with self._lock:
            self._figs[name] = fig
            if not self.interactive:
                return
            view = self.views.get(name)
            if view is None:
                view = self.views[name] = go.FigureWidget(fig)
            else:
                sync_figure(view, fig)
            if name in self._hooks:
                self._hooks[name](view)

    def _static_items(self) -> list:
        """What static display shows: the note (when set), then every figure."""
        return ([HTML(self.note.value)] if self.note.value else []) + list(self.figures().values())

    def show(self) -> None:
        """Display the widget: controls and live figures (interactive) or static figures."""
        if self.interactive:
            display(self.widget)
        else:
            show(*self._static_items())

    def _ipython_display_(self) -> None:
        self.show()


# ---------------------------------------------------------------------------
# StageStepper
# ---------------------------------------------------------------------------

class StageStepper(_Widget):
    """Train a run stage by stage and watch it: live learning curves, the new soft labels at each stage end.

    ``StageStepper(Config(...), out="runs/x")`` builds a ``colam_core.Trainer``
    (extra keyword arguments go to it; an ``out`` holding a partial run of the
    same configuration resumes it); ``StageStepper(trainer)`` wraps an
    existing one. Buttons: *Run next stage*, *Run to end*, *Stop* (clean stop
    between batches; the run stays resumable, and *Run next stage* goes on
    from there).

    Interactive mode: training runs on a worker thread, so the notebook stays
    responsive; the run buttons are disabled while it runs and a second click
    never starts a second training; an exception is shown in ``error_area``
    (and kept in ``.error``). Static mode: ``run_stage()`` / ``run_all()``
    train synchronously; an exception is shown and raised. Both return the
    stepper, so a cell ending in ``stepper.run_all()`` shows it: live in
    JupyterLab, the final figures under papermill.

    The status line says what runs between batches (``phase``: the test
    pass, the soft-label pass, the checkpoint), and an update that erases a
    class (its label's largest entry is another class) adds a sentence naming
    both classes to ``warnings``, shown as a red banner (``warning_area``).

    Figures: ``curves`` (per epoch, on axes fixed to the whole run; for COLAM
    the lowest reachable training loss of each stage, dashed) and
    ``soft_labels`` (the latest learned matrix, erased rows marked).
    """

    def __init__(self, trainer: Any, out: str | Path | None = None, *, mode: str | None = None, **trainer_kwargs):
        super().__init__(mode)
        if hasattr(trainer, "run_stage"):
            if out is not None or trainer_kwargs:
                raise TypeError("pass either a Trainer, or a Config with out= and Trainer options, not both")
            self.trainer, self._owns_trainer = trainer, False
        else:
            from colam_core import Trainer

            cfg = Config.from_dict(trainer) if isinstance(trainer, Mapping) else trainer
            self.trainer, self._owns_trainer = Trainer(cfg, out=out, **trainer_kwargs), True
        t = self.trainer
        self.class_names = list(t.data.info.class_names)
        #: the exception of the last failed run, or None
        self.error: BaseException | None = None
        self._soft: dict[str, np.ndarray] = dict(getattr(t, "soft_label_history", {}) or {})
        self._busy = False
        self._closed = False
        self._busy_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._num_batches: int | None = None
        self._last_status = 0.0
        self._class_counts: np.ndarray | None = None

        self.next_button = w.Button(description="Run next stage", icon="step-forward", button_style="primary")
        self.all_button = w.Button(description="Run to end", icon="fast-forward")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="warning")
        self.progress = w.IntProgress(min=0, max=t.total_epochs, value=t.epoch, bar_style="info",
                                      layout=w.Layout(width="320px"))
        self.status = w.HTML()
        #: what the trainer is doing between batches ("evaluating on the test set", ...), or "" while it trains
        self.phase = ""
        self.error_area = w.HTML()
        #: sentences naming every class an update erased (kept for the session; a resumed run recomputes them)
        self.warnings: list[str] = [line for key, soft in self._soft.items()
                                    for line in erasure_lines(key, erasures(soft), self.class_names)]
        #: the red banner that shows ``warnings``
        self.warning_area = w.HTML(_banner_html(self.warnings))
        self.next_button.on_click(lambda _: self.run_stage())
        self.all_button.on_click(lambda _: self.run_all())
        self.stop_button.on_click(lambda _: self.stop())

        t.subscribe(self._on_event)
        self._refresh_curves()
        self._refresh_soft_labels()
        self._set_status(self._idle_status())
        self._update_buttons()
        if self.interactive:
            self.widget = w.VBox([
                w.HBox([self.next_button, self.all_button, self.stop_button, self.progress]),
                self.status, self.warning_area, self.error_area, self.views["curves"], self.views["soft_labels"],
            ])

    # ------------------------------------------------------------ actions
    def run_stage(self) -> "StageStepper":
        """Run the next stage (the rest of it, after a stop); returns the stepper, so a cell ending in
        ``stepper.run_stage()`` shows it (live while it trains, or the final figures in static mode)."""
        self._start(self.trainer.run_stage)
        return self

    def run_all(self) -> "StageStepper":
        """Run every remaining stage; returns the stepper (see ``run_stage``)."""
        self._start(self.trainer.run)
        return self

    def stop(self) -> None:
        """Ask the running training to stop at the next batch boundary (it checkpoints; resumable)."""
        if self._busy:
            self.trainer.request_stop()
            self._set_status("Stopping after this batch …")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker thread (interactive mode); True when no training is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self._busy

    @property
    def running(self) -> bool:
        """Whether a training started from this widget is running."""
        return self._busy

    def close(self) -> None:
        """Stop a running training, wait for it, and release the run directory when this widget built the trainer.
        A closed stepper never trains again (its buttons are disabled; a call raises RunError)."""
        self.stop()
        self.wait()
        self._closed = True
        self._update_buttons()
        self.trainer.unsubscribe(self._on_event)
        if self._owns_trainer:
            self.trainer.close()

    # ------------------------------------------------------------ running
    def _start(self, fn: Callable[[], Any]) -> None:
        if self._closed:
            self.error = RunError(f"this stage stepper was closed and released {self.trainer.out}; nothing was "
                                  "trained: build a new StageStepper to go on")
            self.error_area.value = _error_html(str(self.error))
            if not self.interactive:
                raise self.error
            return
        with self._busy_lock:
            start = not self._busy and not self.trainer.done
            if start:
                self._busy = True
        if not start:  # running already (a double click), or nothing left to run
            return
        self.error = None
        self.error_area.value = ""
        self._update_buttons()
        if self.interactive:
            self._thread = threading.Thread(target=self._work, args=(fn,), name="colam-stage-stepper", daemon=True)
            self._thread.start()
        else:
            self._work(fn)

    def _work(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # shown in the widget; re-raised where a caller is waiting (static mode)
            self.error = e
            # our own errors name the bad value and what to do: one line; anything else: the traceback (a bug)
            detail = f"{type(e).__name__}: {e}" if isinstance(e, USER_ERRORS) else traceback.format_exc()
            self.error_area.value = _error_html("Training failed:\n" + detail)
            self._set_status(f"Failed: {type(e).__name__}: {e}")
            if not self.interactive:
                raise
        finally:
            with self._busy_lock:
                self._busy = False
            self._update_buttons()

    def _update_buttons(self) -> None:
        done = self.trainer.done or self._closed
        self.next_button.disabled = self.all_button.disabled = self._busy or done
        self.stop_button.disabled = not self._busy

    # ------------------------------------------------------------ events (worker thread in interactive mode)
    def _on_event(self, ev: Any) -> None:
        kind = ev.kind
        t = self.trainer
        where = f"Stage {getattr(ev, 'stage', '?')} of {t.num_stages} · epoch {getattr(ev, 'epoch', '?')} of " \
                f"{t.total_epochs}"
        if kind == "batch":
            if self._num_batches is None:
                self._num_batches = ev.num_batches
                self.progress.max = t.total_epochs * ev.num_batches
            now = time.monotonic()
            if now - self._last_status >= 0.1 or ev.batch == ev.num_batches:
                self._last_status = now
                self.phase = ""
                self.progress.value = (ev.epoch - 1) * ev.num_batches + ev.batch
                self._set_status(f"{where} · batch {ev.batch}/{ev.num_batches} · loss {ev.loss:.4f}")
        elif kind == "phase":  # work between batches: say what it is, or a long pause looks like a hang
            self.phase = ev.message
            self._set_status(f"{where} · {ev.message} …", busy=True)
        elif kind == "warning":
            self.warnings += erasure_lines(ev.stage, ev.erased, self.class_names) or [ev.message]
            self.warning_area.value = _banner_html(self.warnings)
        elif kind == "epoch":
            self.phase = ""
            self.progress.value = ev.epoch * (self._num_batches or 1)
            self._refresh_curves()
            row = ev.row
            self._set_status(f"{where} done · test accuracy {row['test_acc']:.4f}")
        elif kind == "stage":
            if ev.soft_labels is not None:
                self._soft[f"stage_{ev.stage}"] = np.asarray(ev.soft_labels)
            self._refresh_soft_labels()
            self._refresh_curves()
            self._set_status(self._idle_status())
        elif kind == "done":
            self.phase = ""
            self._set_status(self._idle_status())
        elif kind == "stopped":
            self.phase = ""
            self._set_status(f"Stopped in stage {ev.stage}, epoch {ev.epoch}, after batch {ev.batch}. "
                             f"The run in {t.out} is checkpointed: Run next stage goes on from there.")

    def _set_status(self, text: str, busy: bool = False) -> None:
        self.status.value = _busy_html(text) if busy else html.escape(text)

    def _idle_status(self) -> str:
        t = self.trainer
        if t.done:
            s = t.summary or {}
            acc = s.get("test_acc")
            nums = f": test accuracy {acc:.4f}, {ece_text(s)}" if isinstance(acc, (int, float)) else ""
            return f"Finished all {t.num_stages} stages{nums} ({t.out})"
        return f"Next: stage {t.current_stage} of {t.num_stages} ({t.epoch} of {t.total_epochs} epochs done; {t.out})"

    def _refresh_curves(self) -> None:
        t = self.trainer
        rows = list(t.history)
        history = pd.DataFrame(rows) if rows else pd.DataFrame(columns=HISTORY_COLUMNS)
        self._set("curves", figures.learning_curves(
            history, epochs=t.total_epochs, loss_floors=self._loss_floors(),
            title="Learning curves (dotted: soft-label updates)<br><sup>after an update the train loss is measured "
                  "against the new soft targets, so it jumps; dashed: the lowest it can reach</sup>"
            if t.cfg.method == "colam" else "Learning curves (dotted: stage ends)"))

    def _loss_floors(self) -> dict[int, float] | None:
        """COLAM: stage k+1 trains on the labels learned at the end of stage k; the lowest training loss it can
        reach is their entropy (with ``hard_weight``, of the mixed targets), which is why the curve jumps there."""
        t = self.trainer
        if t.cfg.method != "colam":
            return None
        if self._class_counts is None:
            labels = t.data.train_labels.cpu().numpy()
            self._class_counts = np.bincount(labels, minlength=len(self.class_names))
        w = float(t.cfg.hard_weight or 0.0)
        eye = np.eye(len(self.class_names))
        return {int(key.removeprefix("stage_")) + 1: analysis.target_entropy((1 - w) * soft + w * eye,
                                                                             self._class_counts)
                for key, soft in self._soft.items()}

    def _refresh_soft_labels(self) -> None:
        if self._soft:
            key = list(self._soft)[-1]
            fig = figures.soft_label_heatmap(self._soft[key], self.class_names,
                                             title=f"Soft labels learned at the end of stage {key.split('_')[-1]}")
        elif self.trainer.epoch >= self.trainer.stage_epochs:
            fig = figures.message(f"method {self.trainer.cfg.method!r} learned no class-wise soft labels "
                                  "at its stage ends")
        else:
            fig = figures.message("No soft labels yet: they are learned at the end of stage 1")
        self._set("soft_labels", fig)

    def _static_items(self) -> list:
        """The status line, an error (if any), and the figures once an epoch has run."""
        items = [HTML(f"<p>{self.status.value}</p>")]
        for area in (self.warning_area, self.error_area):
            if area.value:
                items.append(HTML(area.value))
        return items + (list(self.figures().values()) if self.trainer.history else [])


# ---------------------------------------------------------------------------
# SoftLabelExplorer
# ---------------------------------------------------------------------------

class SoftLabelExplorer(_Widget):
    """Browse the soft labels a run learned: per stage, per class, and how they drift and soften.

    ``SoftLabelExplorer(run)`` with a ``colam_core.Run``, a run directory, or
    any object with ``soft_label_keys()``, ``soft_labels(key)`` and
    ``class_names``. Controls: ``stage_slider`` (the soft-label updates),
    ``class_picker`` (by name, erased classes marked; clicking a heatmap row
    picks that class too) and ``k_slider`` (how many masses ``top_k`` shows).
    ``note`` is a red banner naming every class the shown update erased and
    the class that took it (``erased``: all of them, every update); every
    figure marks them too, also when the erased class is picked.

    Figures: ``heatmap`` (the stage's C x C matrix, picked row outlined;
    above ``page_size`` classes, the page of rows and columns holding the
    picked class), ``top_k`` (the picked class's largest masses),
    ``drift`` (total variation of every class's label into the stage, from
    the previous one or from hard labels), ``own_mass`` (every class's own
    mass over the stages; classes flagged by ``analysis.sharpness`` in red:
    the softening-ratchet diagnostic).
    """

    def __init__(self, run: Any, stage: int | None = None, cls: int = 0, k: int = 5, threshold: float = 0.5,
                 page_size: int = 100, *, mode: str | None = None):
        super().__init__(mode)
        self.run = _open_run(run)
        self.soft = analysis.soft_labels_by_stage(self.run)
        if not self.soft:
            method = getattr(self.run, "config", {}).get("method", "?")
            raise ValueError(f"{getattr(self.run, 'path', self.run)} has no soft labels (method {method}); COLAM "
                             "learns them at the end of every stage but the last, so a run needs 2 stages or more")
        self.class_names = [str(n) for n in self.run.class_names]
        self.k, self.threshold, self.page_size = int(k), float(threshold), int(page_size)
        stages = [int(key.split("_")[-1]) for key in self.soft]
        if stage is not None and int(stage) not in stages:
            raise ValueError(f"stage {stage} has no soft labels; stages with soft labels: {stages}")
        self._class_of_name = {n: i for i, n in enumerate(self.class_names)}
        self.stage_slider = w.SelectionSlider(options=[(str(s), s) for s in stages],
                                              value=stages[-1] if stage is None else int(stage),
                                              description="stage", disabled=len(stages) == 1,
                                              continuous_update=False)
        #: every erased class of every update (``analysis.erasures_by_stage``)
        self.erased = analysis.erasures_by_stage(self.soft, self.class_names)
        erased_at = self.erased.groupby("class")["stage"].apply(
            lambda st: ", ".join(k.removeprefix("stage_") for k in st)).to_dict()
        self.class_picker = w.Dropdown(
            options=[(f"✖ {n} (erased at stage {erased_at[i]})" if i in erased_at else n, i)
                     for i, n in enumerate(self.class_names)], value=int(cls), description="class")
        self.k_slider = w.IntSlider(value=self.k, min=1, max=max(1, min(len(self.class_names), 20)),
                                    description="top k", continuous_update=False)
        self._hooks["heatmap"] = self._attach_click
        self._refresh()
        self.stage_slider.observe(lambda _: self._refresh(stage_changed=True), names="value")
        self.class_picker.observe(lambda _: self._refresh(), names="value")
        self.k_slider.observe(lambda _: self._refresh_top_k(), names="value")
        if self.interactive:
            self.widget = w.VBox([w.HBox([self.stage_slider, self.class_picker, self.k_slider]), self.note,
                                  *(self.views[n] for n in ("heatmap", "top_k", "drift", "own_mass"))])

    @property
    def stage_key(self) -> str:
        """The key (``"stage_K"``) of the soft labels on show."""
        return f"stage_{self.stage_slider.value}"

    def _refresh(self, stage_changed: bool = False) -> None:
        stage, cls = self.stage_slider.value, self.class_picker.value
        soft = self.soft[self.stage_key]
        names = self.class_names
        page = cls // self.page_size if len(names) > self.page_size else None
        self._set("heatmap", figures.soft_label_heatmap(
            soft, names, page=page, page_size=self.page_size, highlight=cls,
            title=f"Soft labels learned at the end of stage {stage}"
                  + (" (click a row to pick its class)" if self.interactive else "")))
        self._refresh_top_k()
        here = self.erased[self.erased["stage"] == self.stage_key]
        self.note.value = _banner_html(erasure_lines(self.stage_key, here.to_dict("records"), names))
        self._set("drift", figures.drift_bars(self.soft, names, to_stage=self.stage_key, threshold=self.threshold,
                                              highlight=cls))
        if not stage_changed:  # the own-mass lines cover every stage: only the picked class changes them
            self._set("own_mass", figures.own_mass_lines(self.soft, names, threshold=self.threshold, highlight=cls))

    def _refresh_top_k(self) -> None:
        stage, cls, k = self.stage_slider.value, self.class_picker.value, int(self.k_slider.value)
        self.k = k
        self._set("top_k", figures.top_k_bars(self.soft[self.stage_key], cls, k=k, class_names=self.class_names,
                                              title=f"Top {k} of the soft label of {self.class_names[cls]} "
                                                    f"(stage {stage})"))

    def _attach_click(self, view: go.FigureWidget) -> None:
        view.data[0].on_click(self._on_heatmap_click)

    def _on_heatmap_click(self, trace: Any, points: Any, state: Any) -> None:
        """A click on a heatmap cell picks the class of its row."""
        if not points.point_inds:
            return
        cls = self._class_of_name.get(str(points.ys[0]))
        if cls is not None:
            self.class_picker.value = cls


# ---------------------------------------------------------------------------
# RepresentationExplorer
# ---------------------------------------------------------------------------

PROJECTIONS = (("template plane", "template"), ("UMAP", "umap"), ("PCA", "pca"))
_PROJECTION_LABEL = {value: label for label, value in PROJECTIONS}
LATEST, LATEST_LABEL = "latest", "latest (end of training)"
HOVER_HINT = "<i>hover a point to see its image</i>"


def png_image(image: np.ndarray, size: int = 112) -> bytes:
    """PNG bytes of an ``(H, W, C)`` uint8 image, enlarged by an integer factor (nearest) to about ``size`` pixels."""
    from PIL import Image

    a = np.asarray(image, dtype=np.uint8)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    scale = max(1, size // max(a.shape[:2]))
    im = Image.fromarray(a)
    if scale > 1:
        im = im.resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


class RepresentationExplorer(_Widget):
    """Penultimate-layer representations of three classes next to their templates.

    ``RepresentationExplorer(run, classes=(a, b, c))``. Controls:
    ``class_pickers`` (three dropdowns), ``stage_picker`` (the model at the
    end of a stage, or the latest), ``split_toggle`` (train / test),
    ``projection_toggle`` (template plane (Müller et al. 2019) / UMAP / PCA).
    Each class contributes ``per_class`` seeded random samples. Hovering a
    point shows that sample's image in ``image`` (``show_sample(index)`` does
    the same from code).

    Figure: ``projection``. The template plane is ``analysis.template_plane``
    of the same seeded per-class samples as ``analysis.template_plane_for_run``
    (identical numbers); the penultimate features are kept per model, split and
    class (the last ``FEATURE_CACHE`` of them), so changing one class computes
    the features of that class only. UMAP and PCA come from an
    ``analysis.EmbeddingCache`` (pass ``cache=`` to share one; it also caches
    on disk in ``<run>/cache``); the first UMAP in a process compiles for tens
    of seconds.
    """

    #: how many (model, split, class) feature arrays the explorer keeps
    FEATURE_CACHE = 64

    def __init__(self, run: Any, classes: Sequence[int] = (0, 1, 2), stage: int | None = None, split: str = "train",
                 projection: str = "template", per_class: int | None = 100, seed: int = 0,
                 cache: analysis.EmbeddingCache | None = None, *, mode: str | None = None):
        super().__init__(mode)
        self.run = _open_run(run)
        self.class_names = [str(n) for n in self.run.class_names]
        if len(self.class_names) < 3 or len(classes) != 3:
            raise ValueError(f"the explorer shows three classes; got classes={tuple(classes)} of a run with "
                             f"{len(self.class_names)} classes")
        if projection.lower() not in _PROJECTION_LABEL:
            raise ValueError(f"projection must be one of {list(_PROJECTION_LABEL)}; got {projection!r}")
        self.per_class, self.seed = per_class, int(seed)
        self.cache = cache if cache is not None else analysis.EmbeddingCache()
        self._features: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        options = [(n, i) for i, n in enumerate(self.class_names)]
        self.class_pickers = [w.Dropdown(options=options, value=int(c), description=f"class {'abc'[i]}",
                                         layout=w.Layout(width="240px")) for i, c in enumerate(classes)]
        checkpoints = self.run.stage_checkpoints()
        if stage is not None and int(stage) not in checkpoints:
            raise ValueError(f"stage {stage} has no checkpoint; stage checkpoints: {checkpoints} (None: the latest)")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        # a Dropdown shows nothing for the value None, so "latest" has a value of its own
        stages = [(LATEST_LABEL, LATEST)] + [(f"end of stage {k}", k) for k in checkpoints]
        self.stage_picker = w.Dropdown(options=stages, value=LATEST if stage is None else int(stage),
                                       description="model")
        self.split_toggle = w.ToggleButtons(options=["train", "test"], value=split)
        self.projection_toggle = w.ToggleButtons(options=PROJECTIONS, value=projection.lower())
        # hidden until a point is hovered (an empty Image shows a broken-image icon)
        self.image = w.Image(format="png", layout=w.Layout(width="112px", height="112px", visibility="hidden"))
        self.image_caption = w.HTML(HOVER_HINT)
        self._hooks["projection"] = self._attach_hover
        self._embedded: set[tuple] = set()
        self._controls = [*self.class_pickers, self.stage_picker, self.split_toggle, self.projection_toggle]
        self._refresh()
        for c in self._controls:
            c.observe(lambda _: self._refresh(), names="value")
        if self.interactive:
            self.widget = w.VBox([
                w.HBox(self.class_pickers), w.HBox([self.stage_picker, self.split_toggle]), self.projection_toggle,
                self.busy, self.note, w.HBox([self.views["projection"], w.VBox([self.image, self.image_caption])]),
            ])

    @property
    def classes(self) -> tuple[int, int, int]:
        """The three picked class ids, in picker order."""
        return tuple(int(p.value) for p in self.class_pickers)

    @property
    def stage(self) -> int | None:
        """The stage whose model is shown; None for the latest model."""
        v = self.stage_picker.value
        return None if v == LATEST else int(v)

    def _refresh(self) -> None:
        classes = self.classes
        self._clear_image()  # a hovered image of another split / projection / class would be stale
        if len(set(classes)) < 3:
            self.note.value = _note_html("Pick three different classes.")
            return
        self.note.value = ""
        stage, split, method = self.stage, self.split_toggle.value, self.projection_toggle.value
        where = f"{'latest model' if stage is None else f'end of stage {stage}'}, {split} samples"
        missing = [c for c in classes if (stage, split, c) not in self._features]
        key = (stage, split, classes, method)
        n = len(classes) * (self.per_class or 0) or "all"
        if method == "template":
            todo = f"computing penultimate features of {len(missing)} class(es)" if missing else ""
        else:
            label = _PROJECTION_LABEL[method]
            todo = "" if key in self._embedded else (
                f"computing {label} of {n} samples" + (" (the first UMAP in a process compiles for ~20 s)"
                                                       if method == "umap" else ""))
        with self._working(todo) if todo else nullcontext():
            if method == "template":
                points, templates = self._template_plane(stage, split, classes)
                fig = figures.template_plane(points, templates, title=f"Template plane (stars: templates), {where}")
            else:
                points = self.cache.get(self.run, stage, split, classes, method, per_class=self.per_class,
                                        seed=self.seed)
                self._embedded.add(key)
                fig = figures.embedding_scatter(points, label, classes,
                                                title=f"{label} of penultimate features, {where}")
            self._set("projection", fig)

    def _clear_image(self) -> None:
        self.image.layout.visibility = "hidden"
        self.image_caption.value = HOVER_HINT

    def _class_features(self, stage: int | None, split: str, cls: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices, penultimate features) of the seeded sample of one class, cached."""
        key = (stage, split, cls)
        if key in self._features:
            self._features.move_to_end(key)
        else:
            x, y = self.run.data(split)
            idx = analysis.sample_indices(y, [cls], self.per_class, self.seed)
            feats = analysis.penultimate_features(self.run.model(stage), x[torch.as_tensor(idx, dtype=torch.long)])
            self._features[key] = (idx, feats)
            while len(self._features) > self.FEATURE_CACHE:
                self._features.popitem(last=False)
        return self._features[key]

    def _template_plane(self, stage: int | None, split: str,
                        classes: tuple[int, int, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``analysis.template_plane_for_run``'s (points, templates), from per-class cached features."""
        parts = [self._class_features(stage, split, c) for c in classes]
        idx = np.concatenate([i for i, _ in parts])
        labels = np.concatenate([np.full(len(i), c, dtype=np.int64) for (i, _), c in zip(parts, classes)])
        clf = self.run.model(stage).classifier
        bias = None if clf.bias is None else clf.bias.detach().cpu().numpy()
        plane = analysis.template_plane(clf.weight.detach().cpu().numpy(), bias,
                                        np.concatenate([f for _, f in parts]), classes)
        names = self.class_names
        points = pd.DataFrame({"x": plane["points"][:, 0], "y": plane["points"][:, 1], "label": labels,
                               "class_name": [names[c] for c in labels], "index": idx.astype(np.int64)})
        templates = pd.DataFrame({"x": plane["templates"][:, 0], "y": plane["templates"][:, 1],
                                  "label": np.asarray(classes, dtype=np.int64),
                                  "class_name": [names[c] for c in classes]})
        return points, templates

    def _attach_hover(self, view: go.FigureWidget) -> None:
        for trace in view.data:
            if trace.customdata is not None:
                trace.on_hover(self._on_hover)

    def _on_hover(self, trace: Any, points: Any, state: Any) -> None:
        if points.point_inds:
            self.show_sample(int(trace.customdata[points.point_inds[0]]))

    def show_sample(self, index: int) -> None:
        """Show image ``index`` of the current split in ``image``, with its class and index."""
        split = self.split_toggle.value
        data = self.run.dataset()
        self.image.value = png_image(data.images_uint8(split, [index])[0])
        self.image.layout.visibility = "visible"
        label = int(self.run.data(split)[1][index])
        self.image_caption.value = f"{html.escape(self.class_names[label])} · {split} #{index}"


# ---------------------------------------------------------------------------
# RunComparison
# ---------------------------------------------------------------------------

def _open_runs(runs: Any) -> dict[str, Any]:
    """label -> run from a mapping, a sequence of runs / paths, or a folder holding run directories."""
    if isinstance(runs, (str, Path)) and not (Path(runs) / "config.json").is_file():
        root = Path(runs)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is neither a run directory nor a folder of run directories")
        # run directories at any depth (runs/quickstart/HL, a sweep's entries), labelled by their path below root
        dirs = sorted({p.parent for p in root.rglob("config.json")})
        dirs = [d for d in dirs if not any(o != d and o in d.parents for o in dirs)]  # not a run's own subfolders
        found = {d.relative_to(root).as_posix(): load_run(d) for d in dirs}
        if not found:
            raise FileNotFoundError(f"{root} holds no run directories (folders with a config.json)")
        return found
    if isinstance(runs, (str, Path)):
        runs = [runs]
    if isinstance(runs, Mapping):
        return {str(k): _open_run(v) for k, v in runs.items()}
    opened = [_open_run(r) for r in runs]
    names = [getattr(r, "name", str(i)) for i, r in enumerate(opened)]
    if len(set(names)) < len(names):  # same folder name in different places: add the parent folder
        names = [f"{Path(r.path).parent.name}/{n}" if hasattr(r, "path") else n for r, n in zip(opened, names)]
    if len(set(names)) < len(names):
        raise ValueError(f"runs need distinct labels; got {names}: pass a mapping {{label: run}}")
    return dict(zip(names, opened))


class RunComparison(_Widget):
    """Several runs side by side (e.g. HL vs LS vs COLAM): curves, results, template distances.

    ``RunComparison([run_a, run_b, run_c])``, ``RunComparison({"HL": run_a,
    ...})`` or ``RunComparison("runs/")`` (every run directory inside).
    Controls: ``run_picker`` (which runs), ``class_picker`` (the classes
    whose template distances are compared; default ``classes``, else the
    first three).

    Figures: ``curves`` (learning curves overlaid), ``results`` (test
    accuracy and ECE both ways, ``ECE softmax(z/T)`` and ``ECE softmax(z)``,
    from each run's summary, ``-`` where an older summary lacks one; one row
    per run, or per method with mean ± std over seeds when
    ``group_by="method"``), and
    ``template_distances`` (normalized template distances of the latest
    models, one row per class pair and one column per run; runs over other
    classes, or without a checkpoint, are left out and named in ``note``).
    """

    def __init__(self, runs: Any, classes: Sequence[int] | None = None, group_by: str = "run",
                 metrics: Sequence[str] = ("test_acc", *ECE_LABELS), *, mode: str | None = None):
        super().__init__(mode)
        if group_by not in ("run", "method"):
            raise ValueError(f"group_by must be 'run' or 'method'; got {group_by!r}")
        self.runs = _open_runs(runs)
        self.group_by, self.metrics = group_by, tuple(metrics)
        labels = list(self.runs)
        self.class_names = [str(n) for n in next(iter(self.runs.values())).class_names]
        classes = tuple(range(min(3, len(self.class_names)))) if classes is None else tuple(int(c) for c in classes)
        self._distances: dict[tuple, pd.DataFrame] = {}
        #: one color per run, fixed by its place among all the runs (deselecting one never recolors the others)
        self.colors = {label: figures.PALETTE[i % len(figures.PALETTE)] for i, label in enumerate(labels)}
        self.run_picker = w.SelectMultiple(options=labels, value=tuple(labels), rows=min(8, len(labels)),
                                           description="runs")
        self.class_picker = w.SelectMultiple(options=[(n, i) for i, n in enumerate(self.class_names)],
                                             value=classes, rows=min(8, len(self.class_names)),
                                             description="classes")
        self._controls = [self.run_picker, self.class_picker]
        self._refresh()
        self.run_picker.observe(lambda _: self._refresh(), names="value")
        self.class_picker.observe(lambda _: self._refresh(curves=False), names="value")
        if self.interactive:
            self.widget = w.VBox([w.HBox([self.run_picker, self.class_picker]), self.busy, self.note,
                                  *(self.views[n] for n in ("curves", "results", "template_distances"))])

    def _selected(self) -> dict[str, Any]:
        picked = set(self.run_picker.value)
        return {k: r for k, r in self.runs.items() if k in picked}

    def _result_row(self, label: str, run: Any) -> dict[str, Any]:
        summary = run.summary or {}
        row = {"run": label, "method": run.config.get("method"), "seed": run.config.get("seed", 0)}
        row.update({m: summary.get(m, float("nan")) for m in self.metrics})
        return row

    def _refresh(self, curves: bool = True) -> None:
        runs = self._selected()
        notes = _differences(runs)
        if curves:
            self._set("curves", figures.learning_curves({k: r.history for k, r in runs.items()}, colors=self.colors,
                                                        title="Learning curves (train dotted, test solid)")
                      if runs else figures.message("no runs selected"))
            self._set("results", figures.results_table([self._result_row(k, r) for k, r in runs.items()],
                                                       metrics=self.metrics, by=self.group_by)
                      if runs else figures.message("no runs selected"))
        classes = tuple(sorted(self.class_picker.value))
        if len(classes) < 2:
            self._set("template_distances", figures.message("pick two classes or more to compare their templates"))
            self.note.value = _note_html(" ".join(notes))
            return
        tables, left_out = {}, []
        todo = [label for label in runs if (label, classes) not in self._distances]
        with self._working(f"computing template distances of {len(todo)} run(s)") if todo else nullcontext():
            for label, run in runs.items():
                if [str(n) for n in run.class_names] != self.class_names:
                    left_out.append(f"{label}: other classes")
                    continue
                key = (label, classes)
                if key not in self._distances:
                    try:
                        self._distances[key] = analysis.template_distances_for_run(run, classes=list(classes))
                    except (RunError, KeyError) as e:
                        left_out.append(f"{label}: {e}")
                        continue
                tables[label] = self._distances[key]
        self._set("template_distances", figures.template_distance_table(tables) if tables
                  else figures.message("no run to compare"))
        if left_out:
            notes.append("Template distances leave out " + "; ".join(left_out) + ".")
        self.note.value = _note_html(" ".join(notes))


#: the options that make two runs' curves and numbers not comparable
COMPARED_OPTIONS = ("dataset", "model", "epochs", "train_limit", "test_limit", "batch_size", "lr")


def _differences(runs: Mapping[str, Any]) -> list[str]:
    """A sentence for every option in which the selected runs differ (COMPARED_OPTIONS), naming who has what."""
    notes = []
    for opt in COMPARED_OPTIONS:
        values: dict[str, list[str]] = {}
        for label, run in runs.items():
            values.setdefault(str(run.config.get(opt)), []).append(label)
        if len(values) > 1:
            who = "; ".join(f"{v}: {', '.join(labels)}" for v, labels in values.items())
            notes.append(f"These runs differ in {opt} ({who}): their curves and numbers are not directly comparable.")
    return notes
