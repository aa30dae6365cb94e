"""Sweep specs (YAML): a base configuration, grid axes, extra runs and dependencies, planned into ``ROOT/sweep.json``.

The minimal form::

    base: {dataset: digits, model: small_cnn, epochs: 4, stages: 2}
    grid: {method: [hl, colam], seed: [0, 1, 2]}

plans 6 entries named ``hl_s0 ... colam_s2``. Every key:

``base``
    options of every entry (any ``Config`` option, as ``colam train`` takes them; ``preset: paper`` applies the
    paper's recipe under the options given).
``grid``
    axes, each a non-empty list; the entries are their product, the first axis outermost. An axis is a
    ``Config`` option (``method``, ``model``, ``T``, ``peer_samples``, ``stages``, ``epochs``, ``seed``, ...), or
    ``interval`` (epochs per stage ``t``: ``stages = epochs // t``, paper Fig. 4a), or any other name whose values
    are all variants. A *variant* is a mapping of options with a ``label`` (``{label: ls0.2, method: ls, ls_eps:
    0.2}``): the label names it; on an option's axis it becomes the results' ``label`` column, on any other axis a
    column named after the axis (``data: [{label: cub200, data_root: ...}, ...]`` gives a ``data`` column, and the
    tables keep its values apart); an option's axis may mix plain values and variants (``method: [hl, ls,
    {label: colam, method: colam, stages: 4}]``).
``runs``
    more entries, ``{name: options}`` over ``base``.
``expected``
    the paper's Fig. 1b: for each parent entry (``parents``; default every COLAM entry with more than one stage)
    and each stage ``K`` whose soft labels it learns (``stages``; default all), an entry ``<parent>.stage_K`` that
    trains a fresh model on those frozen labels (method ``fixed``), with ``options`` over the parent's options and
    a hard-label reference ``<parent>.hard`` when ``hard: true``. Any entry can also name an entry's labels
    itself: ``fixed_targets: "@parent:stage_2"``. Such an entry depends on its parent: it never starts before
    the parent has written that stage.
``table``
    which results table ``colam sweep results`` prints: ``methods`` (mean ± std over seeds), ``grid``
    (interval x peer samples), ``temperature`` or ``expected``; default from the axes.
``paper``
    the paper's numbers, shown beside ours: a list of ``{<the table's key columns>: value, test_acc: number}``.
``name``, ``description``, ``notes``
    free text.

Overrides (``colam sweep plan --set OPTION=VALUE``, ``expand(..., overrides=)``) set an option for *every* entry:
over the base, over the runs and variants that set it, and a grid axis of that option becomes that one value
(``--set model=resnet20`` on a model x method x seed grid plans the methods x seeds of ResNet-20 only, named so).
A string value written with ``{OPTION}`` (``data_root: "{data_root}/cub200"``) is filled with the base's value of
that option after the overrides, so ``--set data_root=/data`` points such an entry at ``/data/cub200``; a template
whose option the base leaves unset is refused, naming it.

Entry names are the grid values joined by ``_``: ``method``, ``model``, ``dataset`` and variant labels as they
are, ``seed`` as ``s0``, ``T`` as ``T1.5``, ``peer_samples`` as ``k10``, ``stages`` as ``m4``, ``interval`` as
``t40``, ``epochs`` as ``e160``, any other option as ``option=value``. Every entry is validated with the code
``colam train`` uses (``Config.validate``) before anything is written; the first bad one raises ``ConfigError``
naming the entry and the option.
"""
from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..config import Config, coerce_params
from ..errors import ConfigError, RunError
from ..runs import atomic_write_text, split_soft_label_spec, stage_key, stage_number
from .expected import expected_configs
from .naming import _in_run, _tags, check_name
from .sweep import SWEEP_FILE, Sweep

SPECS_DIR = Path(__file__).with_name("specs")
SPEC_KEYS = ("name", "description", "notes", "base", "grid", "runs", "expected", "table", "paper")
TABLES = ("methods", "grid", "temperature", "expected")
_EXPECTED_KEYS = ("parents", "stages", "options", "hard")
_SHORT = {"seed": "s", "T": "T", "peer_samples": "k", "stages": "m", "interval": "t", "epochs": "e"}
_PLAIN = ("method", "model", "dataset")
_OPTIONS = {f.name for f in fields(Config)}


