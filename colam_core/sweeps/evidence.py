"""Does COLAM work here? The grid behind docs/RESULTS.md: HL, LS, COLAM as the paper writes it and the COLAM
extensions that prevent class erasure, at short and long stages, over seeds, with paired differences to HL.

    configs = evidence_configs("digits", seeds=range(5), epochs=12)
    sweep = Sweep("runs/evidence/digits", configs); sweep.run()
    rows = evidence_rows(sweep)            # one row per run: accuracy, ECE both ways, erasures, template ratio
    table = evidence_table(rows)           # per setting: mean ± std, paired difference to HL with a 95% CI

`notebooks/06_does_colam_work_here.ipynb` runs it and writes the Markdown (`results_markdown`).
"""
from __future__ import annotations

import math
import os
import platform
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..analysis import predict_probs, template_distances_for_run
from ..config import Config
from ..errors import ConfigError
from ..metrics import ECE_LABELS, expected_calibration_error
from ..runs import Run, stage_number
from .naming import _tags
from .sweep import Sweep

#: the settings compared, as Config options; every COLAM setting runs at each staging of STAGINGS
VARIANTS: dict[str, dict] = {
    "HL": {"method": "hl"},
    "LS": {"method": "ls"},
    "COLAM": {"method": "colam"},                                         # the paper's algorithm, as written
    "COLAM+correct": {"method": "colam", "peer_filter": "correct"},       # only correctly classified peers
    "COLAM+floor": {"method": "colam", "own_floor": 0.5},                 # own-class mass at least 0.5
    "COLAM+T1": {"method": "colam", "stage1_T": 1.0},                     # stage 1 trained exactly as HL
    "COLAM+correct+T1": {"method": "colam", "peer_filter": "correct", "stage1_T": 1.0},
}
#: staging name -> number of stages m (epochs per stage t = epochs / m)
STAGINGS: dict[str, int] = {"short": 4, "long": 2}
#: (a class, a similar class, a different class) whose template distances the paper's structure claim is about
TEMPLATE_TRIPLES: dict[str, tuple[str, str, str]] = {"fashion_mnist": ("Shirt", "Pullover", "Sneaker")}


def evidence_configs(dataset: str, seeds: Iterable[int], epochs: int, variants: Sequence[str] | None = None,
                     stagings: Mapping[str, int] | None = None, **options) -> dict[str, Config]:
    """``{name: Config}``: every variant x staging (COLAM only; HL and LS train one stage) x seed, seed by seed
    (an interrupted grid has whole seeds first).

    ``variants``: names of VARIANTS (default all), each at every staging, or ``"NAME@staging"`` for one staging.
    Names read ``COLAM+correct_short_s0``; ``options`` (any Config option: model, batch_size, train_limit, ...)
    apply to every run. Every config is validated here, before anything trains."""
    stagings = dict(STAGINGS if stagings is None else stagings)
    plan: list[tuple[str, list[str]]] = []
    for v in (list(VARIANTS) if variants is None else list(variants)):
        name, _, only = str(v).partition("@")
        if name not in VARIANTS:
            raise ConfigError("variants", v, ", ".join(VARIANTS) + " (optionally NAME@" + "|".join(stagings) + ")")
        if only and only not in stagings:
            raise ConfigError("variants", v, f"NAME@staging with staging one of {', '.join(stagings)}")
        colam = VARIANTS[name]["method"] == "colam"
        plan.append((name, ([only] if only else list(stagings)) if colam else ["one"]))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", seeds, "at least one seed")
    out: dict[str, Config] = {}
    for seed in seeds:
        for name, staging_names in plan:
            for staging in staging_names:
                run = f"{name}_{staging}_s{seed}" if staging != "one" else f"{name}_s{seed}"
                tags = {"sweep": {"label": name, "staging": staging}}
                out[run] = Config(dataset=dataset, epochs=epochs, stages=stagings.get(staging, 1), seed=seed,
                                  extra=tags, **{**options, **VARIANTS[name]}).validate()
    return out


def _class_names(run: Run) -> list[str]:
    return list(run.class_names)


