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
paper's tables; built on ``analysis.results_table``). The last two show calibration both ways next to
accuracy: ``test_ece`` (ECE of softmax(z / T), T the method's output temperature) and ``test_ece_T1`` (ECE of
softmax(z)); ``labelled(table)`` names those columns ``ECE softmax(z/T)`` and ``ECE softmax(z)``.

``expected_accuracy(run)`` reproduces the paper's Fig. 1b: for every soft-label
update ``K`` of a COLAM run, a fresh model is trained from scratch on the
frozen labels of stage ``K`` (method ``fixed``), as a sweep in
``<run>/expected/``. It is not re-exported by ``colam_core.analysis`` (analysis never trains).

**Campaigns** (the paper's grids on a cluster): a YAML spec (``spec.py``: base options, grid axes, dependencies)
is planned once into ``ROOT/sweep.json`` (``expand`` + ``write_plan``; ``colam sweep plan``), then run by any
number of identical workers or Slurm array tasks (``Campaign``: ``run_entry``, ``work``, ``status``, ``table``;
``submit.py``: submitit job arrays, resumed from ``last.pt`` after a requeue). ``Sweep.open(ROOT)`` reads a planned
sweep like any other; shipped specs are in ``specs/`` (``presets()``). Notebooks 02 and 05 are front ends to them
(``frontend.py``: ``notebook_sweep`` plans a spec or reopens its plan, ``train_entry`` trains one entry as
``colam sweep run ROOT --index I`` does, ``sweep_report`` prints the sweep's table or what is left to run).

Nothing here plots; everything returns pandas DataFrames. Training uses the
same ``Trainer`` as a single run (its events reach the ``listeners`` given to
``Sweep.run``).

| file | what it owns |
|---|---|
| `naming.py` | `check_name`, names derived from the options that differ, config coercion, `CORE_PARAMS`, `METRICS` |
| `sweep.py` | `Sweep`: validation, folder checks, run states, the run loop, `results` |
| `grids.py` | `interval_peers_grid`, `temperature_sweep`, `methods_seeds` |
| `tables.py` | `grid_table`, `temperature_table`, `methods_table`, `labelled` (the ECE columns' labels) |
| `expected.py` | `expected_accuracy` (Fig. 1b), a `Sweep` of method=fixed runs; `expected_configs`, `expected_table` |
| `spec.py` | YAML sweep specs: `load_spec`, `expand` (validated entries, stable names, dependencies), `write_plan` |
| `claims.py` | one `flock` claim per entry (held while it trains, freed when the process ends), failure records |
| `campaign.py` | `Campaign`: a planned sweep's states, `run_entry` (`--index`), `work` (`--worker`), tables |
| `submit.py` | submitit: Slurm job arrays (dependent entries after their parents) or local workers; `EntryTask` |
| `frontend.py` | what notebooks call: `notebook_sweep` / `prepare_sweep` (plan or reopen), `describe_entry`, `train_entry`, `sweep_results` (the table `colam sweep results` prints), `sweep_report` |
| `cli.py` | `colam sweep list / plan / run / submit / status / results` |
| `specs/` | the shipped specs: the paper's tables and figures, and small CPU ones (digits, Fashion-MNIST) |
"""
from .campaign import Campaign
from .expected import expected_accuracy
from .frontend import (describe_entry, entry_run, notebook_sweep, prepare_sweep, remaining_commands, sweep_results,
                       sweep_report, train_entry, train_sweep)
from .grids import interval_peers_grid, methods_seeds, temperature_sweep
from .naming import CORE_PARAMS, METRICS, check_name
from .spec import expand, load_spec, presets, write_plan
from .sweep import Sweep
from .tables import ECE_METRICS, grid_table, labelled, methods_table, temperature_table

__all__ = [
    "Sweep",
    "interval_peers_grid",
    "temperature_sweep",
    "methods_seeds",
    "grid_table",
    "temperature_table",
    "methods_table",
    "labelled",
    "ECE_METRICS",
    "expected_accuracy",
    "Campaign",
    "load_spec",
    "expand",
    "write_plan",
    "presets",
    "check_name",
    "CORE_PARAMS",
    "METRICS",
    "notebook_sweep",
    "prepare_sweep",
    "describe_entry",
    "train_entry",
    "train_sweep",
    "entry_run",
    "sweep_results",
    "sweep_report",
    "remaining_commands",
]