# ----------------------------------------------------------------------------- shipped specs
def presets() -> dict[str, Path]:
    """The shipped specs (``colam_core/sweeps/specs/*.yaml``) by name, sorted."""
    return {p.stem: p for p in sorted(SPECS_DIR.glob("*.yaml"))}


def preset_summary(path: Path) -> str:
    """The first comment line of a spec file (what it reproduces)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def load_spec(source: str | Path | None = None, preset: str | None = None) -> tuple[dict, str]:
    """Read a spec (a YAML file, or a shipped one by ``preset`` name): ``(spec dict, where it came from)``."""
    import yaml
    if (source is None) == (preset is None):
        raise ConfigError("spec", source if preset is None else preset, "a spec file or --preset NAME (one of them)")
    if preset is not None:
        found = presets()
        if preset not in found:
            raise ConfigError("preset", preset, ", ".join(found))
        path, where = found[preset], f"preset {preset}"
    else:
        path, where = Path(source), str(source)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError("spec", str(source), f"a readable YAML file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError("spec", str(source), f"valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(spec, dict):
        raise ConfigError("spec", str(source), "a YAML mapping with base, grid, ... (see `colam sweep plan --help`)")
    return spec, where


# ----------------------------------------------------------------------------- expansion
@dataclass
class Plan:
    """A spec expanded: ``configs`` (``{name: Config}``, parents before the entries that depend on them),
    ``depends`` (``{name: {"parent": name, "stage": "stage_K"}}``) and ``meta`` (table, paper, source, spec)."""

    configs: dict[str, Config]
    depends: dict[str, dict] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def cost(self) -> dict:
        """Runs, epochs in all, and epochs per (dataset, model): what the plan will cost before it runs."""
        by: dict[str, int] = {}
        for c in self.configs.values():
            key = f"{c.dataset}/{c.model}"
            by[key] = by.get(key, 0) + c.total_epochs
        return {"runs": len(self.configs), "epochs": sum(by.values()), "by_model": by,
                "dependent": len(self.depends)}


def _options(values: Any, entry: str, what: str) -> dict:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise _in_run(ConfigError(what, values, "a mapping of configuration options"), entry)
    try:
        return coerce_params(dict(values))
    except ConfigError as e:
        raise _in_run(e, entry) from None


def _part(axis: str, value: Any) -> str:
    if isinstance(value, Mapping):
        return str(value["label"])
    text = repr(float(value)) if axis == "T" and isinstance(value, (int, float)) else str(value)
    if axis in _PLAIN:
        return text
    if axis in _SHORT:
        return _SHORT[axis] + text
    return f"{axis}={text}"


_TEMPLATE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _templated(value: Any) -> bool:
    return isinstance(value, str) and any(m.group(1) in _OPTIONS for m in _TEMPLATE.finditer(value))


def _fill(option: str, value: Any, base: Mapping, entry: str) -> Any:
    """``value`` with every ``{OPTION}`` replaced by the base's value of OPTION (unknown names are left as written)."""
    if not _templated(value):
        return value

    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in _OPTIONS:
            return m.group(0)
        if base.get(name) is None:
            raise _in_run(ConfigError(option, value, f"a value whose {{{name}}} can be filled: give the spec's base "
                                                     f"a {name} (plan with --set {name}=...)"), entry)
        return str(base[name])
    return _TEMPLATE.sub(one, value)


def _over(values: Mapping, base: Mapping, overrides: Mapping, entry: str) -> dict:
    """Options of a variant, a run or an expected block with the templates filled, then the overrides (an override
    never replaces a value written as a template of it: that value follows the override)."""
    out = {}
    for k, v in values.items():
        if _templated(v):
            out[k] = _fill(k, v, base, entry)
        else:
            out[k] = overrides[k] if k in overrides else v
    return out


