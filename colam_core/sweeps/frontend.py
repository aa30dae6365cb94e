"""What the notebooks (02, 05) and scripts call on top of a campaign: plan a spec or reopen its plan, train one entry
as ``colam sweep run ROOT --index I`` does, and say where the sweep stands (its table, or what is left and how to
run it).

    from colam_core import sweeps
    planned = sweeps.notebook_sweep("table2_cifar100", "runs/t2", data_root="/data")  # validated, nothing written
    name = planned.entry("preact_resnet34_colam_s0")                                  # or an index
    camp = planned.open()                   # writes ROOT/sweep.json once; later calls reopen it
    print(sweeps.describe_entry(camp, name))
    print(sweeps.train_entry(camp, name))   # trains or resumes it (skipped when finished or held elsewhere)
    print(sweeps.sweep_report(camp))        # the sweep's table when every entry is done, else what is left

Planning goes through ``expand`` with ``overrides`` exactly as ``colam sweep plan --set`` does, so a notebook's plan
is the one the CLI would write: the same names, validation and ``ROOT/sweep.json``, a folder holding a different
plan refused.
"""
from __future__ import annotations

import difflib
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import pandas as pd

from ..config import Config, coerce_params
from ..data import DataError, check_dataset_args
from ..errors import ConfigError, RunError
from ..metrics import ECE_LABELS
from ..params import check_bool, check_path
from ..training import Trainer, describe_estimate, estimate_duration
from .campaign import Campaign
from .evidence import markdown_table
from .spec import Plan, expand, load_spec, plan_difference, presets, write_plan
from .sweep import Sweep
from .tables import ECE_METRICS, labelled


# ----------------------------------------------------------------------------- planning
def resolve_spec(spec: Any, parameter: str = "spec") -> tuple[dict, str, str]:
    """A shipped spec by name (``colam sweep list``) or a YAML file: ``(spec, where, name)``; a bad value raises
    ``ConfigError`` naming ``parameter``."""
    found = presets()
    if isinstance(spec, str) and spec in found:
        loaded, where = load_spec(preset=spec)
        return loaded, where, spec
    if isinstance(spec, (str, Path)) and str(spec).endswith((".yaml", ".yml")) and Path(spec).is_file():
        loaded, where = load_spec(spec)
        return loaded, where, str(loaded.get("name") or Path(spec).stem)
    close = difflib.get_close_matches(str(spec), list(found), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(parameter, spec, f"{hint}a shipped spec ({', '.join(found)}) or a YAML spec file")


@dataclass
class SweepPlan:
    """A spec expanded and validated for ``root`` (nothing written yet): ``open()`` writes ``ROOT/sweep.json``
    unless the folder already holds this plan, and returns the ``Campaign``."""

    name: str
    where: str
    root: Path
    plan: Plan
    overrides: dict = field(default_factory=dict)
    note: str | None = None  # what was changed to make the plan possible here (a stand-in data set), if anything
    planned: bool = False    # ROOT already held this very plan

    def __len__(self) -> int:
        return len(self.plan.configs)

    @property
    def names(self) -> list[str]:
        return list(self.plan.configs)

    def entry(self, entry: Any, parameter: str = "entry") -> str:
        """The name of an entry given by name or by index (``colam sweep run ROOT --index I``)."""
        names = self.names
        if isinstance(entry, str) and entry in self.plan.configs:
            return entry
        if isinstance(entry, int) and not isinstance(entry, bool) and 0 <= entry < len(names):
            return names[entry]
        close = difflib.get_close_matches(str(entry), names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all; `colam sweep status ROOT` lists them)"
                                        if len(names) > 6 else "")
        raise ConfigError(parameter, entry, f"{hint}an entry of {self.name}: an index 0..{len(names) - 1} or a "
                                            f"name: {shown}")

    def describe(self) -> str:
        cost = self.plan.cost()
        models = ", ".join(f"{k} {v}" for k, v in cost["by_model"].items())
        dep = f", {cost['dependent']} of them after their parents" if cost["dependent"] else ""
        sets = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        text = (f"{self.name} ({self.where}{'; --set ' + sets if sets else ''}): {cost['runs']} runs{dep}, "
                f"{cost['epochs']} epochs in all ({models}); "
                f"{'planned before in' if self.planned else 'to be planned in'} {self.root}")
        return text + (f"\n{self.note}" if self.note else "")

    def open(self) -> Campaign:
        """Write ``ROOT/sweep.json`` (unless it already holds this plan) and return the ``Campaign``."""
        if not self.planned or not (self.root / "sweep.json").is_file():
            write_plan(self.plan, self.root)
            self.planned = True
        return Campaign(self.root)


