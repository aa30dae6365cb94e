"""The ``Sweep``: named runs trained one after another in one root folder, resumable (see the package docstring).

Construction and validation (before any folder exists), the folder checks,
each run's state, the run loop (``run``: one ``Trainer`` per run, in order;
``request_stop``) and ``results`` (one row per run, read from the folders).
"""
from __future__ import annotations

import json
import numbers
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import ConfigError, DataError, RunError, TrainingError
from ..progress import tqdm
from ..runs import (Run, atomic_write_text, describe_difference, load_soft_label_matrix, split_soft_label_spec,
                    stage_number)
from ..training import Trainer
from .naming import (_NAME_ALLOWED, CORE_PARAMS, METRICS, _as_config, _derive_names, _in_run, _json_value, _params,
                     _tags, _varied, check_name)

SWEEP_FILE = "sweep.json"


class Sweep:
    """Named runs trained one after another in ``root/<name>``; resumable; see the package docstring.

    ``configs``: ``{name: Config or dict of options}`` (order kept) or a list of
    them (names from ``cfg.name``, else from the options that differ between
    them, e.g. ``T=1.5``, else ``run_000``...). Names must be filesystem-safe and
    unique ignoring case (``check_name``). Every config is validated here
    (unless ``validate=False``, for reading results only), so a bad one raises
    ``ConfigError`` at once, before any folder exists; ``run`` validates again.

    Attributes: ``root``, ``configs`` (``{name: Config}``), ``current`` (the name
    of the run training now, or None), ``stopped`` (True when the last ``run``
    ended early because of a stop request or Ctrl-C), ``errors`` (``{name:
    message}`` of runs that failed in ``run(errors="continue")``).
    """

    def __init__(self, root: str | Path, configs: Mapping[str, Config | Mapping] | Sequence[Config | Mapping],
                 validate: bool = True):
        self.root = Path(root)
        if isinstance(configs, Mapping):
            items = [(n, _as_config(c, n if isinstance(n, str) else None)) for n, c in configs.items()]
        elif isinstance(configs, (list, tuple)):
            cfgs = [_as_config(c, f"#{i}") for i, c in enumerate(configs)]
            items = list(zip(_derive_names(cfgs), cfgs))
        else:
            raise TypeError("configs must be a dict {name: Config} or a list of Config")
        if not items:
            raise ValueError("a sweep needs at least one configuration")
        seen: dict[str, str] = {}
        for name, _ in items:
            check_name(name)
            if name.lower() in seen:
                raise ConfigError("name", name, f"{_NAME_ALLOWED}; {seen[name.lower()]!r} is already a run of "
                                                "this sweep")
            seen[name.lower()] = name
        # the run name becomes the config's name (not part of what a run computes) where none is set
        self.configs: dict[str, Config] = {n: (c if c.name else c.replace(name=n)) for n, c in items}
        self.current: str | None = None
        self.stopped = False
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._trainer = None
        if validate:
            self.validate()

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def open(cls, root: str | Path, validate: bool = False) -> "Sweep":
        """Reopen the sweep recorded in ``root/sweep.json`` (written by ``run``), e.g. to read its
        results from another process or notebook while it trains. Not validated by default (the data
        files need not exist where results are read); ``run`` validates before training."""
        p = Path(root) / SWEEP_FILE
        if not p.is_file():
            raise RunError(f"{root} holds no {SWEEP_FILE}; it is not the root of a sweep that has been planned "
                           "(`colam sweep plan SPEC --out ROOT`) or run")
        data = json.loads(p.read_text())
        return cls(root, {n: Config.from_dict(d) for n, d in data["runs"].items()}, validate=validate)

    def __len__(self) -> int:
        return len(self.configs)

    def __repr__(self) -> str:
        return f"Sweep({str(self.root)!r}, {len(self)} runs)"

    @property
    def names(self) -> list[str]:
        return list(self.configs)

    def run_dir(self, name: str) -> Path:
        return self.root / name

    def varied(self) -> list[str]:
        """Options that differ between the runs of this sweep (beyond CORE_PARAMS they become columns)."""
        return _varied(list(self.configs.values()))

    # ---------------------------------------------------------------- validation
    def validate(self) -> "Sweep":
        """Validate every config (cheap, loads no data); raise ``ConfigError`` naming the run on the first bad one.

        For method ``fixed`` the target matrix is read too, unless it is the
        output of an earlier run of this sweep that has not trained yet (then
        every other option is checked now and the matrix when that run starts);
        pointing at a run that trains later is an error.
        """

        order = {self._resolve(self.run_dir(n)): i for i, n in enumerate(self.configs)}
        for i, (name, cfg) in enumerate(self.configs.items()):
            check = cfg
            producer = None
            if cfg.method == "fixed" and isinstance(cfg.fixed_targets, str) and cfg.fixed_targets:
                path, _ = split_soft_label_spec(cfg.fixed_targets)
                producer = order.get(self._resolve(Path(path)))
                if producer is not None and producer >= i:
                    raise ConfigError("fixed_targets", cfg.fixed_targets,
                                      f"the soft labels of an earlier run of the sweep (sweep run {name!r} would "
                                      "read those of a run that trains after it)")
                if producer is not None and not self._targets_exist(cfg.fixed_targets):
                    # the labels appear once the producing run trained; validate every other option now
                    # (method fixed trains like hl apart from its targets: same stages and limits)
                    check = cfg.replace(method="hl")
            try:
                check.validate()
                if cfg.method == "fixed" and check is cfg:
                    load_soft_label_matrix(cfg.fixed_targets)  # (Config.validate may do this too)
            except ConfigError as e:
                raise _in_run(e, name) from None
            except DataError as e:
                raise _in_run(ConfigError("data_root" if cfg.data_root is not None else "dataset",
                                          cfg.data_root if cfg.data_root is not None else cfg.dataset, str(e)),
                              name) from None
        return self

    @staticmethod
    def _targets_exist(spec: str) -> bool:
        try:
            load_soft_label_matrix(spec)
            return True
        except ConfigError:
            return False

    @staticmethod
    def _resolve(p: Path) -> str:
        try:
            return str(p.resolve())
        except OSError:
            return str(p.absolute())

    def check(self) -> "Sweep":
        """``validate`` plus the run folders: raise ``RunError`` if one holds a different configuration,
        or if ``root/<name>`` exists and is not a folder. Reads only."""
        self.validate()
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"sweep root {self.root} exists and is not a folder")
        for name in self.configs:
            d = self.run_dir(name)
            if d.exists() and not d.is_dir():
                raise RunError(f"{d} exists and is not a run folder (sweep run {name!r})")
            diff = self._conflict(name)
            if diff:
                raise RunError(f"run directory {d} already holds a different run ({diff}); nothing was trained. "
                               f"Move it away, or give sweep run {name!r} another name or root")
        return self

    def _conflict(self, name: str) -> str | None:
        p = self.run_dir(name) / "config.json"
        if not p.is_file():
            return None
        try:
            theirs = json.loads(p.read_text()).get("fingerprint", {})
        except (OSError, ValueError):
            return "unreadable config.json"
        return describe_difference(theirs, self.configs[name].fingerprint())

    # ---------------------------------------------------------------- state
    def state(self, name: str) -> str:
        """``new`` (nothing trained), ``partial`` (resumable), ``finished`` (summary.json exists) or
        ``conflict`` (the folder holds another configuration)."""
        d = self.run_dir(name)
        if not (d / "config.json").is_file():
            return "new"
        if self._conflict(name):
            return "conflict"
        return "finished" if (d / "summary.json").is_file() else "partial"

    def status(self) -> pd.DataFrame:
        """One row per run: name, state, epochs_done, total_epochs, run_dir. Reads the run folders only."""
        rows = []
        for name, cfg in self.configs.items():
            st = self.state(name)
            rows.append({"name": name, "state": st, "epochs_done": self._epochs_done(name, st),
                         "total_epochs": cfg.total_epochs, "run_dir": str(self.run_dir(name))})
        return pd.DataFrame(rows, columns=["name", "state", "epochs_done", "total_epochs", "run_dir"])

    def _epochs_done(self, name: str, st: str) -> int:
        if st in ("new", "conflict"):
            return 0
        p = self.run_dir(name) / "history.csv"
        try:
            return int(len(pd.read_csv(p))) if p.is_file() else 0
        except (OSError, ValueError, pd.errors.EmptyDataError):
            return 0

    # ---------------------------------------------------------------- running
    def request_stop(self) -> None:
        """Stop cleanly (thread-safe): the run in progress stops between batches and checkpoints,
        no further run starts; ``run`` returns the results so far. Running again resumes."""
        self._stop.set()
        with self._lock:
            trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def run(self, progress: bool = True, max_runs: int | None = None,
            listeners: Iterable[Callable] = (), errors: str = "raise") -> pd.DataFrame:
        """Train every run that is not finished, in order; return ``results()``.

        Finished runs are skipped, a partial one resumes from its last
        checkpoint. Everything is checked first (``check``): a bad config or a
        folder holding another run raises before anything trains. ``max_runs``
        trains (or resumes) at most that many runs in this call. ``listeners``
        get every trainer event of every run (``self.current`` names the run).
        A stop request (``request_stop``, Ctrl-C once) ends the call early with
        ``self.stopped`` True; an exception (e.g. Ctrl-C twice) propagates and
        leaves the run resumable. With ``errors="continue"`` a run that fails in
        training (``TrainingError``, e.g. a non-finite loss) is recorded in
        ``self.errors`` and the next run starts; it stays partial and is
        retried by the next ``run`` call.
        """
        if errors not in ("raise", "continue"):
            raise ValueError(f"errors must be 'raise' or 'continue'; got {errors!r}")
        if max_runs is not None and (isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 0):
            raise ValueError(f"max_runs must be None or an integer >= 0; got {max_runs!r}")
        self.check()

        self._stop.clear()
        self.stopped = False
        self.errors = {}
        todo = [n for n in self.configs if self.state(n) != "finished"]
        self._write_sweep_file()
        bar = None
        if progress:
            bar = tqdm(total=len(self.configs), initial=len(self.configs) - len(todo), desc=f"sweep {self.root.name}",
                       unit="run", leave=True)
        trained = 0
        try:
            for name in todo:
                if self._stop.is_set():
                    self.stopped = True
                    break
                if max_runs is not None and trained >= max_runs:
                    break
                self.current = name
                if bar is not None:
                    bar.set_postfix_str(name)
                trained += 1
                try:
                    summary = self._train_one(name, progress, listeners)
                except TrainingError as e:
                    if errors == "raise":
                        raise
                    self.errors[name] = str(e)
                    if bar is not None:
                        bar.write(f"sweep run {name!r} failed: {e}")
                        bar.update(1)
                    continue
                if summary is None:
                    self.stopped = True
                    if bar is not None:
                        bar.write(f"sweep stopped during run {name!r}: run the sweep again to resume it")
                    break
                if bar is not None:
                    bar.update(1)
        finally:
            self.current = None
            if bar is not None:
                bar.close()
        return self.results()

    def _train_one(self, name: str, progress: bool, listeners: Iterable[Callable]):

        def relay_stop(ev, _self=self):  # a stop requested before the trainer existed, or mid-construction
            if ev.kind == "batch" and _self._stop.is_set():
                trainer.request_stop()

        with Trainer(self.configs[name], out=self.run_dir(name), progress=progress,
                     listeners=(relay_stop, *listeners)) as trainer:
            with self._lock:
                self._trainer = trainer
            try:
                return trainer.run()
            finally:
                with self._lock:
                    self._trainer = None

    def _write_sweep_file(self) -> None:
        """Record the runs in root/sweep.json (merged with runs recorded there before, other keys such as a
        campaign's ``plan`` kept) for ``Sweep.open``."""
        p = self.root / SWEEP_FILE
        data: dict = {}
        if p.is_file():
            try:
                data = dict(json.loads(p.read_text()))
            except (OSError, ValueError, TypeError):
                data = {}
        runs = dict(data.get("runs") or {})
        runs.update({n: c.to_dict() for n, c in self.configs.items()})
        atomic_write_text(p, json.dumps({**data, "format": 1, "runs": runs}, indent=2, sort_keys=False))

    # ---------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """One row per run (finished or not), reading only the run folders.

        Columns: ``name``; CORE_PARAMS (dataset, model, method, label (the
        methods_seeds label, else the method), seed, epochs, stages (resolved),
        interval (epochs per stage t), T, peer_samples); any other option that
        differs between the runs; the tags the builders put in
        ``cfg.extra["sweep"]``; METRICS from ``summary.json`` (test_acc,
        test_ece of softmax(z / T), test_ece_T1 of softmax(z), best_test_acc,
        train_seconds; NaN until finished);
        ``own_mass_stage_K``: mean over classes of the own-class mass of the
        soft labels learned at the end of stage K (NaN where there are none);
        ``epochs_done``, ``state``, ``finished``, ``error`` (the message of a
        failure in the last ``run(errors="continue")`` of this object, else
        missing (None/NaN)), ``run_dir``.
        """
        varied = [k for k in self.varied() if k not in CORE_PARAMS]
        rows, stage_keys = [], set()
        for name, cfg in self.configs.items():
            row: dict[str, Any] = {"name": name, **_params(cfg)}
            for k in varied:
                row[k] = _json_value(getattr(cfg, k))
            for k, v in _tags(cfg).items():
                row.setdefault(k, v)
            st = self.state(name)
            summary = None
            own: dict[str, float] = {}
            if st in ("partial", "finished"):
                run = Run(self.run_dir(name))
                summary = run.summary if st == "finished" else None
                try:
                    own = {k: float(np.mean(np.diag(v))) for k, v in run.all_soft_labels().items()}
                except (OSError, ValueError):
                    own = {}
            for m in METRICS:
                v = summary.get(m) if summary else None
                row[m] = float(v) if isinstance(v, numbers.Real) else float("nan")
            for k, v in own.items():
                row[f"own_mass_{k}"] = v
                stage_keys.add(k)
            row["epochs_done"] = self._epochs_done(name, st)
            row["state"] = st
            row["finished"] = st == "finished"
            row["error"] = self.errors.get(name)
            row["run_dir"] = str(self.run_dir(name))
            rows.append(row)
        own_cols = [f"own_mass_{k}" for k in sorted(stage_keys, key=stage_number)]
        tag_cols = []
        for r in rows:
            for k in r:
                if (k not in CORE_PARAMS and k not in varied and k not in METRICS and k not in own_cols
                        and k not in ("name", "epochs_done", "state", "finished", "error", "run_dir")
                        and k not in tag_cols):
                    tag_cols.append(k)
        columns = (["name", *CORE_PARAMS, *varied, *tag_cols, *METRICS, *own_cols,
                    "epochs_done", "state", "finished", "error", "run_dir"])
        df = pd.DataFrame(rows)
        for c in columns:
            if c not in df.columns:
                df[c] = np.nan
        return df[columns]