def _axes(grid: Any, base: Mapping | None = None, overrides: Mapping | None = None) -> list[tuple[str, list]]:
    """The grid's axes, with the overrides applied: an overridden option's axis becomes that one value, a variant's
    overridden option takes the override, templated values are filled from ``base``."""
    base, overrides = base or {}, overrides or {}
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise ConfigError("grid", grid, "a mapping of axis -> list of values, e.g. {method: [hl, colam]}")
    axes = []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{axis}", values, "a non-empty list of values")
        for v in values:
            if isinstance(v, Mapping) and not isinstance(v.get("label"), str):
                raise ConfigError(f"grid.{axis}", dict(v), "a mapping of options with a label: NAME")
        if not all(isinstance(v, Mapping) for v in values) and axis not in _OPTIONS and axis != "interval":
            coerce_params({axis: values[0]})  # unknown option: names the closest one
        if axis == "interval" and "stages" in overrides:
            raise ConfigError("stages", overrides["stages"], "no override of stages in a spec whose grid has an "
                                                             "interval axis (the interval sets the stages)")
        if axis in overrides:
            values = [overrides[axis]]
        else:
            values = [{**_over({k: x for k, x in v.items() if k != "label"}, base, overrides, str(v["label"])),
                       "label": v["label"]} if isinstance(v, Mapping) else _fill(axis, v, base, f"grid.{axis}")
                      for v in values]
        axes.append((axis, values))
    return axes


def _cell(base: dict, cell: list[tuple[str, Any]], name: str) -> tuple[dict, dict]:
    """The options and the tags of one grid cell."""
    opts, tags, interval = dict(base), {}, None
    for axis, value in cell:
        if isinstance(value, Mapping):
            variant = {k: v for k, v in value.items() if k != "label"}
            opts.update(_options(variant, name, f"grid.{axis}"))
            tags["label" if axis in _OPTIONS else axis] = value["label"]
        elif axis == "interval":
            interval = value
        else:
            opts.update(_options({axis: value}, name, axis))
    if interval is not None:
        epochs = _config(opts, {}, name).epochs  # after a preset (paper: 160, 240 for DenseNet)
        if (isinstance(interval, bool) or not isinstance(interval, int) or interval < 1 or not isinstance(epochs, int)
                or epochs % interval):
            raise _in_run(ConfigError("interval", interval, f"a divisor of epochs={epochs} (epochs per stage t: "
                                                            "stages = epochs / t)"), name)
        opts["stages"] = epochs // interval
        tags["interval"] = interval
    return opts, tags


def _config(opts: dict, tags: dict, name: str) -> Config:
    try:
        cfg = Config.from_dict(opts)
    except ConfigError as e:
        raise _in_run(e, name) from None
    except TypeError as e:
        raise _in_run(ConfigError("options", opts, str(e)), name) from None
    extra = dict(cfg.extra) if isinstance(cfg.extra, dict) else {}
    if tags:
        extra["sweep"] = {**_tags(cfg), **tags}
    return cfg.replace(extra=extra)


def _add(entries: list[tuple[str, Config]], name: str, cfg: Config) -> None:
    try:
        check_name(name)
    except ConfigError as e:
        raise _in_run(e, name) from None
    for other, _ in entries:
        if other.lower() == name.lower():
            raise _in_run(ConfigError("name", name, "a name no other entry has (two entries of the spec are named "
                                                    f"{name!r}; make their grid values or run names distinct)"), name)
    entries.append((name, cfg))