def prepare_sweep(spec: Any, root: str | Path, overrides: Mapping[str, Any] | None = None, *,
                  parameter: str = "spec", stand_in: str | None = None) -> SweepPlan:
    """Expand ``spec`` (a shipped name, a YAML file, or a spec dict) for ``root`` with ``overrides`` for every entry
    (``colam sweep plan --set``) and check it against ``root``: every entry validated, a folder that holds a
    different plan or another run refused (``RunError``), nothing written.

    ``stand_in``: a data set to plan with instead when the spec's own (its base ``dataset``) is not found and
    neither ``data_root`` nor ``download`` is given (a smoke run on a machine without the data); ``note`` says so.
    """
    if isinstance(spec, Mapping):
        loaded, where, name = dict(spec), "spec", str(spec.get("name") or "spec")
    else:
        loaded, where, name = resolve_spec(spec, parameter)
    return _prepare(loaded, where, name, Path(root), overrides, stand_in)


def _prepare(loaded: dict, where: str, name: str, root: Path, overrides: Mapping[str, Any] | None,
             stand_in: str | None) -> SweepPlan:
    sets = coerce_params(dict(overrides or {}))
    note = None
    if stand_in is not None:
        base = {**coerce_params(dict(loaded.get("base") or {})), **sets}
        dataset = Config.from_dict(base).dataset
        if base.get("data_root") is None and not base.get("download"):
            try:
                check_dataset_args(dataset)
            except DataError:
                sets = {**sets, "dataset": stand_in, "augment": "auto"}
                note = (f"{dataset} was not found here (no data_root, no download), so this smoke run trains on "
                        f"{stand_in} instead; pass data_root (the folder holding the files) or download=True for "
                        f"{dataset} itself")
    plan = expand(loaded, root, source=where, overrides=sets)
    if root.exists() and not root.is_dir():
        raise RunError(f"{root} exists and is not a folder")
    diff = plan_difference(plan, root)
    if diff:
        raise RunError(f"{root} already holds a different plan ({diff}); nothing was written: pass the options it "
                       "was planned with, another folder, or plan it anew with `colam sweep plan ... --replace`")
    Sweep(root, plan.configs).check()  # run folders holding another configuration
    return SweepPlan(name, where, root, plan, dict(sets), note, planned=(root / "sweep.json").is_file())


