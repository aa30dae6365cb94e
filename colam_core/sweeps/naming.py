"""Run names and the config helpers every part of the sweeps package shares.

``check_name`` (filesystem-safe, unique ignoring case), the names derived
from the options that differ between configs, and the parameters and tags a
results row carries (``CORE_PARAMS``, ``METRICS``, ``cfg.extra["sweep"]``).
"""
from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any, Mapping, Sequence

from ..config import Config
from ..errors import ConfigError
from ..runs import FINGERPRINT_EXCLUDED

#: Parameters every results row carries (``stages`` resolved to the method's default,
#: ``interval`` = epochs per stage ``t``), whatever the sweep varies.
CORE_PARAMS = ("dataset", "model", "method", "label", "seed", "epochs", "stages", "interval", "T", "peer_samples")
#: Metrics copied from each run's ``summary.json`` (NaN while the run is not finished); calibration both ways:
#: ``test_ece`` of softmax(z / T) at the method's output temperature, ``test_ece_T1`` of softmax(z).
METRICS = ("test_acc", "test_ece", "test_ece_T1", "best_test_acc", "train_seconds")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
_NAME_MAX = 128
_NAME_ALLOWED = ("letters, digits and . _ + = - (starting with a letter or digit, at most "
                 f"{_NAME_MAX} characters, unique ignoring case)")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}
# options that never change what a run computes, so never count as "varied"
_NOT_PARAMS = set(FINGERPRINT_EXCLUDED)


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
    """The same ConfigError (option, value) with the sweep run it belongs to appended to `allowed`
    (and kept as ``.run``, with the original text as ``.bare_allowed``, for messages that name the run first)."""
    if name is None:
        return e
    out = ConfigError(e.option, e.value, f"{e.allowed} (sweep run {name!r})")
    out.run, out.bare_allowed = name, getattr(e, "bare_allowed", e.allowed)
    return out


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


def _check_options(overrides: Mapping) -> None:
    """Raise ``ConfigError`` on the first key of ``overrides`` that is not a Config option."""
    field_names = {f.name for f in fields(Config)}
    unknown = sorted(set(overrides) - field_names)
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]], "known options: " + ", ".join(sorted(field_names)))
