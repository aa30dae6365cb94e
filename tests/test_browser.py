"""End to end in a real front end: JupyterLab in Chromium runs a notebook that shows a StageStepper on digits,
a person clicks "Run next stage", and the live learning curves and the soft-label heatmap appear.

Needs Debian's chromium at /usr/bin/chromium (``make test`` installs it when run as root) and the PyPI
``playwright`` package; never ``playwright install``. The screenshot is kept as
``test-artifacts/browser_stage_stepper.png``.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = ROOT / "test-artifacts" / "browser_stage_stepper.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SERVER_START_S = 45   # bounds: server start + browser session + shutdown stay under 3 minutes
BROWSER_S = 110
CELLS = [
    "import os, workbench\nprint('mode:', workbench.display_mode(), 'JPY_SESSION_NAME' in os.environ)",
    "from colam_core import Config\nfrom workbench import StageStepper\n"
    "stepper = StageStepper(Config(dataset='digits', epochs=4, stages=2), out='runs/browser')\nstepper",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(CELLS)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free local port, no token, serving ``tmp_path/work``; always shut down."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; "
                    "`make test` does it when run as root)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package drives Chromium")
    work, state = tmp_path / "work", tmp_path / "jupyter"
    work.mkdir()
    settings = state / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = {k: v for k, v in os.environ.items() if k not in ("COLAM_WORKBENCH_MODE", "JPY_SESSION_NAME")}
    env.update(JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(state / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"))
    port = free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={work}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
        yield url, work
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_stage_stepper_in_jupyterlab(lab):
    from playwright.sync_api import expect, sync_playwright

    url, work = lab
    write_notebook(work / "stepper.ipynb")
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + BROWSER_S

    def left() -> float:
        """Milliseconds left of the browser session's budget (every wait shares it)."""
        return max(1.0, (deadline - time.monotonic()) * 1000)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=left())
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            page.set_default_timeout(30_000)
            page.goto(f"{url}/lab/tree/stepper.ipynb", timeout=left())
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=left())
            page.locator(".jp-Cell .jp-InputArea-editor").first.click()   # focus the notebook
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            # the kernel JupyterLab started is detected as interactive (JPY_SESSION_NAME is set for it)
            mode = page.locator(".jp-OutputArea-output", has_text="mode:")
            mode.wait_for(timeout=left())
            assert mode.inner_text().strip() == "mode: interactive True"

            button = page.get_by_role("button", name="Run next stage")
            button.wait_for(timeout=left())
            assert button.is_enabled()
            page.get_by_text("No soft labels yet").wait_for(timeout=left())   # before stage 1 ends ...
            assert page.locator(".heatmaplayer").count() == 0
            button.click()
            page.get_by_text("Next: stage 2 of 2").wait_for(timeout=left())

            page.wait_for_selector(".heatmaplayer g.hm image", timeout=left())   # ... and after it
            page.get_by_text("Soft labels learned at the end of stage 1").wait_for(timeout=left())
            # four curves (train/test loss and accuracy) with one marker per epoch of stage 1
            expect(page.locator(".scatterlayer .trace .points path")).to_have_count(8, timeout=left())
            assert button.is_enabled()
            page.screenshot(path=str(ARTIFACT))
        except Exception:
            page.screenshot(path=str(ARTIFACT.with_name("browser_failure.png")))
            raise
        finally:
            browser.close()
    assert (work / "runs" / "browser" / "soft_labels.npz").is_file()
