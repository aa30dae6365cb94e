"""Label smoothing vs COLAM, in numbers and in words a student can follow.

Every sentence these functions write is built from numbers they computed on the runs they were given; nothing
is quoted from the paper as if measured here. The paper's claims are stated as claims, next to what the runs
measured, and the text says where they disagree, how many seeds stand behind each number, and when one seed
cannot support a claim at all.

``runs`` is ``{method label: run}`` (one seed) or ``{method label: [run, run, ...]}`` (one run per seed).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from colam_core import analysis
from colam_core.metrics import ECE_LABELS

#: |ratio - 1| up to this counts as "equidistant" (the templates of a, b and c about equally far apart)
EQUIDISTANT = 0.1


def pick_triple(soft: np.ndarray, class_names: Sequence[str] | None = None) -> tuple[int, int, int]:
    """Two classes that a COLAM soft-label matrix ties most closely (largest symmetric off-diagonal mass)
    and a third that is far from both: the analogue of the paper's palm tree / pine tree / man."""
    s = np.asarray(soft, dtype=float)
    sym = s + s.T
    np.fill_diagonal(sym, -np.inf)
    a, b = np.unravel_index(np.argmax(sym), sym.shape)
    link = sym[a] + sym[b]
    link[[a, b]] = np.inf
    c = int(np.argmin(link))
    return int(a), int(b), c


def default_triple(dataset: str, soft: np.ndarray | None = None) -> tuple[int, int, int]:
    """Shirt / Pullover / Sneaker on Fashion-MNIST (DESIGN.md), otherwise picked from the soft labels."""
    if dataset == "fashion_mnist":
        return (6, 2, 7)
    if soft is None:
        return (0, 1, 2)
    return pick_triple(soft)


def _seeded(runs: Mapping[str, Any]) -> dict[str, list]:
    """label -> list of runs (one per seed)."""
    return {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in runs.items()}


def _seed(run: Any) -> int:
    return int(run.config.get("seed", 0))


def structure_table(runs: Mapping[str, Any], classes: Sequence[int]) -> pd.DataFrame:
    """Normalized-template distances (paper Table 5) for the pairs (a,b), (a,c), (b,c), one row per run and seed
    (index: run label; column ``seed``)."""
    a, b, c = classes
    rows = []
    for name, group in _seeded(runs).items():
        for run in group:
            d = analysis.template_distances_for_run(run, classes=list(classes), names=False)
            ab, ac, bc = float(d.loc[a, b]), float(d.loc[a, c]), float(d.loc[b, c])
            rows.append({"run": name, "seed": _seed(run), "d(a,b)": ab, "d(a,c)": ac, "d(b,c)": bc,
                         "d(a,c) / d(a,b)": ac / ab})
    return pd.DataFrame(rows).set_index("run")


