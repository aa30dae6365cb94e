"""A planned sweep on disk (``ROOT/sweep.json`` written by ``colam sweep plan``): states, one entry, workers, tables.

``Campaign(ROOT)`` reads the plan; every way of running it (``run_entry`` for ``--index``, ``work`` for
``--worker``, the submitit tasks of ``submit.py``) trains an entry the same way: claim it (``claims.py``), skip it
if it is finished, check that its parent has written the stage it needs, then an ordinary ``Trainer`` on
``ROOT/<name>``, which resumes from ``checkpoints/last.pt`` when the folder holds a partial run. Each entry is an
ordinary run directory, so ``Sweep.open(ROOT)`` and every reader of runs work on it whatever ran it.

States (``status``): ``done`` (summary.json), ``running`` (a live process holds the claim), ``failed`` (the last
attempt failed; its error line is kept) and ``pending`` (not started, partial, or waiting for a parent).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from ..analysis import results_table
from ..config import Config
from ..errors import ConfigError, RunError
from ..runs import Run, load_soft_label_matrix, stage_number
from ..training import Trainer
from .claims import Claim, clear_failure, holder, read_failure, record_failure
from .expected import expected_table
from .spec import TABLES
from .sweep import SWEEP_FILE, Sweep
from .tables import ECE_METRICS, grid_table, methods_table, temperature_table, with_metrics

STATES = ("done", "running", "pending", "failed")
_OPTIONS = {f.name for f in fields(Config)}


def one_line(e: BaseException) -> str:
    """An exception as the one line ``status`` shows."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ConfigError, RunError)) else f"{type(e).__name__}: {text}"