def _expected(spec_exp: Any, entries: list[tuple[str, Config]], root: Path, base: Mapping | None = None,
              overrides: Mapping | None = None) -> list[tuple[str, Config, dict]]:
    """The Fig. 1b entries: (name, Config, dependency)."""
    if spec_exp is None:
        return []
    blocks = spec_exp if isinstance(spec_exp, list) else [spec_exp]
    by_name = dict(entries)
    out = []
    for block in blocks:
        if not isinstance(block, Mapping) or set(block) - set(_EXPECTED_KEYS):
            raise ConfigError("expected", block, f"a mapping with keys among {', '.join(_EXPECTED_KEYS)}")
        parents = block.get("parents")
        if parents is None:
            parents = [n for n, c in entries if c.method == "colam" and c.num_stages > 1]
        elif isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not parents:
            raise ConfigError("expected.parents", parents, "a non-empty list of entry names (or COLAM entries with "
                                                           "more than one stage to default to)")
        hard = block.get("hard", False)
        if not isinstance(hard, bool):
            raise ConfigError("expected.hard", hard, "true or false")
        for p in parents:
            if p not in by_name:
                raise ConfigError("expected.parents", p, f"an entry of this spec: {', '.join(by_name)}")
            parent = by_name[p]
            learned = list(range(1, parent.num_stages))
            stages = block.get("stages", learned)
            if not isinstance(stages, list) or not stages or any(s not in learned for s in stages):
                raise _in_run(ConfigError("expected.stages", stages, f"stages whose soft labels entry {p!r} learns: "
                                                                     f"{learned or 'none (it has one stage)'}"), p)
            options = block.get("options")
            if isinstance(options, Mapping):
                options = _over(options, base or {}, overrides or {}, f"{p}.expected")
            options = _options(options, f"{p}.expected", "expected.options")
            keys = [stage_key(s) for s in stages]
            try:
                made = expected_configs(parent, root.resolve() / p, keys, include_hard=hard, **options)
            except ConfigError as e:
                raise _in_run(e, f"{p}.expected") from None
            for key, cfg in made.items():
                tags = {**_tags(cfg), "parent": p, "label": "hard labels" if key == "hard" else key}
                cfg = cfg.replace(extra={"sweep": tags})
                dep = {} if key == "hard" else {"parent": p, "stage": key}
                out.append((f"{p}.{key}", cfg, dep))
    return out


def _reference(name: str, cfg: Config, entries: dict[str, Config], root: Path) -> tuple[Config, dict]:
    """``fixed_targets: "@parent:stage_K"`` -> the parent's folder in ROOT, and the dependency."""
    ft = cfg.fixed_targets
    if not (isinstance(ft, str) and ft.startswith("@")):
        return cfg, {}
    parent, key = split_soft_label_spec(ft[1:])
    if parent not in entries or parent == name:
        others = ", ".join(n for n in entries if n != name) or "(none: the spec has no other entry)"
        raise _in_run(ConfigError("fixed_targets", ft, f"'@ENTRY:stage_K' naming another entry of this spec: {others}"),
                      name)
    learned = [stage_key(s) for s in range(1, entries[parent].num_stages)]
    if key not in learned:
        raise _in_run(ConfigError("fixed_targets", ft, f"a stage whose soft labels {parent!r} learns: "
                                                       f"{', '.join(learned) or 'none (it has one stage)'}"), name)
    tags = {**_tags(cfg), "parent": parent, "stage": stage_number(key)}
    return cfg.replace(fixed_targets=f"{root.resolve() / parent}:{key}", extra={**cfg.extra, "sweep": tags}), \
        {"parent": parent, "stage": key}


def _default_table(spec: dict, configs: dict[str, Config], depends: dict) -> str:
    axes = set((spec.get("grid") or {}).keys())
    if {"interval", "peer_samples"} & axes:
        return "grid"
    if "T" in axes and not ({"method", "model"} & axes):
        return "temperature"
    if depends and len(depends) >= len(configs) - len(depends):
        return "expected"
    return "methods"


