"""Sweeps of runs, the paper's comparison tables, and the expected accuracy of soft labels.

A **sweep** is an ordered set of named runs trained one after another in one
root folder, each in ``root/<name>`` (an ordinary run directory, see
``runs``). It is resumable by construction: a finished run (its
``summary.json`` exists) is skipped, a partial one is resumed by the
``Trainer`` from its ``checkpoints/last.pt``, so an interrupted sweep (Ctrl-C,
``request_stop``, a killed process, ``max_runs``) is continued by running it
again::

    from colam_core import Config
    from colam_core.sweeps import Sweep, interval_peers_grid, grid_table

    base = Config(dataset="digits", method="colam", epochs=12, T=1.5)
    sweep = Sweep("runs/fig4a", interval_peers_grid(base, intervals=[3, 6], peers=[1, 10, "all"]))
    results = sweep.run()                       # one row per run (see Sweep.results)
    grid_table(results)                         # interval x peer_samples -> test accuracy

Every configuration is validated before anything trains or any folder is
created: a bad one raises ``ConfigError`` naming the option, the value, what
is allowed and the sweep run it belongs to. A run folder that already holds a
*different* configuration raises ``RunError`` before anything trains.

Builders return ``{name: Config}`` dicts that can be merged (``{**a, **b}``):

* ``interval_peers_grid(base, intervals, peers)``: the paper's Fig. 4a grid,
  COLAM with ``t`` epochs per stage (``stages = epochs // t``) and ``k`` peer samples;
* ``temperature_sweep(base, Ts, seeds=None)``: Fig. 4b / Sec. 5.3;
* ``methods_seeds(base, methods, seeds)``: Tables 1-4, every method with every seed.

Tables (pure functions of ``Sweep.results()``): ``grid_table`` (a pivot),
``temperature_table`` and ``methods_table`` (mean ± std over seeds, like the
paper's tables; built on ``analysis.results_table``).

``expected_accuracy(run)`` reproduces the paper's Fig. 1b: for every soft-label
update ``K`` of a COLAM run, a fresh model is trained from scratch on the
frozen labels of stage ``K`` (method ``fixed``), as a sweep in
``<run>/expected/``. It is re-exported by ``colam_core.analysis``.

Nothing here plots; everything returns pandas DataFrames. Training uses the
same ``Trainer`` as a single run (its events reach the ``listeners`` given to
``Sweep.run``).
"""
from __future__ import annotations

import json
import math
import numbers
import re
import threading
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..analysis import results_table
from ..config import Config
from ..errors import ConfigError, DataError, RunError, TrainingError
from ..progress import tqdm
from ..runs import (FINGERPRINT_EXCLUDED, Run, atomic_write_text, describe_difference, load_run,
                   load_soft_label_matrix, split_soft_label_spec, stage_key, stage_number)
from ..training import Trainer

__all__ = [
    "Sweep",
    "interval_peers_grid",
    "temperature_sweep",
    "methods_seeds",
    "grid_table",
    "temperature_table",
    "methods_table",
    "expected_accuracy",
    "check_name",
    "CORE_PARAMS",
    "METRICS",
]

#: Parameters every results row carries (``stages`` resolved to the method's default,
#: ``interval`` = epochs per stage ``t``), whatever the sweep varies.
CORE_PARAMS = ("dataset", "model", "method", "label", "seed", "epochs", "stages", "interval", "T", "peer_samples")
#: Metrics copied from each run's ``summary.json`` (NaN while the run is not finished).
METRICS = ("test_acc", "test_ece", "best_test_acc", "train_seconds")

SWEEP_FILE = "sweep.json"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_NAME_MAX = 128
_NAME_ALLOWED = ("letters, digits and . _ + = - (starting with a letter or digit, at most "
                 f"{_NAME_MAX} characters, unique ignoring case)")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}
# options that never change what a run computes, so never count as "varied"
_NOT_PARAMS = set(FINGERPRINT_EXCLUDED)