def notebook_sweep(spec: Any, sweep_root: Any = None, *, data_root: Any = None, download: Any = False,
                   device: Any = "auto", quick: Any = False, quick_options: Mapping[str, Any] | None = None,
                   stand_in: str | None = None, parameter: str = "spec", folder_per_spec: bool = False,
                   table: str | None = None) -> SweepPlan:
    """A notebook's parameters checked and its sweep prepared (``prepare_sweep``), before anything trains.

    ``sweep_root``: where the sweep is planned (None: ``runs/<spec name>``, ``..._quick`` in quick mode;
    ``folder_per_spec``: ``sweep_root/<spec name>``). ``data_root``, ``download`` and ``device`` become overrides
    (``--set``) where they differ from their defaults; in ``quick`` mode ``quick_options`` are overrides too and
    ``stand_in`` replaces a data set that is not found; ``table``: the results table the spec must make (``grid``,
    ``temperature``, ``expected``: what a figure needs). Every bad value raises ``ConfigError`` naming it."""
    check_bool("quick", quick)
    check_bool("download", download)
    if data_root is not None:
        check_path("data_root", data_root)
    if device != "auto":
        try:
            Config(device=coerce_params({"device": device})["device"]).validate()
        except ConfigError as e:
            raise ConfigError("device", device, e.allowed) from None
    loaded, where, name = resolve_spec(spec, parameter)
    if sweep_root is None:
        root = Path("runs") / (name + ("_quick" if quick else ""))
    else:
        root = check_path("sweep_root", sweep_root)
        root = root / name if folder_per_spec else root
    overrides: dict[str, Any] = dict(quick_options or {}) if quick else {}
    if data_root is not None:
        overrides["data_root"] = str(data_root)
    if download:
        overrides["download"] = True
    if device != "auto":
        overrides["device"] = device
    planned = _prepare(loaded, where, name, root, overrides, stand_in if quick else None)
    if table is not None and planned.plan.meta.get("table") != table:
        raise ConfigError(parameter, spec, f"a spec whose results table is {table!r} ({name}'s is "
                                           f"{planned.plan.meta.get('table')!r})")
    return planned


