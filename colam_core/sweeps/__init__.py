"""Sweeps of runs, the paper's comparison tables, and the expected accuracy of soft labels (see ``sweep.py``)."""
from .sweep import (CORE_PARAMS, METRICS, Sweep, check_name, expected_accuracy, grid_table, interval_peers_grid,
                    methods_seeds, methods_table, temperature_sweep, temperature_table)

__all__ = ["Sweep", "interval_peers_grid", "temperature_sweep", "methods_seeds", "grid_table", "temperature_table",
           "methods_table", "expected_accuracy", "check_name", "CORE_PARAMS", "METRICS"]