# ----------------------------------------------------------------------------- names and configs
def check_name(name: Any) -> str:
    """Return ``name`` if it is a filesystem-safe run name, else raise ``ConfigError("name", ...)``.

    Allowed: letters, digits and ``. _ + = -``, starting with a letter or digit,
    at most 128 characters, not a Windows device name (``con``, ``nul``, ...).
    """
    if (not isinstance(name, str) or len(name) > _NAME_MAX or not _NAME_RE.match(name)
            or name.split(".")[0].lower() in _WINDOWS_RESERVED):
        raise ConfigError("name", name, _NAME_ALLOWED)
    return name


def _as_config(cfg: Config | Mapping, name: str | None = None) -> Config:
    if isinstance(cfg, Config):
        return cfg
    if isinstance(cfg, Mapping):
        try:
            return Config.from_dict(dict(cfg))
        except ConfigError as e:
            raise _in_run(e, name) from None
    raise TypeError(f"sweep run {name!r}: expected a Config or a dict of options, got {type(cfg).__name__}")


def _in_run(e: ConfigError, name: str | None) -> ConfigError:
    """The same ConfigError (option, value) with the sweep run it belongs to appended to `allowed`."""
    if name is None:
        return e
    return ConfigError(e.option, e.value, f"{e.allowed} (sweep run {name!r})")


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt_value(x) for x in v)
    return str(v)


def _json_value(v: Any) -> Any:
    """A hashable, comparable form of a config value (lists become tuples)."""
    if isinstance(v, list):
        return tuple(_json_value(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _json_value(x)) for k, x in v.items()))
    return v


def _varied(configs: Sequence[Config]) -> list[str]:
    """Options (in Config field order) whose value differs between the configs."""
    if len(configs) < 2:
        return []
    prints = [c.fingerprint() for c in configs]
    out = []
    for f in fields(Config):
        k = f.name
        if k in _NOT_PARAMS:
            continue
        vals = {json.dumps(p.get(k), sort_keys=True) for p in prints}
        if len(vals) > 1:
            out.append(k)
    return out


def _derive_names(configs: Sequence[Config]) -> list[str]:
    """Names for a list of configs: ``cfg.name`` when set, else the varied options (``T=1.5_seed=1``),
    else ``run_000``, ``run_001``, ..."""
    varied = [k for k in _varied(configs)]
    names = []
    for c in configs:
        if c.name:
            names.append(c.name)
            continue
        derived = "_".join(f"{k}={_fmt_value(getattr(c, k))}" for k in varied)
        derived = re.sub(r"[^A-Za-z0-9._+=-]", "-", derived)
        names.append(derived)
    safe = all(n and len(n) <= _NAME_MAX and _NAME_RE.match(n) for n in names)
    if not safe or len({n.lower() for n in names}) != len(names):
        # fall back to positions for the unnamed ones (explicit names are kept and checked later)
        names = [c.name if c.name else f"run_{i:03d}" for i, c in enumerate(configs)]
    return names


def _tags(cfg: Config) -> dict:
    sweep = cfg.extra.get("sweep") if isinstance(cfg.extra, dict) else None
    return dict(sweep) if isinstance(sweep, dict) else {}


def _params(cfg: Config) -> dict:
    """The core parameters of one config (see CORE_PARAMS)."""
    return {
        "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
        "label": _tags(cfg).get("label", cfg.method), "seed": cfg.seed, "epochs": cfg.epochs,
        "stages": cfg.num_stages, "interval": cfg.stage_epochs, "T": cfg.T, "peer_samples": cfg.peer_samples,
    }