# ----------------------------------------------------------------------------- one entry
def estimate_config(cfg: Config, epochs: int | None = None) -> dict:
    """``estimate_duration`` for ``cfg``, measured on a throw-away copy in a temporary folder (the run folder is
    untouched); ``epochs``: how many are left (default all). Method ``fixed`` is timed like ``hl`` (its parent's
    labels may not exist yet)."""
    if cfg.method == "fixed":
        cfg = cfg.replace(method="hl", fixed_targets=None)
    tmp = tempfile.mkdtemp(prefix="colam-estimate-")
    try:
        with Trainer(cfg, out=Path(tmp) / "run") as t:
            est = estimate_duration(t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if epochs is not None:
        est["remaining_epochs"] = epochs
        est["remaining_seconds"] = est["epoch_seconds"] * epochs
    return est


def describe_entry(camp: Campaign, name: str, estimate: bool = True, quick_hint: str = "-p quick True") -> str:
    """What entry ``name`` trains, where it stands, and (``estimate``, unless it is finished) how long the rest of it
    takes on this machine (a few batches timed on a copy)."""
    cfg = camp.sweep.configs[name]
    index = camp.names.index(name)
    state, note = camp.state(name)
    row = camp.sweep.status().set_index("name").loc[name]
    done, total = int(row["epochs_done"]), int(row["total_epochs"])
    stages = f" in {cfg.num_stages} stages of {cfg.stage_epochs}" if cfg.num_stages > 1 else ""
    method = cfg.method + (f" (T {cfg.T})" if cfg.method in ("colam", "fixed") else "")
    lines = [f"entry {index} of {len(camp)} in {camp.root}: {name}",
             f"  {cfg.dataset}, {cfg.model}{', pretrained' if cfg.pretrained else ''}, {method}, "
             f"{cfg.epochs} epochs{stages}, lr {cfg.lr} ({cfg.schedule}), batch {cfg.batch_size}, weight decay "
             f"{cfg.weight_decay}, seed {cfg.seed}" + (f", preset {cfg.preset}" if cfg.preset else "")
             + (f", {cfg.train_limit} training images" if cfg.train_limit else ""),
             f"  {state}: {done}/{total} epochs" + (f" ({note})" if note else "")]
    if state == "done":
        summary = entry_run(camp, name).summary
        metrics = [f"{label} {summary[k]:.4f}" for k, label in (("test_acc", "test accuracy"), ("test_ece", "ECE"),
                                                                 ("test_ece_T1", "ECE at T = 1"))
                   if isinstance(summary.get(k), (int, float))]
        seconds = summary.get("train_seconds")
        lines.append("  " + ", ".join(metrics) + (f"; trained in {duration_text(seconds)}"
                                                  if isinstance(seconds, (int, float)) else ""))
    if estimate and state != "done":
        try:
            lines.append("  " + describe_estimate(estimate_config(cfg, epochs=total - done), quick_hint))
        except Exception as e:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
            lines.append(f"  not timed here ({' '.join(str(e).split())[:200]})")
    return "\n".join(lines)


def duration_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def train_entry(camp: Campaign, name: str, progress: bool = True, listeners: Iterable[Callable] = ()) -> str:
    """Train (or resume) entry ``name`` exactly as ``colam sweep run ROOT --index I`` does (``Campaign.run_entry``:
    claimed, skipped when finished or held by another worker); returns the line the CLI prints. A failed or
    blocked entry raises ``RunError`` with that line (its error is kept for ``colam sweep status``)."""
    outcome, detail = camp.run_entry(name, progress=progress, listeners=listeners)
    line = f"{name}: {outcome}" + (f" ({detail})" if detail else "")
    index = camp.names.index(name)
    if outcome in ("failed", "blocked"):
        raise RunError(line)
    if outcome == "stopped":
        line += f"; resume by running this again, or: colam sweep run {_q(camp.root)} --index {index}"
    return line


def entry_run(camp: Campaign, name: str):
    """The entry's ``Run`` (``colam_core.load_run``) once its folder holds a run, else None."""
    from ..runs import load_run
    d = camp.sweep.run_dir(name)
    return load_run(d) if (d / "config.json").is_file() else None


# ----------------------------------------------------------------------------- the sweep
TITLES = {"methods": "test accuracy and ECE both ways (%), mean ± std over seeds; n = finished runs",
          "grid": "test accuracy (%): update interval t (rows) x peer samples k (columns), mean ± std over seeds",
          "temperature": "test accuracy and ECE both ways (%) per temperature T, mean ± std over seeds",
          "expected": "expected accuracy (Fig. 1b): a fresh model trained on the frozen soft labels of stage K "
                      "(accuracy and ECE both ways as fractions)"}

#: how the printed tables say which calibration is which (the labels of ``metrics.ECE_LABELS``)
CALIBRATION = ("ECE softmax(z/T): of softmax(z / T), T the run's output temperature (COLAM and fixed: its T; "
               "every other method: 1); ECE softmax(z): of softmax(z), the same for every method")


class Results(NamedTuple):
    """The sweep's table as ``colam sweep results`` prints it: ``text``, and the parts it is made of."""

    kind: str
    title: str
    long: pd.DataFrame    # one row per cell (with paper / diff columns where the spec gives the paper's numbers)
    shown: pd.DataFrame   # as printed (the first section)
    decimals: int
    text: str
    sections: tuple = ()  # (title, table) of every printed table: the grid kind adds one grid per ECE

    def markdown(self) -> str:
        parts = []
        for title, table in self.sections or ((self.title, self.shown),):
            text = _as_text(table.astype(object), self.decimals)
            parts.append(f"{title}\n\n" + markdown_table(text, {c: str(c) for c in text.columns}))
        return "\n\n".join(parts) + f"\n\n({CALIBRATION})\n"

    def csv_table(self) -> pd.DataFrame:
        """The long table with the ECE columns labelled (``--csv``)."""
        return labelled(self.long)


def _as_text(df: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """Floats with ``decimals`` digits (percent tables: 2; the expected table's fractions: 4)."""
    return df.map(lambda v: f"{v:.{decimals}f}" if isinstance(v, float) else v)


def _brief(df: pd.DataFrame) -> pd.DataFrame:
    """A table as printed: no separate mean / std columns, accuracy and the two ECEs labelled."""
    df = df.drop(columns=[c for c in df.columns if c in ("mean", "std") or str(c).endswith(("_mean", "_std"))])
    return labelled(df).rename(columns={"mean ± std": "test acc", "test_acc": "test acc"})


def _ece_grids(long: pd.DataFrame, display: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The grid of each ECE (rows and columns as the accuracy grid's), from the long table's formatted cells."""
    index, columns = display.index, display.columns
    out = []
    for m in ECE_METRICS:
        if m not in long.columns:
            continue
        cells = {(r, c): v for r, c, v in zip(long[index.name], long[columns.name], long[m])}
        grid = pd.DataFrame([[cells.get((r, c), "-") for c in columns] for r in index], index=index, columns=columns)
        out.append((f"{ECE_LABELS[m]} (%): update interval t (rows) x peer samples k (columns), mean ± std over "
                    "seeds", grid.reset_index()))
    return out


def sweep_results(camp: Campaign, kind: str | None = None) -> Results:
    """The sweep's table (``Campaign.table``) and the text ``colam sweep results ROOT`` prints: accuracy and the
    two ECEs, labelled; the grid kind adds one grid per ECE."""
    kind, long, display = camp.table(kind)
    shown = _brief(display.reset_index() if kind == "grid" else display)
    sections = [(TITLES[kind], shown)] + (_ece_grids(long, display) if kind == "grid" else [])
    decimals = 4 if kind == "expected" else 2
    lines = [f"{camp.root}: {TITLES[kind]}", _as_text(shown, decimals).to_string(index=False)]
    lines += [f"{title}\n{_as_text(grid, decimals).to_string(index=False)}" for title, grid in sections[1:]]
    lines.append(f"({CALIBRATION})")
    if kind == "grid" and "paper" in long.columns:
        lines.append("beside the paper's numbers:\n" + _as_text(_brief(long)).to_string(index=False))
    if kind != "expected" and "paper" not in long.columns:
        lines.append("(this spec gives no paper numbers, so there is no paper column)")
    return Results(kind, TITLES[kind], long, shown, decimals, "\n".join(lines), tuple(sections))


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def remaining_commands(camp: Campaign) -> list[str]:
    """The commands that run what is left of the sweep: a Slurm job array, or workers here; then status / results."""
    root = _q(camp.root.resolve())
    return [f"colam sweep submit {root} --executor slurm --partition PARTITION --gpus-per-task 1 --time 720"
            "    # a Slurm job array (submitit)",
            f"colam sweep run {root} --worker    # or: workers on this machine, one per GPU, as many as you like",
            f"colam sweep status {root}    # then, when every entry is done: colam sweep results {root}"]


def train_sweep(camp: Campaign, progress: bool = True, listeners: Iterable[Callable] = ()) -> str:
    """Train what is left of the sweep in this process, as ``colam sweep run ROOT --worker`` does (``Campaign.work``:
    finished entries and entries another worker holds are skipped, a partial one resumes, children wait for their
    parents); returns one line saying what happened."""
    counts = camp.work(progress=progress, listeners=listeners, poll=1.0)
    failed = counts["failed"] + counts["blocked"]
    line = f"{camp.root}: {counts['trained']} entries trained here, {failed} failed"
    if failed:
        line += f" (their errors: colam sweep status {_q(camp.root)})"
    if counts["stopped"]:
        line += f"; stopped: run this again to resume, or colam sweep run {_q(camp.root)} --worker"
    return line


def sweep_report(camp: Campaign, kind: str | None = None, table: bool = True) -> str:
    """The sweep's table (``sweep_results(...).text``; with ``table=False`` one line) when every entry is done; else
    how many are, and the commands that run the rest."""
    st = camp.status()
    counts = {s: int((st["state"] == s).sum()) for s in ("done", "running", "pending", "failed")}
    if counts["done"] == len(st):
        return sweep_results(camp, kind).text if table else f"all {len(st)} entries of {camp.root} are done"
    head = (f"{counts['done']} of {len(st)} entries of {camp.root} are done ({counts['running']} running, "
            f"{counts['pending']} pending, {counts['failed']} failed); the sweep's table is shown when all are. "
            "To run the rest:")
    return head + "\n" + "\n".join("  " + c for c in remaining_commands(camp))


__all__ = ["SweepPlan", "prepare_sweep", "notebook_sweep", "resolve_spec", "estimate_config", "describe_entry",
           "train_entry", "train_sweep", "entry_run", "sweep_results", "Results", "sweep_report", "remaining_commands", "TITLES"]