class Campaign:
    """The planned sweep in ``root``: ``names``, ``depends``, ``plan``, ``sweep`` (the ``Sweep``), and
    ``state`` / ``status`` / ``run_entry`` / ``work`` / ``results`` / ``table``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.sweep = Sweep.open(self.root)
        data = json.loads((self.root / SWEEP_FILE).read_text())
        self.plan: dict = data.get("plan") or {}
        self.depends: dict[str, dict] = self.plan.get("depends") or {}
        self.stop_signal: int | None = None  # the signal that stopped the last run_entry, if one did

    @classmethod
    def open(cls, root: str | Path) -> "Campaign":
        return cls(root)

    @property
    def names(self) -> list[str]:
        return self.sweep.names

    def __len__(self) -> int:
        return len(self.sweep)

    def __repr__(self) -> str:
        return f"Campaign({str(self.root)!r}, {len(self)} runs)"

    def name_of(self, entry: int | str) -> str:
        """An entry by index (``--index I``) or by name."""
        if isinstance(entry, str) and entry in self.sweep.configs:
            return entry
        if isinstance(entry, int) and not isinstance(entry, bool) and 0 <= entry < len(self):
            return self.names[entry]
        raise ConfigError("index", entry, f"an entry index 0..{len(self) - 1} or a name of {self.root}")

    # ---------------------------------------------------------------- states
    def dependency(self, name: str) -> tuple[str, str | None]:
        """``("ready", None)``, ``("waiting", why)`` (the parent has not written the stage yet) or
        ``("blocked", why)`` (it never will: it failed, or finished without that stage)."""
        dep = self.depends.get(name)
        if not dep:
            return "ready", None
        parent, key = dep["parent"], dep["stage"]
        pdir = self.sweep.run_dir(parent)
        if (pdir / "config.json").is_file():
            run = Run(pdir)
            if stage_number(key) in run.stage_checkpoints():
                try:
                    load_soft_label_matrix(f"{pdir}:{key}")
                    return "ready", None
                except ConfigError:
                    pass
            if run.finished:
                return "blocked", f"parent {parent!r} finished without soft labels {key}"
        failure = read_failure(self.root, parent)
        if failure and holder(self.root, parent) is None:
            return "blocked", f"parent {parent!r} failed: {failure.get('error')}"
        return "waiting", f"waits for {parent}:{key}"

    def state(self, name: str) -> tuple[str, str]:
        """``(state, note)``: one of STATES and what ``status`` says about it."""
        st = self.sweep.state(name)
        if st == "finished":
            return "done", ""
        held = holder(self.root, name)
        if held is not None:
            job = f", job {held['job']}" if held.get("job") else ""
            return "running", f"on {held.get('host', '?')} (pid {held.get('pid', '?')}{job})"
        if st == "conflict":
            return "failed", f"{self.sweep.run_dir(name)} holds another configuration"
        failure = read_failure(self.root, name)
        if failure:
            return "failed", str(failure.get("error", ""))
        dep, why = self.dependency(name)
        if dep != "ready":
            return "pending", why or ""
        return "pending", "partial: resumes from its last checkpoint" if st == "partial" else ""

    def status(self) -> pd.DataFrame:
        """One row per entry: index, name, state, epochs (done/total), test_acc, note."""
        base = self.sweep.status().set_index("name")
        res = self._metrics()
        rows = []
        for i, name in enumerate(self.names):
            st, note = self.state(name)
            acc = res.get(name, float("nan"))
            rows.append({"index": i, "name": name, "state": st,
                         "epochs": f"{base.loc[name, 'epochs_done']}/{base.loc[name, 'total_epochs']}",
                         "test_acc": "-" if math.isnan(acc) else f"{acc:.4f}", "note": note})
        return pd.DataFrame(rows, columns=["index", "name", "state", "epochs", "test_acc", "note"])

    def _metrics(self) -> dict[str, float]:
        out = {}
        for name in self.names:
            p = self.sweep.run_dir(name) / "summary.json"
            try:
                out[name] = float(json.loads(p.read_text())["test_acc"]) if p.is_file() else float("nan")
            except (OSError, ValueError, KeyError, TypeError):
                out[name] = float("nan")
        return out

    # ---------------------------------------------------------------- running
    def run_entry(self, entry: int | str, progress: bool = True, listeners: Iterable[Callable] = (),
                  wait: float | None = None, poll: float = 5.0) -> tuple[str, str | None]:
        """Train (or resume) one entry unless it is finished or held: ``(outcome, detail)``.

        Outcomes: ``done`` (already finished), ``trained``, ``stopped`` (a stop request or a signal; detail: the
        signal number; resumable), ``held`` (another live process trains it), ``waiting`` (its parent has not
        written the stage it needs; with ``wait`` seconds it polls that long first), ``blocked`` (it never
        will) and ``failed`` (detail: the error line, also kept for ``status``).
        """
        name = self.name_of(entry)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            dep, why = self.dependency(name)
            if dep != "waiting" or deadline is None or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        claim = Claim(self.root, name)
        if not claim.acquire():
            held = holder(self.root, name) or {}
            return "held", f"held by pid {held.get('pid', '?')} on {held.get('host', '?')}"
        with claim:
            if self.sweep.state(name) == "finished":
                return "done", None
            dep, why = self.dependency(name)
            if dep == "blocked":
                record_failure(self.root, name, why or "blocked")
                return "blocked", why
            if dep == "waiting":
                return "waiting", why
            try:
                with Trainer(self.sweep.configs[name], out=self.sweep.run_dir(name), progress=progress,
                             listeners=tuple(listeners)) as trainer:
                    summary = trainer.run()
                    signum = trainer.stop_signal
            except Exception as e:  # noqa: BLE001 - any failure of one entry is recorded; the others go on
                record_failure(self.root, name, one_line(e))
                return "failed", one_line(e)
            if summary is None:
                self.stop_signal = signum
                return "stopped", None if signum is None else str(signum)
            clear_failure(self.root, name)
            return "trained", None

    def work(self, progress: bool = True, listeners: Iterable[Callable] = (), poll: float = 5.0,
             retry_failed: bool = False, max_runs: int | None = None,
             report: Callable[[str, str, str | None], None] | None = None) -> dict[str, int]:
        """Drain the sweep: take the next entry that is neither finished nor held by another live worker, in
        plan order (parents first), until none is left for this worker; entries whose parent has not written
        the stage they need wait (polled every ``poll`` s) while anything else is left. N identical workers
        train every entry exactly once. Failed entries are skipped unless ``retry_failed`` (then tried once per
        call). Stops at the first stop request or signal (``counts["stopped"]``). Returns outcome counts;
        ``report(name, outcome, detail)`` hears each attempt."""
        counts = {k: 0 for k in ("trained", "failed", "blocked", "stopped")}
        tried: set[str] = set()
        idle = 0
        while True:
            busy = waiting = False
            for name in self.names:
                if name in tried or self.sweep.state(name) == "finished":
                    continue
                if read_failure(self.root, name) and not retry_failed and holder(self.root, name) is None:
                    continue
                dep, _ = self.dependency(name)
                if dep == "waiting":
                    waiting = True
                    continue
                if max_runs is not None and counts["trained"] + counts["failed"] >= max_runs:
                    return counts
                outcome, detail = self.run_entry(name, progress=progress, listeners=listeners)
                if report is not None and outcome != "held":
                    report(name, outcome, detail)
                if outcome == "held":
                    busy = True
                    continue
                if outcome == "waiting":
                    waiting = True
                    continue
                if outcome in counts:
                    counts[outcome] += 1
                if outcome == "stopped":
                    return counts
                tried.add(name)
                break  # rescan from the top: a finished parent may have released its children
            else:
                if not waiting and not busy:
                    return counts
                if not waiting:
                    idle += 1  # only entries others hold: look twice (a `status` probe holds a claim briefly)
                    if idle >= 2:
                        return counts
                time.sleep(poll)
                continue
            idle = 0

    # ---------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """``Sweep.results()`` with the campaign's ``status`` and the failed attempts' ``error`` lines."""
        res = self.sweep.results()
        states = [self.state(n) for n in res["name"]]
        res["status"] = [s for s, _ in states]
        res["error"] = [note if s == "failed" else None for s, note in states]
        return res

    def table(self, kind: str | None = None, results: pd.DataFrame | None = None
              ) -> tuple[str, pd.DataFrame, pd.DataFrame]:
        """``(kind, long, display)``: the plan's table, or ``kind`` (``methods`` mean ± std over seeds in %,
        ``grid`` interval x peer samples, ``temperature``, ``expected``), one row per cell (``long``, with
        ``paper`` and ``diff`` columns where the spec gives the paper's numbers) and as printed (``display``).
        Every kind carries calibration both ways (``ECE_METRICS``: ``test_ece`` of softmax(z / T),
        ``test_ece_T1`` of softmax(z)); ``long`` has their ``{m}_mean``, ``{m}_std`` and ``{m}`` columns
        (``tables.labelled`` names them for a reader), except the grid's ``display``, accuracy only."""
        res = self.results() if results is None else results
        kind = kind or self.plan.get("table") or "methods"
        if kind not in TABLES:
            raise ConfigError("table", kind, ", ".join(TABLES))
        if kind == "expected":
            long = self._expected_table(res)
            return kind, long, long
        if kind == "temperature":
            long = temperature_table(res, scale=100, decimals=2)
            return kind, _with_paper(long, self.plan.get("paper"), ["T"], "test_acc_mean"), long
        if kind == "grid":
            by = ["interval", "peer_samples"]
            long = with_metrics(results_table(res, by=by, scale=100, decimals=2), res, ECE_METRICS, by,
                                scale=100, decimals=2)
            long = _with_paper(long, self.plan.get("paper"), by)
            return kind, long, grid_table(res, agg="mean ± std", scale=100, decimals=2)
        by = [c for c in ("dataset", "model", *self.variant_axes()) if c in res and res[c].nunique() > 1] + ["label"]
        long = _with_paper(methods_table(res, by=by, scale=100, decimals=2), self.plan.get("paper"), by)
        return kind, long, long

    def variant_axes(self) -> list[str]:
        """The spec's grid axes that name no option (``data: [{label: cub200, data_root: ...}, ...]``): each is a
        results column of its variants' labels, and the methods table keeps its values apart."""
        grid = (self.plan.get("spec") or {}).get("grid") or {}
        return [a for a in grid if a not in _OPTIONS and a not in ("interval", "label")]

    def _expected_table(self, res: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for parent in dict.fromkeys(d["parent"] for d in self.depends.values()):
            if not (self.sweep.run_dir(parent) / "config.json").is_file():
                continue
            names = [n for n in self.names if n.startswith(f"{parent}.")]
            configs = {n[len(parent) + 1:]: self.sweep.configs[n] for n in names}
            t = expected_table(Run(self.sweep.run_dir(parent)), configs, res,
                               labels={k: f"{parent}.{k}" for k in configs})
            t.insert(0, "parent", parent)
            parts.append(t)
        if not parts:
            return pd.DataFrame(columns=["parent", "stage", "own_mass", "test_acc", *ECE_METRICS, "parent_test_acc"])
        return pd.concat(parts, ignore_index=True).drop(columns=["source", "run_dir"])


def _with_paper(table: pd.DataFrame, paper: list | None, keys: list[str], ours: str = "mean") -> pd.DataFrame:
    """``table`` with the paper's number (``paper`` rows matched on ``keys``) and ours minus it, where given."""
    if not paper:
        return table
    out = table.copy()
    values = []
    for _, row in out.iterrows():
        hit = [p for p in paper if all(str(p.get(k)) == str(row[k]) for k in keys if k in p)
               and any(k in p for k in keys)]
        values.append(float(hit[0]["test_acc"]) if hit and "test_acc" in hit[0] else float("nan"))
    out["paper"] = values
    out["diff"] = pd.to_numeric(out[ours], errors="coerce") - out["paper"]
    return out


__all__ = ["Campaign", "STATES", "one_line"]