# ----------------------------------------------------------------------------- the sweep
class Sweep:
    """Named runs trained one after another in ``root/<name>``; resumable; see the module docstring.

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
            raise RunError(f"{root} holds no {SWEEP_FILE}; it is not the root of a sweep that has been run")
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
                raise ConfigError("data_root" if cfg.data_root is not None else "dataset",
                                  cfg.data_root if cfg.data_root is not None else cfg.dataset,
                                  f"{e} (sweep run {name!r})") from None
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
        """Record the runs in root/sweep.json (merged with runs recorded there before) for ``Sweep.open``."""
        p = self.root / SWEEP_FILE
        runs: dict = {}
        if p.is_file():
            try:
                runs = dict(json.loads(p.read_text()).get("runs", {}))
            except (OSError, ValueError):
                runs = {}
        runs.update({n: c.to_dict() for n, c in self.configs.items()})
        atomic_write_text(p, json.dumps({"format": 1, "runs": runs}, indent=2, sort_keys=False))

    # ---------------------------------------------------------------- results
    def results(self) -> pd.DataFrame:
        """One row per run (finished or not), reading only the run folders.

        Columns: ``name``; CORE_PARAMS (dataset, model, method, label (the
        methods_seeds label, else the method), seed, epochs, stages (resolved),
        interval (epochs per stage t), T, peer_samples); any other option that
        differs between the runs; the tags the builders put in
        ``cfg.extra["sweep"]``; METRICS from ``summary.json`` (test_acc,
        test_ece, best_test_acc, train_seconds; NaN until finished);
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


# ----------------------------------------------------------------------------- builders
def _check_unique(option: str, values: Sequence) -> list:
    vals = list(values)
    if not vals:
        raise ConfigError(option, vals, "a non-empty list")
    seen = []
    for v in vals:
        if any(v == s and type(v) is type(s) for s in seen):
            raise ConfigError(option, v, f"distinct values (it appears twice in {vals})")
        seen.append(v)
    return vals


def _with_tags(cfg: Config, **tags) -> dict:
    extra = dict(cfg.extra) if isinstance(cfg.extra, dict) else {}
    extra["sweep"] = {**_tags(cfg), **tags}
    return extra


def _seeds(base: Config, seeds) -> list[int] | None:
    if seeds is None:
        return None
    seeds = _check_unique("seeds", seeds)
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError("seed", s, "an integer >= 0")
    return seeds


def interval_peers_grid(base: Config, intervals: Sequence[int], peers: Sequence[int | str],
                        seeds: Sequence[int] | None = None) -> dict[str, Config]:
    """The paper's Fig. 4a grid: COLAM with ``t`` epochs per stage and ``k`` peer samples per class.

    For every interval ``t`` in ``intervals`` (epochs per stage; ``stages =
    base.epochs // t``) and every ``k`` in ``peers`` (an integer or ``"all"``),
    one run named ``t{t}_k{k}`` (``t{t}_k{k}_s{seed}`` with ``seeds``). An
    interval that does not divide ``base.epochs`` is skipped with a warning
    naming the intervals that do; if none is left, ``ConfigError``. ``base``
    must use method ``colam``. ``t = epochs`` means a single stage, i.e. no
    soft-label update (hard labels at temperature T).
    """
    base = _as_config(base)
    if base.method != "colam":
        raise ConfigError("method", base.method, "colam (the interval and peer samples are COLAM options)")
    intervals = _check_unique("intervals", intervals)
    peers = _check_unique("peers", peers)
    seeds = _seeds(base, seeds)
    E = base.epochs
    divisors = [d for d in range(1, E + 1) if E % d == 0] if isinstance(E, int) and E >= 1 else []
    kept = []
    for t in intervals:
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ConfigError("interval", t, "an integer >= 1 (epochs per stage)")
        if not divisors or E % t:
            warnings.warn(f"interval t={t} skipped: it does not divide epochs={E} (m stages of t epochs: "
                          f"epochs = m * t); intervals that do: {', '.join(map(str, divisors))}", UserWarning,
                          stacklevel=2)
            continue
        kept.append(t)
    if not kept:
        raise ConfigError("intervals", list(intervals),
                          f"at least one divisor of epochs={E}: {', '.join(map(str, divisors))}")
    out: dict[str, Config] = {}
    for t in kept:
        for k in peers:
            for s in seeds if seeds is not None else [None]:
                name = f"t{t}_k{k}" + ("" if s is None else f"_s{s}")
                cfg = base.replace(stages=E // t, peer_samples=k, seed=base.seed if s is None else s,
                                   name=None, extra=_with_tags(base))
                out[name] = cfg
    return out