def expand(spec: dict, root: str | Path, source: str = "spec", overrides: Mapping[str, Any] | None = None) -> Plan:
    """The entries of ``spec`` (see the module docstring), validated; raises ``ConfigError`` on the first bad one.

    ``overrides``: options for every entry (``colam sweep plan --set``; strings are parsed as the CLI parses them),
    over the base, the grid, the runs and the expected blocks (see the module docstring)."""
    root = Path(root)
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(unknown[0], spec[unknown[0]], "a spec key: " + ", ".join(SPEC_KEYS))
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError("set", overrides, "a mapping of option -> value (OPTION=VALUE)")
    sets = coerce_params(dict(overrides or {}))
    base = {**_options(spec.get("base"), "base", "base"), **sets}
    entries: list[tuple[str, Config]] = []
    axes = _axes(spec.get("grid"), base, sets)
    for cell in itertools.product(*[[(a, v) for v in vals] for a, vals in axes]) if axes else []:
        name = "_".join(_part(a, v) for a, v in cell)
        name = re.sub(r"[^A-Za-z0-9._+=-]", "-", name)
        opts, tags = _cell(base, list(cell), name)
        _add(entries, name, _config(opts, tags, name))
    runs = spec.get("runs") or {}
    if not isinstance(runs, Mapping):
        raise ConfigError("runs", runs, "a mapping of entry name -> options")
    for name, opts in runs.items():
        if isinstance(opts, Mapping):
            opts = _over(opts, base, sets, str(name))
        _add(entries, str(name), _config({**base, **_options(opts, str(name), "runs")}, {}, str(name)))
    if not entries:
        _add(entries, str(spec.get("name") or "run"), _config(base, {}, "run"))
    by_name = dict(entries)
    depends: dict[str, dict] = {}
    first, later = [], []
    for name, cfg in entries:
        cfg, dep = _reference(name, cfg, by_name, root)
        (later if dep else first).append((name, cfg))
        if dep:
            depends[name] = dep
    for name, cfg, dep in _expected(spec.get("expected"), entries, root, base, sets):
        _add(first + later, name, cfg)
        later.append((name, cfg))
        if dep:
            depends[name] = dep
    table = spec.get("table")
    configs = dict(first + later)
    if table is not None and table not in TABLES:
        raise ConfigError("table", table, ", ".join(TABLES))
    paper = spec.get("paper")
    if paper is not None and not (isinstance(paper, list) and all(isinstance(r, Mapping) for r in paper)):
        raise ConfigError("paper", paper, "a list of rows, each {<key columns>: value, test_acc: number}")
    Sweep(root, configs)  # Config.validate for every entry, the same code as `colam train`
    meta = {"name": spec.get("name"), "description": spec.get("description"), "source": source,
            "table": table or _default_table(spec, configs, depends), "paper": paper or [],
            "overrides": json.loads(json.dumps(sets, default=str)), "spec": json.loads(json.dumps(spec, default=str))}
    return Plan(configs, depends, meta)


# ----------------------------------------------------------------------------- writing the plan
def plan_difference(plan: Plan, root: str | Path) -> str | None:
    """How the plan in ``ROOT/sweep.json`` differs from ``plan`` (``entry 'x' differs: model 'a' there, 'b' here``),
    or None when ROOT holds no plan or this very one. Reads only."""
    p = Path(root) / SWEEP_FILE
    if not p.is_file():
        return None
    try:
        theirs = json.loads(p.read_text()).get("runs") or {}
    except (OSError, ValueError, AttributeError):
        theirs = {}
    configs = {n: (c if c.name else c.replace(name=n)) for n, c in plan.configs.items()}  # as Sweep names them
    ours = json.loads(json.dumps({n: c.to_dict() for n, c in configs.items()}, default=str))
    if theirs == ours:
        return None
    missing, extra = [n for n in ours if n not in theirs], [n for n in theirs if n not in ours]
    if missing or extra:
        return (f"{len(theirs)} entries there, {len(ours)} here; entry {(missing or extra)[0]!r} is "
                f"{'not there' if missing else 'not in this plan'}")
    name = next(n for n in ours if theirs[n] != ours[n])
    keys = [k for k in ours[name] if theirs[name].get(k) != ours[name][k]] or sorted(set(theirs[name]) - set(ours[name]))
    k = keys[0]
    return f"entry {name!r} differs: {k} {theirs[name].get(k)!r} there, {ours[name].get(k)!r} here"


def write_plan(plan: Plan, root: str | Path, replace: bool = False) -> Path:
    """Write ``ROOT/sweep.json``. A root that already holds a different plan is refused unless ``replace``
    (run folders that hold another configuration are refused either way, before anything is written)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunError(f"--out {root} exists and is not a folder")
    sweep = Sweep(root, plan.configs).check()
    p = root / SWEEP_FILE
    diff = None if replace else plan_difference(plan, root)
    if diff:
        raise RunError(f"{root} already holds a different plan ({diff}); nothing was written: choose another "
                       "--out, or pass --replace to plan it anew")
    data = {"format": 1, "runs": {n: c.to_dict() for n, c in sweep.configs.items()},
            "plan": {**plan.meta, "depends": plan.depends, "order": list(plan.configs), "created": time.time()}}
    atomic_write_text(p, json.dumps(data, indent=2, default=str))
    return p


__all__ = ["Plan", "expand", "write_plan", "plan_difference", "load_spec", "presets", "preset_summary", "TABLES", "SPECS_DIR"]
