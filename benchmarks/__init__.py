"""Benchmarks: tools run from a source checkout (the repository root), not part of the installed packages.

- training.py (with harness.py, report.py): our Trainer against a hand-written loop and the machine, docs/BENCHMARKS.md;
  run `python -m benchmarks.training` or `make bench` (`python -m colam_core.bench` launches it too).
- widgets.py: the Python-side latency of the workbench widgets; `python -m benchmarks.widgets` or `make bench-widgets`.
"""