def temperature_sweep(base: Config, Ts: Sequence[float], seeds: Sequence[int] | None = None) -> dict[str, Config]:
    """One run per temperature (``T1.5``; ``T1.5_s0`` ... with ``seeds``), everything else from ``base``.

    ``base`` must be a method that uses T: ``colam`` (paper Sec. 5.3 / Fig. 4b) or ``fixed``.
    """
    base = _as_config(base)
    if base.method not in ("colam", "fixed"):
        raise ConfigError("method", base.method, "colam or fixed (the methods that use the temperature T)")
    Ts = _check_unique("T", Ts)
    for T in Ts:
        if isinstance(T, bool) or not isinstance(T, numbers.Real):
            raise ConfigError("T", T, "a finite number > 0")
    seeds = _seeds(base, seeds)
    names = [f"T{float(T)!r}" for T in Ts]
    if len(set(names)) != len(names):
        raise ConfigError("T", list(Ts), "distinct temperatures")
    out: dict[str, Config] = {}
    for T, n in zip(Ts, names):
        for s in seeds if seeds is not None else [None]:
            name = n if s is None else f"{n}_s{s}"
            out[name] = base.replace(T=float(T), seed=base.seed if s is None else s, name=None,
                                     extra=_with_tags(base))
    return out


def methods_seeds(base: Config, methods: Sequence[str | tuple[str, Mapping]] | Mapping[str, Mapping],
                  seeds: Sequence[int]) -> dict[str, Config]:
    """Every method with every seed (the paper's Tables 1-4): runs named ``{label}_s{seed}``.

    ``methods``: method names (``["hl", "ls", "colam"]``), or ``(label,
    overrides)`` pairs / a ``{label: overrides}`` dict for variants
    (``{"ls0.2": {"method": "ls", "ls_eps": 0.2}}``; without ``"method"`` in
    the overrides the label is the method). The label is stored in
    ``cfg.extra["sweep"]["label"]`` and becomes the ``label`` column of the
    results, which ``methods_table`` groups by. ``base.stages`` is kept for
    ``colam`` only; other methods use their own default number of stages
    (Label Refinery needs 2) unless the overrides set ``stages``.
    """
    base = _as_config(base)
    if isinstance(methods, Mapping):
        items = list(methods.items())
    else:
        items = [(m, {}) if isinstance(m, str) else tuple(m) for m in methods]
    if not items:
        raise ConfigError("methods", list(items), "a non-empty list of methods")
    _check_unique("methods", [lab for lab, _ in items])
    seeds = _seeds(base, seeds)
    if not seeds:
        raise ConfigError("seeds", seeds, "a non-empty list of integers >= 0")
    field_names = {f.name for f in fields(Config)}
    out: dict[str, Config] = {}
    for label, overrides in items:
        check_name(label)
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - field_names)
        if unknown:
            raise ConfigError(unknown[0], overrides[unknown[0]], "known options: " + ", ".join(sorted(field_names)))
        method = overrides.pop("method", label)
        stages = overrides.pop("stages", base.stages if method == "colam" else None)
        for s in seeds:
            cfg = base.replace(method=method, stages=stages, seed=s, name=None, extra=_with_tags(base, label=label))
            out[f"{label}_s{s}"] = cfg.replace(**overrides)
    return out


# ----------------------------------------------------------------------------- tables
def _order(values: Iterable) -> list:
    """Distinct values: numbers ascending first, then the others in order of first appearance."""
    seen = []
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            continue
        if not any(v == s and type(v) is type(s) for s in seen):
            seen.append(v)
    nums = sorted(v for v in seen if isinstance(v, numbers.Real) and not isinstance(v, bool))
    return nums + [v for v in seen if not (isinstance(v, numbers.Real) and not isinstance(v, bool))]


