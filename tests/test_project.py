"""Project-level contracts: environment.yml agrees with pyproject.toml, layers stay clean, notebooks are clean."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _split(req: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_yml_agrees_with_pyproject():
    import tomllib

    import yaml
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_deps = dict(_split(r) for r in py["dependencies"] + py["optional-dependencies"]["test"])
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


def test_torch_pins_admit_the_local_releases():
    import tomllib
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = dict(_split(r) for r in py["dependencies"])
    assert "2.14.1" in deps["torch"] and "0.29.1" in deps["torchvision"]


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