def results_summary(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Test accuracy, calibration both ways (columns ``ECE softmax(z/T)``, T the method's output temperature, and
    ``ECE softmax(z)``; NaN where an older summary lacks it), final own-class mass and erased classes of each run
    and seed."""
    rows = []
    for name, group in _seeded(runs).items():
        for run in group:
            s = run.summary or {}
            own = s.get("soft_label_own_mass") or {}
            gone = analysis.erasures_by_stage(analysis.soft_labels_by_stage(run), run.class_names)
            rows.append({"run": name, "seed": _seed(run), "method": run.config["method"],
                         "test_acc": s.get("test_acc"),
                         **{label: _number(s.get(key)) for key, label in ECE_LABELS.items()},
                         "final own-class mass": (list(own.values())[-1] if own else np.nan),
                         "erased classes": ", ".join(f"{r.class_name} → {r.taken_by_name} ({r.stage})"
                                                     for r in gone.itertuples())})
    return pd.DataFrame(rows).set_index("run")


def _number(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else np.nan


def _spread(values: Sequence[float], fmt: str) -> str:
    """``1.23`` for one value, ``1.23 ± 0.04 (3 seeds)`` for several (sample std)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return format(v[0], fmt)
    return f"{format(v.mean(), fmt)} ± {format(v.std(ddof=1), fmt)} ({len(v)} seeds)"


def _paired(st: pd.DataFrame, x: str, y: str, col: str) -> pd.Series:
    """Per seed, ``col`` of run ``x`` minus that of run ``y`` (seeds both have)."""
    a = st.loc[[x]].set_index("seed")[col]
    b = st.loc[[y]].set_index("seed")[col]
    both = a.index.intersection(b.index)
    return (a[both] - b[both]).sort_index()


def _verdict(diff: pd.Series, fmt: str, what: str) -> str:
    """How the paired differences over seeds stand behind ``what`` (a claim that the difference is > 0)."""
    if len(diff) == 0:
        return f"No seed has both runs, so nothing can be said about whether {what}."
    if len(diff) == 1:
        d = float(diff.iloc[0])
        return (f"With one seed the difference is {format(d, fmt)}; one seed cannot support or refute whether "
                f"{what} (seed noise is not measured): train more seeds.")
    held = int((diff > 0).sum())
    m, s = float(diff.mean()), float(diff.std(ddof=1))
    word = "holds" if held == len(diff) else ("fails" if held == 0 else "is mixed")
    return (f"Over {len(diff)} seeds it {word}: {what} in {held} of {len(diff)} seeds (difference "
            f"{format(m, fmt)} ± {format(s, fmt.lstrip('+'))}).")


def explain(runs: Mapping[str, Any], classes: Sequence[int], hl: str = "HL", ls: str = "LS",
            colam: str = "COLAM") -> str:
    """Markdown that states what these runs measured about structure, accuracy, calibration and erased classes,
    claim by claim, next to what the paper claims."""
    groups = _seeded(runs)
    names = next(iter(groups.values()))[0].class_names
    a, b, c = classes
    na, nb, nc = names[a], names[b], names[c]
    st = structure_table(runs, classes)
    res = results_summary(runs)
    ratio = "d(a,c) / d(a,b)"
    lines = [f"**Classes**: a = *{na}* and b = *{nb}* (similar), c = *{nc}* (different). The ratio "
             f"{ratio} is 1 when the three templates are equidistant and larger when a stays closer to b than "
             "to c.", ""]
    for key in (hl, ls, colam):
        if key in st.index:
            r = st.loc[[key]]
            lines.append(f"- **{key}**: d(a,b) = {_spread(r['d(a,b)'], '.3f')}, d(a,c) = {_spread(r['d(a,c)'], '.3f')}"
                         f", ratio {_spread(r[ratio], '.2f')}.")
    lines.append("")
    if ls in st.index:
        r_ls = float(st.loc[[ls], ratio].mean())
        if abs(r_ls - 1) <= EQUIDISTANT:
            lines.append(f"*Claim (Müller et al. 2019, restated by the paper): label smoothing makes templates "
                         f"equidistant.* Seen here: LS's ratio is {r_ls:.2f}, within {EQUIDISTANT:.1f} of 1.")
        else:
            lines.append(f"*Claim (Müller et al. 2019, restated by the paper): label smoothing makes templates "
                         f"equidistant.* **Not seen here**: LS's ratio is {r_ls:.2f}, far from 1 (equidistant "
                         f"would be within {EQUIDISTANT:.1f} of it).")
        if hl in st.index:
            r_hl = float(st.loc[[hl], ratio].mean())
            closer = "closer to" if abs(r_ls - 1) < abs(r_hl - 1) else "no closer to"
            lines.append(f"Against the baseline: HL's ratio is {r_hl:.2f}, so LS is {closer} equidistant than HL.")
        lines.append("")
    if ls in st.index and colam in st.index:
        lines.append("*Claim (the paper): COLAM keeps similar classes relatively closer than label smoothing "
                     "does* (COLAM's ratio above LS's). "
                     + _verdict(_paired(st, colam, ls, ratio), "+.2f", "COLAM's ratio is above LS's"))
        lines.append("")
    for key in res.index.unique():
        r = res.loc[[key]]
        if r["test_acc"].isna().all():
            continue
        own = r["final own-class mass"].dropna()
        eces = ", ".join(f"{label} " + (_spread(r[label].dropna(), ".4f") if r[label].notna().any() else "n/a")
                         for label in ECE_LABELS.values())
        lines.append(f"- **{key}**: test accuracy {_spread(r['test_acc'], '.4f')}, expected calibration error: {eces}"
                     + (f", final soft labels keep {_spread(own, '.2f')} of their mass on the class itself"
                        if len(own) else "") + ".")
    if hl in res.index and colam in res.index:
        acc = res.reset_index().set_index("run")[["seed", "test_acc"]]
        lines += ["", "*Claim (the paper): COLAM is more accurate than hard labels* (on CIFAR and ImageNet, "
                      "160-epoch runs). " + _verdict(_paired(acc, colam, hl, "test_acc") * 100, "+.2f",
                                                     "COLAM's test accuracy (in points) is above HL's")]
    if colam in res.index:
        gone = [(int(s), e) for s, e in res.loc[[colam], ["seed", "erased classes"]].itertuples(index=False) if e]
        n = len(res.loc[[colam]])
        lines.append("")
        if gone:
            lines.append(f"**Erased classes.** In {len(gone)} of {n} COLAM runs an update gave a class a soft label "
                         "whose largest entry is another class, so the next stage trained that whole class toward "
                         "the other one: " + "; ".join(f"seed {s}: {e}" for s, e in gone) + ". At this small scale "
                         "COLAM can erase classes (docs/RESULTS.md measures when, and `--peer-filter correct` "
                         "prevents it).")
        else:
            lines.append(f"**Erased classes.** None in these {n} COLAM run(s): every learned label kept its largest "
                         "entry on its own class. At small scale COLAM can erase classes (docs/RESULTS.md measures "
                         "when); the soft-label explorer marks any it finds.")
    return "\n".join(lines)


def compactness(adt: pd.DataFrame, adc: pd.DataFrame) -> dict[str, float]:
    """Means of the paper's Fig. 3 matrices: distance of samples to their own class's template / centroid
    (the diagonal) and to the other classes' (off the diagonal)."""
    out = {}
    for key, d in (("ADT", adt), ("ADC", adc)):
        m = d.to_numpy(dtype=float)
        off = ~np.eye(len(m), dtype=bool)
        out[f"{key} own"], out[f"{key} other"] = float(np.diag(m).mean()), float(m[off].mean())
    return out


def describe_structure(planes_runs: Mapping[str, Any], classes: Sequence[int]) -> str:
    """One sentence per run on how far apart the three templates are (the ratio of ``structure_table``), and
    the plain statement that one seed cannot rank methods: for notebooks that show one seed's template planes."""
    st = structure_table(planes_runs, classes)
    names = next(iter(_seeded(planes_runs).values()))[0].class_names
    a, b, c = (names[k] for k in classes)
    parts = [f"{k} {_spread(st.loc[[k], 'd(a,c) / d(a,b)'], '.2f')}" for k in st.index.unique()]
    n = st.groupby(level=0).size().min()
    caveat = (" With one seed per method these numbers describe these runs only: one seed cannot tell a difference "
              "between methods from seed noise (notebook 03 trains several)." if n == 1 else "")
    return (f"Template distance ratio d({a},{c}) / d({a},{b}) (1: the three templates equidistant; larger: {a} "
            f"closer to {b} than to {c}): " + ", ".join(parts) + "." + caveat)


def describe_compactness(measured: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown, one line per run: how far samples sit from their own template and centroid vs the others'."""
    lines = []
    for name, m in measured.items():
        lines.append(f"- **{name}**: samples sit {m['ADT own']:.3f} from their own class's template and "
                     f"{m['ADT other']:.3f} from the others' (ADT); {m['ADC own']:.3f} from their own centroid and "
                     f"{m['ADC other']:.3f} from the others' (ADC).")
    best = max(measured, key=lambda k: measured[k]["ADC other"] - measured[k]["ADC own"]) if measured else None
    if best is not None and len(measured) > 1:
        gap = measured[best]["ADC other"] - measured[best]["ADC own"]
        lines.append(f"\nThe widest gap between own and other centroids (the most compact, best separated "
                     f"clusters, as the paper's Fig. 3 reads it) is {best}'s: {gap:.3f}.")
    return "\n".join(lines)
