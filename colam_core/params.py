"""Validation of notebook (papermill) parameters, through the same `Config.validate` the CLI uses.

A notebook's first code cell after its parameters calls `notebook_config(...)`:
`papermill ... -p T -1` or `-p method foo` then fails in that cell with a
`ConfigError` naming the parameter and the allowed values, before any data is
loaded.
"""
from __future__ import annotations

import ast
import difflib
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import Config, ConfigError, validate_params

INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects after the parameters cell


def check_notebook_parameters(namespace: Mapping[str, Any]) -> set[str]:
    """The names passed with papermill's -p / -r (its injected "# Parameters" cell, read from IPython's input
    history `In`), after refusing any that the notebook's parameters cell does not declare: a misspelt
    `-p temprature 2` would otherwise only warn and train with the default. Empty outside papermill."""
    cells = [c for c in namespace.get("In", ()) if isinstance(c, str) and c.strip()]
    injected = [i for i, c in enumerate(cells) if c.lstrip().splitlines()[0].strip() == INJECTED_HEADER]
    if not injected:
        return set()
    i = injected[-1]
    passed = _assigned(cells[i])
    declared = set().union(*map(_assigned, cells[:i])) if i else set()
    for name in sorted(passed - declared):
        close = difflib.get_close_matches(name, sorted(declared), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(name, namespace.get(name),
                          f"{hint}a parameter of this notebook: {', '.join(sorted(declared))}")
    return passed


def _assigned(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def quick_values(passed: set[str], quick: bool, **pairs: tuple[Any, Any]) -> list[Any]:
    """For each ``name=(value, quick_value)``: the value, or in quick mode the quick value, unless the value was
    passed with -p (a quick run never silently replaces what the user asked for)."""
    check_bool("quick", quick)
    return [v if not quick or name in passed else q for name, (v, q) in pairs.items()]


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """A whole number (12.0 accepted, True refused) in [lo, hi]."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo) or (
            hi is not None and value > hi):
        rng = "" if lo is None and hi is None else f" >= {lo}" if hi is None else f" from {lo} to {hi}"
        raise ConfigError(name, value, f"a whole number{rng}")
    return value


def check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(name, value, "a finite number > 0")
    return float(value)


def check_list(name: str, value: Any, item: Callable[[str, Any], Any]) -> list:
    """A non-empty list (a single value is not a list: `-p intervals 3` means `-p intervals "[3]"`), each item
    checked by ``item(name, v)``."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(name, value, "a non-empty list, e.g. [3, 6] (papermill: -y \"NAME: [3, 6]\")")
    return [item(f"{name}[{i}]", v) for i, v in enumerate(value)]


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "True or False")
    return value


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    if value not in allowed:
        raise ConfigError(name, value, ", ".join(map(str, allowed)))
    return value


def check_path(name: str, value: Any, must_exist: bool = False, run_dir: bool = False) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise ConfigError(name, value, "a non-empty path")
    p = Path(value)
    if must_exist and not p.exists():
        raise ConfigError(name, value, "an existing path")
    if run_dir and not (p / "config.json").is_file():
        raise ConfigError(name, value, "a run directory (a folder with config.json written by training)")
    return p


def check_classes(name: str, value: Any, num_classes: int | None = None, count: int | None = 3) -> list[int]:
    ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ok = ok and len(set(value)) == len(value) and (count is None or len(value) == count)
    ok = ok and all(0 <= v < (num_classes if num_classes is not None else 10**9) for v in value)
    if not ok:
        what = f"{count} distinct" if count else "distinct"
        rng = f" in 0..{num_classes - 1}" if num_classes is not None else " (>= 0)"
        raise ConfigError(name, value, f"a list of {what} class indices{rng}")
    return list(value)


def notebook_config(params: Mapping[str, Any], quick: bool = False,
                    quick_overrides: Mapping[str, Any] | None = None) -> Config:
    """Build and validate a Config from notebook parameters.

    `params` holds Config options by name, as Python values or papermill strings (`config.validate_params`:
    unknown names are refused, naming them and the closest option); with `quick`,
    `quick_overrides` replaces options to make a smoke run. Raises ConfigError before any data is loaded.
    """
    check_bool("quick", quick)
    cfg = validate_params(params)  # the user's own values first, so errors name what the user passed
    if quick and quick_overrides:
        cfg = cfg.replace(**dict(quick_overrides))
        cfg.validate()
    return cfg


def resolve_dataset(name: str) -> str:
    """`auto`: Fashion-MNIST when its files are found (e.g. Debian's dataset-fashion-mnist), else digits."""
    from .data import DATASETS, DataError, check_dataset_args
    if name != "auto":
        return check_choice("dataset", name, ("auto",) + tuple(DATASETS))
    try:
        check_dataset_args("fashion_mnist")
        return "fashion_mnist"
    except DataError:
        return "digits"


def check_seeds(name: str, value: Any) -> list[int]:
    """A non-empty list of distinct seeds (integers >= 0), e.g. a teaching notebook's ``seeds = [0, 1, 2]``."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and len(set(value)) == len(value)
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    if not ok:
        raise ConfigError(name, value, "a non-empty list of distinct seeds (integers >= 0), e.g. [0, 1, 2]")
    return list(value)
