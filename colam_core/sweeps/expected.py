"""Expected accuracy of a run's soft labels (paper Fig. 1b): a ``Sweep`` of method=fixed runs, one per stage."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..config import Config
from ..runs import Run, load_run, stage_key, stage_number
from .naming import _check_options, _tags
from .sweep import Sweep


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
    test_ece (ECE of softmax(z / T), T the run's), test_ece_T1 (ECE of softmax(z); NaN for runs written
    before it existed), best_test_acc, train_seconds (NaN until finished),
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

    configs = expected_configs(Config.from_dict(parent.config), parent_path, keys, epochs=epochs,
                               include_hard=include_hard, **overrides)
    sweep = Sweep(Path(out) if out is not None else parent_path / "expected", configs)
    res = sweep.run(progress=progress, max_runs=max_runs, listeners=listeners)
    return expected_table(parent, configs, res)


def expected_configs(base: Config, parent_path: str | Path, keys: Sequence[str], epochs: int | None = None,
                     include_hard: bool = False, **overrides) -> dict[str, Config]:
    """The runs of Fig. 1b for the run ``base`` trained in ``parent_path``: ``{"stage_K": Config}``, one
    method=fixed run per soft-label key (``"stage_K"``) on ``parent_path:stage_K`` (and ``"hard"``, the
    hard-label reference, first with ``include_hard``); tagged ``extra["sweep"]["stage"] = K`` (0 for hard)."""
    _check_options(overrides)
    common = dict(stages=None, epochs=base.epochs if epochs is None else epochs, name=None)
    configs: dict[str, Config] = {}
    if include_hard:
        configs["hard"] = base.replace(method="hl", fixed_targets=None, extra={"sweep": {"stage": 0}},
                                       **common).replace(**overrides)
    for k in keys:
        configs[k] = base.replace(method="fixed", fixed_targets=f"{parent_path}:{k}", T=base.T,
                                  extra={"sweep": {"stage": stage_number(k)}}, **common).replace(**overrides)
    return configs


def expected_table(parent: Run, configs: dict[str, Config], results: pd.DataFrame,
                   labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per expected-accuracy run (``configs`` as from ``expected_configs``, ``results`` from
    ``Sweep.results``), in order: stage, source, own_mass, the run's metrics, parent_test_acc, run_dir, finished.
    ``labels``: ``{config key: results name}`` where the sweep names the runs otherwise."""
    res = results.set_index("name")
    hist = parent.history
    soft = parent.all_soft_labels()
    rows = []
    for key, cfg in configs.items():
        r = res.loc[(labels or {}).get(key, key)]
        K = int(_tags(cfg)["stage"])
        if K == 0:
            source, own, parent_acc = "hard labels", 1.0, float("nan")
        else:
            k = stage_key(K)
            source = cfg.fixed_targets
            own = float(np.mean(np.diag(soft[k]))) if k in soft else float("nan")
            h = hist[hist["stage"] == K] if len(hist) else hist
            parent_acc = float(h["test_acc"].iloc[-1]) if len(h) else float("nan")
        rows.append({"stage": K, "source": source, "own_mass": own, "test_acc": r["test_acc"],
                     "test_ece": r["test_ece"], "test_ece_T1": r.get("test_ece_T1", float("nan")),
                     "best_test_acc": r["best_test_acc"],
                     "train_seconds": r["train_seconds"], "parent_test_acc": parent_acc,
                     "run_dir": r["run_dir"], "finished": bool(r["finished"])})
    return pd.DataFrame(rows, columns=["stage", "source", "own_mass", "test_acc", "test_ece", "test_ece_T1",
                                       "best_test_acc", "train_seconds", "parent_test_acc", "run_dir", "finished"])