def grid_table(results: pd.DataFrame, index: str = "interval", columns: str = "peer_samples",
               value: str = "test_acc", agg: str = "mean", scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Pivot of sweep results: rows ``index``, columns ``columns``, cells ``value`` (paper Fig. 4a as a table).

    Rows and columns are ordered numbers ascending, then other values
    (``"all"``) in order of appearance. Several runs in one cell (seeds) are
    aggregated with ``agg`` (any pandas aggregation, e.g. ``"mean"``, ``"std"``,
    ``"count"``), or ``agg="mean ± std"`` for formatted strings like the
    paper's tables (``analysis.results_table``; ``scale=100, decimals=2`` for
    percentages). Unfinished runs have NaN values: a cell with none finished is
    NaN (``"-"`` when formatted).
    """
    df = pd.DataFrame(results)
    missing = [c for c in (index, columns, value) if c not in df.columns]
    if missing:
        raise KeyError(f"results have no column(s) {missing}")
    rows, cols = _order(df[index]), _order(df[columns])
    if agg == "mean ± std":
        t = results_table(df, metric=value, by=[index, columns], scale=scale, decimals=decimals)
        cells = {(r, c): v for r, c, v in zip(t[index], t[columns], t["mean ± std"])}
        fill: Any = "-"
    else:
        d = df[[index, columns]].copy()
        d["_v"] = pd.to_numeric(df[value], errors="coerce") * float(scale)
        g = d.groupby([index, columns], sort=False, dropna=False)["_v"].agg(agg)
        cells = dict(g.items())
        fill = float("nan")
    out = pd.DataFrame([[cells.get((r, c), fill) for c in cols] for r in rows], index=pd.Index(rows, name=index),
                       columns=pd.Index(cols, name=columns))
    if agg != "mean ± std":
        out = out.astype(float)
    return out


def temperature_table(results: pd.DataFrame, metrics: Sequence[str] = ("test_acc", "test_ece"), by: str = "T",
                      scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds of ``metrics`` per temperature, sorted by T.

    Columns: ``T``, ``n`` (finished runs), and per metric ``{m}_mean``,
    ``{m}_std`` (sample std, ddof=1; NaN for one run) and ``{m}`` (formatted
    ``"mean ± std"``, see ``analysis.results_table``).
    """
    df = pd.DataFrame(results)
    if isinstance(metrics, str):
        metrics = [metrics]
    out = None
    for m in metrics:
        t = results_table(df, metric=m, by=by, scale=scale, decimals=decimals)
        t = t.rename(columns={"mean": f"{m}_mean", "std": f"{m}_std", "mean ± std": m})
        if out is None:
            out = t
        else:
            out = out.merge(t.drop(columns="n"), on=by, how="outer")
    cols = [by, "n"] + [c for m in metrics for c in (f"{m}_mean", f"{m}_std", m)]
    return out[cols].sort_values(by, kind="stable").reset_index(drop=True)


def methods_table(results: pd.DataFrame, metric: str = "test_acc", by: str | Sequence[str] | None = None,
                  scale: float = 1.0, decimals: int = 4) -> pd.DataFrame:
    """Mean ± std over seeds per method, like the paper's Tables 1-4 (``analysis.results_table``).

    ``by`` defaults to ``label`` (the method, or the variant label of
    ``methods_seeds``), with ``dataset`` first when the results hold several
    data sets. Unfinished runs do not count (``n`` is the number of finished
    runs; a method with none shows ``"-"``). ``scale=100, decimals=2`` gives
    paper-style percentages. For a method x dataset grid:
    ``table.pivot(index="label", columns="dataset", values="mean ± std")``.
    """
    df = pd.DataFrame(results)
    if by is None:
        key = "label" if "label" in df.columns else "method"
        by = ["dataset", key] if "dataset" in df.columns and df["dataset"].nunique() > 1 else key
    return results_table(df, metric=metric, by=by, scale=scale, decimals=decimals)


