"""Validation of notebook (papermill) parameters, through the same `Config.validate` the CLI uses.

A notebook's first code cell after its parameters calls `notebook_config(...)`:
`papermill ... -p T -1` or `-p method foo` then fails in that cell with a
`ConfigError` naming the parameter and the allowed values, before any data is
loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import Config, ConfigError, validate_params

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