def evidence_rows(sweep: Sweep) -> pd.DataFrame:
    """One row per finished run of an evidence sweep (reads the run directories; evaluates each final model once).

    Columns: name, label (the variant), staging, seed, stages, epochs, test_acc, ece_T (ECE of softmax(z / T), the
    training temperature, as summary.json reports it), ece_1 (of softmax(z)), min_class_acc, erased (classes
    erased at the last update, by name), erased_acc (their mean test accuracy), erased_by_update
    ("stage_1: -; stage_2: Coat>Shirt"), own_mass_last (mean own-class mass of the last update), template_ratio
    (normalized template distance similar/different, for the data sets in TEMPLATE_TRIPLES), run_dir."""
    rows = []
    for name, cfg in sweep.configs.items():
        if sweep.state(name) != "finished":
            continue
        run = Run(sweep.run_dir(name))
        names = _class_names(run)
        summary = run.summary or {}
        p, y = predict_probs(run, temperature=1.0)
        pred = p.argmax(1)
        per_class = np.array([np.mean(pred[y == c] == c) if np.any(y == c) else np.nan for c in range(len(names))])
        health = summary.get("soft_label_health", {})
        last = max(health, key=stage_number) if health else None
        erased = health[last]["erased_classes"] if last else []
        takers = {e["class"]: e["taken_by"] for e in summary.get("soft_label_erasures", {}).get(last, [])}
        by_update = "; ".join(
            f"{k}: " + (", ".join(f"{names[e['class']]}>{names[e['taken_by']]}" for e in v) or "-")
            for k, v in sorted(summary.get("soft_label_erasures", {}).items(), key=lambda kv: stage_number(kv[0])))
        row = {"name": name, "label": _tags(cfg).get("label", cfg.method), "staging": _tags(cfg).get("staging"),
               "seed": cfg.seed, "stages": cfg.num_stages, "epochs": cfg.epochs, "test_acc": summary.get("test_acc"),
               "ece_T": summary.get("test_ece"), "ece_1": expected_calibration_error(p, y),
               "min_class_acc": float(np.nanmin(per_class)),
               "erased": ", ".join(f"{names[c]}>{names[takers[c]]}" if c in takers else names[c] for c in erased),
               "n_erased": len(erased), "erased_acc": float(np.mean(per_class[erased])) if erased else np.nan,
               "n_erased_any": sum(len(h["erased_classes"]) for h in health.values()),
               "erased_by_update": by_update or "-",
               "own_mass_last": health[last]["own_mass_mean"] if last else np.nan,
               "template_ratio": _template_ratio(run, names), "run_dir": str(run.path)}
        rows.append(row)
    return pd.DataFrame(rows)


def _template_ratio(run: Run, names: list[str]) -> float:
    triple = TEMPLATE_TRIPLES.get(run.config.get("dataset"))
    if not triple or not all(n in names for n in triple):
        return float("nan")
    a, b, c = (names.index(n) for n in triple)
    d = template_distances_for_run(run, classes=[a, b, c], names=False).to_numpy()
    return float(d[0, 1] / d[0, 2])


def paired_difference(values: Sequence[float], reference: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of the per-seed differences values - reference, its sample std and a t confidence interval."""
    from scipy import stats
    d = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0, "wins": 0}
    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "wins": int((d > 0).sum())}


def evidence_table(rows: pd.DataFrame, reference: str = "HL") -> pd.DataFrame:
    """Per (label, staging): n seeds, accuracy mean ± std, the paired difference to `reference` per seed with its
    95% CI and the seeds that beat it, ECE both ways, the worst class's accuracy, erased classes per run at the
    last update, mean own-class mass, and the template ratio."""
    ref = rows[rows["label"] == reference].set_index("seed")["test_acc"]
    out = []
    for (label, staging), g in rows.groupby(["label", "staging"], sort=False, dropna=False):
        g = g.sort_values("seed")
        common = [s for s in g["seed"] if s in ref.index] if label != reference else []
        diff = paired_difference(g.set_index("seed").loc[common, "test_acc"], ref.loc[common]) if common else None
        out.append({
            "setting": label if staging in (None, "one") or pd.isna(staging) else f"{label} ({staging})",
            "label": label, "staging": staging, "seeds": len(g), "acc_mean": g["test_acc"].mean(),
            "acc_std": g["test_acc"].std(ddof=1), "diff_mean": diff["mean"] if diff else np.nan,
            "diff_low": diff["low"] if diff else np.nan, "diff_high": diff["high"] if diff else np.nan,
            "wins": diff["wins"] if diff else 0, "paired": diff["n"] if diff else 0,
            "ece_T": g["ece_T"].mean(), "ece_1": g["ece_1"].mean(), "min_class_acc": g["min_class_acc"].mean(),
            "erased_per_run": g["n_erased"].mean(), "erased_acc": g["erased_acc"].mean(),
            "erasures_any": int(g["n_erased_any"].sum()),
            "runs_with_erasure": int((g["n_erased_any"] > 0).sum()),
            "own_mass_last": g["own_mass_last"].mean(), "template_ratio": g["template_ratio"].mean(),
        })
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- writing it down
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(df: pd.DataFrame, columns: Mapping[str, str]) -> str:
    """A GitHub Markdown table of `df`'s `columns` ({column: header})."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def summary_markdown(table: pd.DataFrame) -> str:
    t = table.copy()
    t["acc"] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(t["acc_mean"], t["acc_std"])]
    t["vs HL"] = [f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else _fmt(m)
                  for m, lo, hi in zip(t["diff_mean"], t["diff_low"], t["diff_high"])]
    t["beats HL"] = [f"{w}/{n}" for w, n in zip(t["wins"], t["paired"])]
    return markdown_table(t, {"setting": "setting", "seeds": "seeds", "acc": "test acc (mean ± std)",
                              "vs HL": "paired diff. to HL [95% CI]", "beats HL": "seeds > HL",
                              "ece_T": ECE_LABELS["test_ece"], "ece_1": ECE_LABELS["test_ece_T1"],
                              "min_class_acc": "worst class acc",
                              "erased_per_run": "erased at last update / run", "erased_acc": "acc of erased",
                              "erasures_any": "erasures, all updates",
                              "own_mass_last": "own mass (last)", "template_ratio": "template ratio"})