# ----------------------------------------------------------------------------- expected accuracy (Fig. 1b)
def expected_accuracy(run: Run | str | Path, stages: Sequence[int | str] | None = None, out: str | Path | None = None,
                      epochs: int | None = None, progress: bool = True, include_hard: bool = False,
                      max_runs: int | None = None, listeners: Iterable[Callable] = (),
                      **overrides) -> pd.DataFrame:
    """Expected accuracy of a run's soft-label checkpoints (paper Fig. 1b).

    For every soft-label update ``stage_K`` of ``run`` (``run.soft_label_keys()``;
    or only ``stages``, given as K or ``"stage_K"``), a fresh model is trained
    from scratch on the frozen labels of stage K: ``Config(method="fixed",
    fixed_targets="<run>:stage_K", T=<run's T>, stages=1)`` with every other
    option (dataset, model, seed, lr, schedule, ...) from the run's
    configuration, ``epochs`` from the run unless given, and then ``overrides``
    (any Config option, e.g. ``device="cpu"``, ``lr=0.1``). The targets are the
    labels as learned (``soft_labels.npz``), mixed with one-hot labels by the
    run's ``hard_weight`` exactly as its later stages trained on them. With
    ``include_hard`` a hard-label reference (method ``hl``, same options) is
    trained first as stage 0.

    The trainings form a ``Sweep`` in ``out`` (default ``<run>/expected``), one
    folder per stage (``stage_K``; ``hard`` for the reference): finished ones
    are skipped, a partial one resumes, so calling this again after an
    interruption completes the table. ``max_runs`` and ``listeners`` are passed
    to ``Sweep.run``; ``progress`` shows tqdm bars. A stop request (Ctrl-C once)
    returns the table so far (unfinished rows have NaN metrics).

    Returns one row per stage, in stage order: stage (0 for hard labels),
    source (the ``fixed_targets`` spec, or ``"hard labels"``), own_mass (mean
    own-class mass of the target labels; 1 for hard labels), test_acc,
    test_ece, best_test_acc, train_seconds (NaN until finished),
    parent_test_acc (test accuracy of ``run`` itself at the end of stage K,
    where its history has it), run_dir, finished.
    """
    parent = run if isinstance(run, Run) else load_run(run)
    parent_path = Path(parent.path).resolve()
    available = parent.soft_label_keys()
    if not available:
        raise ValueError(f"{parent.path} has no soft labels (soft_labels.npz): expected accuracy needs a run "
                         "that learned soft labels (method colam, with more than one stage, trained past stage 1)")
    keys = available if stages is None else [stage_key(s) for s in stages]
    missing = [k for k in keys if k not in available]
    if missing:
        raise KeyError(f"{parent.path} has no soft labels {missing[0]!r}; available: {', '.join(available)}")
    keys = sorted(dict.fromkeys(keys), key=stage_number)

    base = Config.from_dict(parent.config)
    field_names = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]], "known options: " + ", ".join(sorted(field_names)))
    common = dict(stages=None, epochs=base.epochs if epochs is None else epochs, name=None)
    configs: dict[str, Config] = {}
    if include_hard:
        configs["hard"] = base.replace(method="hl", fixed_targets=None, extra={"sweep": {"stage": 0}},
                                       **common).replace(**overrides)
    for k in keys:
        configs[k] = base.replace(method="fixed", fixed_targets=f"{parent_path}:{k}", T=base.T,
                                  extra={"sweep": {"stage": stage_number(k)}}, **common).replace(**overrides)

    sweep = Sweep(Path(out) if out is not None else parent_path / "expected", configs)
    res = sweep.run(progress=progress, max_runs=max_runs, listeners=listeners).set_index("name")

    hist = parent.history
    soft = parent.all_soft_labels()
    rows = []
    for name, cfg in configs.items():
        r = res.loc[name]
        K = int(_tags(cfg)["stage"])
        if K == 0:
            source, own, parent_acc = "hard labels", 1.0, float("nan")
        else:
            source, own = cfg.fixed_targets, float(np.mean(np.diag(soft[name])))
            h = hist[hist["stage"] == K] if len(hist) else hist
            parent_acc = float(h["test_acc"].iloc[-1]) if len(h) else float("nan")
        rows.append({"stage": K, "source": source, "own_mass": own, "test_acc": r["test_acc"],
                     "test_ece": r["test_ece"], "best_test_acc": r["best_test_acc"],
                     "train_seconds": r["train_seconds"], "parent_test_acc": parent_acc,
                     "run_dir": r["run_dir"], "finished": bool(r["finished"])})
    return pd.DataFrame(rows, columns=["stage", "source", "own_mass", "test_acc", "test_ece", "best_test_acc",
                                       "train_seconds", "parent_test_acc", "run_dir", "finished"])
