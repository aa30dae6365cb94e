# Two commands do all set-up on a fresh machine:
#   make demo   creates/reuses .venv, then runs the main job on the embedded default data (digits)
#   make test   creates/reuses .venv (and installs Chromium and Slurm for their tests), then runs the test suite
# The venv gets the versions tested here (constraints.txt); pyproject.toml itself states only lower bounds.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: demo lab test test-fast lint venv system-deps bench bench-widgets gpu-check clean

$(STAMP): pyproject.toml setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,tensorboard,mlflow]"
	@touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium drives the JupyterLab end-to-end test (never `playwright install`); Debian's Slurm and munge run
# the campaign tests' one-node cluster (tests/slurmcluster.py starts it in a temporary folder and stops it).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then $(APT_INSTALL) chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' (the browser test is skipped without it)"; fi; }
	@{ command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then $(APT_INSTALL) slurm-wlm munge >/dev/null; \
	  else echo "slurm-wlm or munge missing: run 'sudo apt-get install -y slurm-wlm munge' (the Slurm tests are" \
	    "skipped without them)"; fi; }

demo: $(STAMP)
	@mkdir -p runs
	$(PY) -m papermill notebooks/01_quickstart.ipynb runs/01_quickstart.ipynb --cwd . -k python3 --no-progress-bar
	$(PY) -m workbench.export runs/01_quickstart.ipynb
	@echo "done: open runs/01_quickstart.ipynb in JupyterLab, or runs/01_quickstart.html in a browser"

# JupyterLab in the repository root: a notebook created there works in the root, so its runs/ sit beside make demo's
# (as root, e.g. in a container, JupyterLab refuses to start without --allow-root)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

# the layers (import-linter contracts in pyproject.toml) and a small ruff rule set
lint: $(STAMP)
	$(VENV)/bin/ruff check colam_core workbench tests benchmarks
	$(VENV)/bin/lint-imports

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

test-fast: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow"

# the benchmarks are tools of the source checkout (benchmarks/), not part of the installed packages
bench: $(STAMP)
	$(PY) -m benchmarks.training

bench-widgets: $(STAMP)
	$(PY) -m benchmarks.widgets

# the CUDA path in one command (benchmarks/gpu_check.py): one JSON line; stops at step `cuda` without a GPU
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check

clean:
	rm -rf runs .pytest_cache build dist