def verdict(table: pd.DataFrame, dataset: str, reference: str = "HL") -> str:
    """Sentences written from the numbers: which settings beat or match `reference`, and what erased classes."""
    t = table[table["label"] != reference]
    ref = table[table["label"] == reference]
    if t.empty or ref.empty:
        return f"{dataset}: no comparison with {reference} (missing runs)."
    ref_acc = float(ref["acc_mean"].iloc[0])
    n_ref = int(ref["seeds"].iloc[0])
    parts = [f"On {dataset}, {reference} reached {ref_acc:.3f} (mean over {n_ref} seed{'s' * (n_ref != 1)})."]
    single = t[t["paired"] < 2]
    if len(single):
        parts.append("With one paired seed there is no interval: " + "; ".join(
            f"{r.setting} {r.diff_mean:+.3f}" for r in single.itertuples()) + " (one seed each).")
    t = t[t["paired"] >= 2]
    better = t[t["diff_low"] > 0]
    worse = t[t["diff_high"] < 0]
    tied = t[~t.index.isin(better.index) & ~t.index.isin(worse.index)]
    if len(better):
        parts.append("Better than HL with a 95% interval above zero: " + "; ".join(
            f"{r.setting} by {r.diff_mean:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]" for r in better.itertuples())
            + ".")
    elif len(t):
        parts.append("No setting beat HL with a 95% interval above zero.")
    if len(tied):
        parts.append("Not distinguishable from HL (the interval contains zero): " + "; ".join(
            f"{r.setting} ({r.diff_mean:+.3f})" for r in tied.itertuples()) + ".")
    if len(worse):
        parts.append("Worse than HL with a 95% interval below zero: " + "; ".join(
            f"{r.setting} by {r.diff_mean:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]" for r in worse.itertuples())
            + ".")
    others = table[table["label"] != reference]
    erasing = others[others["erased_per_run"] > 0]
    if len(erasing):
        parts.append("Classes were erased at the last update in: " + "; ".join(
            f"{r.setting} ({r.erased_per_run:.1f} per run, their test accuracy {_fmt(r.erased_acc, 2)})"
            for r in erasing.itertuples()) + ".")
    else:
        parts.append("No setting erased a class at its last update.")
    anywhere = others[others["erasures_any"] > 0]
    if len(anywhere):
        parts.append("Counting every update: " + "; ".join(
            f"{r.setting} erased {r.erasures_any} class label(s) in {r.runs_with_erasure} of {r.seeds} runs"
            for r in anywhere.itertuples()) + "; every other setting erased none at any update.")
    else:
        parts.append("No setting erased a class at any update.")
    return " ".join(parts)


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} on "
            f"{'cuda' if torch.cuda.is_available() else 'cpu'}, Python {platform.python_version()}")


__all__ = ["VARIANTS", "STAGINGS", "TEMPLATE_TRIPLES", "evidence_configs", "evidence_rows", "evidence_table",
           "paired_difference", "markdown_table", "summary_markdown", "verdict", "machine_description"]
