"""Grid builders: ``{name: Config}`` dicts for the paper's Fig. 4a/4b and Tables 1-4, mergeable with ``{**a, **b}``."""
from __future__ import annotations

import numbers
import warnings
from typing import Mapping, Sequence

from ..config import Config
from ..errors import ConfigError
from .naming import _as_config, _check_options, _tags, check_name


def _check_unique(option: str, values: Sequence) -> list:
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__") or not hasattr(values, "__len__") \
            or len(values) == 0:  # a single value (papermill's -p intervals 3) is not a list of them
        raise ConfigError(option, values, "a non-empty list")
    vals = list(values)
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
    out: dict[str, Config] = {}
    for label, overrides in items:
        check_name(label)
        overrides = dict(overrides or {})
        _check_options(overrides)
        method = overrides.pop("method", label)
        stages = overrides.pop("stages", base.stages if method == "colam" else None)
        for s in seeds:
            cfg = base.replace(method=method, stages=stages, seed=s, name=None, extra=_with_tags(base, label=label))
            out[f"{label}_s{s}"] = cfg.replace(**overrides)
    return out
