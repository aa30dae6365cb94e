"""The package installs anywhere: a wheel built with `pip wheel --no-deps .` installs into a fresh venv (no editable
install, the tested versions from constraints.txt) and works from a folder outside the repository.

The fresh venv sees this environment's already-installed dependencies through a `.pth` line appended after its
own site-packages (torch and its CUDA libraries are several GB: a copy per test run would cost minutes), so pip
installs the wheel itself and checks the dependencies' versions against constraints.txt; the checkout and its
editable install stay invisible (a `.pth` file inside an appended folder is not executed)."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import colam_core
from colam_core.runs import RUN_FORMAT

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
_NOT_ANYWHERE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                       "test-artifacts", ".ipynb_checkpoints")


def _NOT_SOURCE(folder, names):
    """What the copy of the checkout leaves out; `runs/` (training output) only at the top, not colam_core/runs/."""
    return set(_NOT_ANYWHERE(folder, names)) | ({"runs"} & set(names) if Path(folder) == ROOT else set())


def _run(cmd, cwd, env, timeout=900):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_the_wheel_installs_into_a_fresh_venv_and_runs_outside_the_repo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", COLAM_PROGRESS="off")
    src = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info next to the sources
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", "."], src, env)
    (wheel,) = (tmp_path / "dist").glob("colam_workbench-*.whl")
    assert wheel.name.startswith(f"colam_workbench-{colam_core.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"colam_core/py.typed", "workbench/py.typed", "colam_core/notebooks/01_quickstart.ipynb"} <= set(names)
    assert any(n.startswith("colam_core/sweeps/specs/") and n.endswith(".yaml") for n in names)  # colam sweep list
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    try:
        _run([sys.executable, "-m", "venv", venv], tmp_path, env)
        py, colam = venv / "bin" / "python", venv / "bin" / "colam"
        import sysconfig
        site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                         env).strip())
        (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        _run([py, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", wheel], tmp_path, env,
             timeout=1800)
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        where = _run([py, "-c", "import colam_core, workbench; print(colam_core.__file__)"], outside, env)
        assert str(venv) in where and str(ROOT) not in where  # the installed copy, not the checkout
        assert _run([colam, "--version"], outside, env).split() == ["colam", colam_core.__version__,
                                                                   "(colam-workbench)"]
        _run([colam, "notebooks", "nb"], outside, env)
        assert sorted(p.name for p in (outside / "nb").glob("*.ipynb")) == sorted(
            p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
        out = _run([colam, "train", "--dataset", "digits", "--epochs", "1", "--stages", "1", "--out", "run",
                    "--quiet"], outside, env)
        assert "done: run" in out
        resolved = json.loads((outside / "run" / "config.json").read_text())
        assert resolved["format"] == RUN_FORMAT and resolved["versions"]["colam_workbench"] == colam_core.__version__
        assert resolved["git"] is None  # an installed wheel is not a checkout
        assert json.loads((outside / "run" / "summary.json").read_text())["test_acc"] > 0
    finally:
        shutil.rmtree(venv, ignore_errors=True)
