"""Project-level contracts: environment.yml agrees with pyproject.toml, layers stay clean, notebooks are clean."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch", "playwright-python": "playwright"}  # conda-forge name -> PyPI name


def _split(req: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict:
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_agrees_with_pyproject():
    import yaml
    py = _pyproject()["project"]
    extras = [r for reqs in py["optional-dependencies"].values() for r in reqs]
    pip_deps = dict(_split(r) for r in py["dependencies"] + extras)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = {}
    pip_section = None
    for d in env["dependencies"]:
        if isinstance(d, dict):
            pip_section = d["pip"]
            continue
        name, spec = _split(d)
        if name in ("python", "pip"):
            continue
        conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == pip_deps
    assert pip_section and any(p.strip().startswith("-e .") for p in pip_section)


def test_library_metadata_has_lower_bounds_and_make_installs_the_tested_pins():
    py = _pyproject()["project"]
    reqs = py["dependencies"] + [r for reqs in py["optional-dependencies"].values() for r in reqs]
    capped = [r for r in reqs if "<" in r or "==" in r]
    assert capped == [], "library metadata states what works (lower bounds); pins belong in constraints.txt"
    pins = dict(_split(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert pins["torch"] == "==2.14.1" and pins["torchvision"] == "==0.29.1"  # the releases on this machine
    assert {_split(r)[0] for r in reqs} <= set(pins)  # every dependency has its tested version
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


def test_one_version_source_license_typed_changelog():
    import colam_core
    meta = _pyproject()
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "colam_core.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", colam_core.__version__)
    assert f"## {colam_core.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    assert meta["project"]["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "colam_core" / "py.typed").is_file() and (ROOT / "workbench" / "py.typed").is_file()


def test_requires_python_matches_what_runs():
    meta = _pyproject()
    assert meta["project"]["requires-python"] == ">=3.11"  # the tests use tomllib (3.11); nothing runs on 3.10
    assert meta["tool"]["ruff"]["target-version"] == "py311"
    env = (ROOT / "environment.yml").read_text()
    assert "python>=3.11" in env


def test_colam_core_never_imports_ui_code():
    bad = re.compile(r"^\s*(import|from)\s+(workbench|ipywidgets|plotly|anywidget)\b", re.M)
    files = sorted((ROOT / "colam_core").rglob("*.py"))
    assert len(files) > 40  # every module of every package (training/, data/, models/, ...), not just the top
    hits = [str(p.relative_to(ROOT)) for p in files if bad.search(p.read_text())]
    assert hits == []


def test_importing_colam_core_loads_no_ui_module():
    import subprocess
    code = ("import sys, colam_core, colam_core.training, colam_core.analysis, colam_core.sweeps, colam_core.cli;"
            "bad=[m for m in ('plotly','ipywidgets','workbench','anywidget') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("nb", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and not c.get("execution_count"), f"{nb.name} has outputs"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
